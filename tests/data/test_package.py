"""ldl_jax.data's package boundary: the modules that need no TensorFlow import without it."""

import pathlib
import subprocess
import sys


def test_tables_batches_feeds_and_the_model_boundary_import_without_tensorflow():
    modules = (
        "ldl_jax.data.tables, ldl_jax.data.batches, ldl_jax.data.feeds, ldl_jax.parallel, "
        "ldl_jax.inference, ldl_jax.inspect"
    )
    code = f"import sys, {modules}; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[2])
