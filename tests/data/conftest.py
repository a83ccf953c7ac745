"""The fixture of the ldl_jax.data tests that read CSVs and images from disk."""

import pytest

from tests.helpers.rows import write_dataset


@pytest.fixture
def dataset(tmp_path):
    """Writes NUM_ROWS PNGs and returns (write_csv, image_dir, images).

    write_csv(columns=None, name="train.csv", **cell_overrides) writes a CSV with the
    valid columns, cells overridden as column=(row, value), and returns its path.
    """
    return write_dataset(tmp_path)
