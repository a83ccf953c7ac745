"""The trainer's command line (`python -m ldl_jax.main`) on the tiny test config, in a
subprocess, for the tests that drive it end to end."""

import os
import pathlib
import subprocess
import sys

from tests.helpers.tiny import compilation_cache_env

REPO = pathlib.Path(__file__).resolve().parents[2]
# The config module turns the compilation cache on, as the tests' process does (the config of
# these runs used to be tests/conftest.py's, imported with its cache settings): in every run,
# also those whose environment leaves JAX_COMPILATION_CACHE_DIR out.
TINY_CONFIG = """
from tests.helpers.tiny import make_data_config, use_compilation_cache
import pathlib

use_compilation_cache()

def get_config():
    return make_data_config(pathlib.Path({data!r}))
"""


def command(config_dir, data_dir, workdir, *flags) -> list[str]:
    """The trainer's command on the tiny config over `data_dir` (written to `config_dir`)."""
    config = pathlib.Path(config_dir) / "tiny_config.py"
    config.write_text(TINY_CONFIG.format(data=str(data_dir)))
    main = [sys.executable, "-m", "ldl_jax.main", f"--config={config}", f"--workdir={workdir}"]
    return main + list(flags)


def environment(compilation_cache: bool = True) -> dict[str, str]:
    """The test process's environment, TensorFlow's C++ logs off, JAX's compilation cache on."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if compilation_cache:
        env.update(compilation_cache_env())
    return env


def run(config_dir, data_dir, workdir, *flags, env=None, wrapper=()) -> subprocess.CompletedProcess:
    """Runs the trainer to its end, behind the `wrapper` command if given."""
    return subprocess.run(
        [*wrapper, *command(config_dir, data_dir, workdir, *flags)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or environment(),
        timeout=300,
    )


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]
