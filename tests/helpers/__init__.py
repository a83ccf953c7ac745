"""What the tests share besides fixtures (those are in tests/conftest.py and
tests/data/conftest.py): the tiny config and data set, workdir helpers, image checks, fake
data releases, the trainer's command line in a subprocess and the parallelism worker.

Random batches, tables and memory banks in the train step's format are
`tools/random_inputs.py`'s, which `tools/benchmark.py` runs on.
"""
