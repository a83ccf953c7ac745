"""The data of a run: validated tables, decoded images, augmented and evaluation batches.

One job per module:

- `tables`: reading and validating the CSVs (no TensorFlow);
- `images`: decoding every image once into one uint8 array, cached for large sets (TensorFlow);
- `augment`: the training transform in stateless TF ops;
- `batches`: epochs, per-process slices, padded evaluation batches, prefetching (no TensorFlow);
- `streams`: the infinite augmented training streams of LDLVA and of the VA regressor;
- `pipeline`: the entry point the trainers, the tools and the benchmark call,
  `open_train_data(config)` -> `TrainData` (steps per epoch, class weights, the training
  iterator from any step, the evaluation sets) and `read_eval_sets(config)`, each reading the
  rows' format its caller names (`LDLVA_ROWS` or `VA_ROWS`).

The entry point's names are importable from this package (`from ldl_jax import data;
data.open_train_data(config)`); they load `pipeline`, and with it TensorFlow, on first use, so
that `ldl_jax.data.tables` and `ldl_jax.data.batches` stay importable without TensorFlow.
"""

from ldl_jax.data.tables import LDLVA_ROWS, VA_ROWS, DataError

_PIPELINE_NAMES = (
    "EvalSet",
    "TrainData",
    "open_train_data",
    "prepare_synthetic_data",
    "read_eval_sets",
    "resolve",
)

__all__ = ["LDLVA_ROWS", "VA_ROWS", "DataError", *_PIPELINE_NAMES]


def __getattr__(name):
    if name in _PIPELINE_NAMES:
        from ldl_jax.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
