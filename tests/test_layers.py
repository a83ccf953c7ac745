"""The package's import layers (pyproject.toml's [tool.importlinter] contracts): no circle and
no import from a lower layer up to a higher one."""

import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def lint_imports(root: pathlib.Path) -> subprocess.CompletedProcess:
    """import-linter over the package and the contracts under `root`, in a fresh process (its
    module graph is built from the files there)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": ""},
    )


def test_the_package_keeps_its_layers():
    linted = lint_imports(REPO)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "2 kept, 0 broken" in linted.stdout


def test_an_import_up_the_layers_is_refused(tmp_path):
    shutil.copytree(REPO / "ldl_jax", tmp_path / "ldl_jax", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    ldl = tmp_path / "ldl_jax" / "ldl.py"
    ldl.write_text(ldl.read_text() + "\n\ndef _up():\n    from ldl_jax import train  # noqa\n")
    linted = lint_imports(tmp_path)
    assert linted.returncode == 1
    assert "ldl_jax.ldl -> ldl_jax.train" in linted.stdout
