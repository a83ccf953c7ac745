"""ldl_jax.data.tables: reading and validating the CSVs on tiny generated data sets."""

import numpy as np
import pytest

from ldl_jax.data import tables
from tests.helpers.rows import NUM_CLASSES, NUM_NEIGHBORS, NUM_ROWS, read_train, train_columns


def test_read_train_table_parses_a_valid_csv(dataset):
    write_csv, image_dir, _ = dataset
    table = read_train(write_csv(), image_dir)
    columns = train_columns()

    assert table.num_rows == NUM_ROWS
    assert table.paths[3] == str((image_dir / "faces/003.png").resolve())
    np.testing.assert_array_equal(table.labels, np.arange(NUM_ROWS) % NUM_CLASSES)
    assert table.labels.dtype == np.int32
    assert table.va.dtype == np.float32 and table.va.shape == (NUM_ROWS, 2)
    np.testing.assert_allclose(table.va[:, 0], np.array(columns["valence"], float), rtol=1e-6)
    expected_knn = (np.arange(NUM_ROWS)[:, None] + np.arange(1, NUM_NEIGHBORS + 1)) % NUM_ROWS
    np.testing.assert_array_equal(table.knn, expected_knn)
    assert table.knn.dtype == np.int32
    va = table.va.astype(np.float64)
    expected = np.exp(-np.abs(va[:, None] - va[expected_knn]).sum(-1) / 0.5)
    assert table.va_weights.dtype == np.float32
    np.testing.assert_allclose(table.va_weights, expected, rtol=1e-5)


def test_read_eval_table_parses_a_valid_csv(dataset):
    write_csv, image_dir, _ = dataset
    columns = {key: train_columns()[key] for key in tables.EVAL_COLUMNS}
    table = tables.read_eval_table(write_csv(columns), image_dir, num_classes=NUM_CLASSES)
    assert len(table.paths) == NUM_ROWS
    np.testing.assert_array_equal(table.labels, np.arange(NUM_ROWS) % NUM_CLASSES)


def _eval_columns_with_distributions():
    columns = {key: train_columns()[key] for key in tables.EVAL_COLUMNS}
    columns["distribution"] = ["0.5;0.25;0.25"] * NUM_ROWS
    columns["distribution"][3] = "0.333;0.333;0.333"  # rounded: rescaled to sum to 1
    return columns


def test_read_eval_table_reads_crowd_distributions(dataset):
    write_csv, image_dir, _ = dataset
    columns = _eval_columns_with_distributions()
    table = tables.read_eval_table(write_csv(columns), image_dir, num_classes=NUM_CLASSES)
    assert table.distributions.shape == (NUM_ROWS, NUM_CLASSES)
    np.testing.assert_allclose(table.distributions[0], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(table.distributions[3], [1 / 3] * 3)
    del columns["distribution"]
    without = tables.read_eval_table(write_csv(columns), image_dir, num_classes=NUM_CLASSES)
    assert without.distributions is None


BAD_DISTRIBUTIONS = {
    "too_few": ("0.5;0.5", "has 2 values, expected 3 (one per class)"),
    "not_a_number": ("0.5;x;0.5", "is not 3 ';'-joined numbers"),
    "comma_joined": ("0.5,0.25,0.25", "has 1 values, expected 3"),
    "negative": ("1.2;-0.2;0", "has a negative value"),
    "sum_not_one": ("0.5;0.5;0.5", "sums to 1.5, not 1"),
}


@pytest.mark.parametrize("value,problem", BAD_DISTRIBUTIONS.values(), ids=BAD_DISTRIBUTIONS.keys())
def test_bad_distribution_names_file_row_and_column(dataset, value, problem):
    write_csv, image_dir, _ = dataset
    csv_path = write_csv(_eval_columns_with_distributions(), "test.csv", distribution=(7, value))
    with pytest.raises(tables.DataError) as error:
        tables.read_eval_table(csv_path, image_dir, num_classes=NUM_CLASSES)
    message = str(error.value)
    assert f"{csv_path}, line 9 (row index 7), column 'distribution'" in message
    assert problem in message


BAD_CELLS = {
    "expression_not_int": ("expression", 4, "happy", "not an integer"),
    "expression_float": ("expression", 4, "1.5", "not an integer"),
    "expression_too_big": ("expression", 4, str(NUM_CLASSES), "outside [0, 3)"),
    "expression_negative": ("expression", 4, "-1", "outside [0, 3)"),
    "valence_not_number": ("valence", 5, "high", "not a finite number"),
    "arousal_empty": ("arousal", 5, "", "not a finite number"),
    "arousal_inf": ("arousal", 5, "inf", "not a finite number"),
    "valence_nan": ("valence", 5, "nan", "not a finite number"),
    "knn_unparsable": ("knn", 6, "1;x;3", "not a ';'-joined integer list"),
    "knn_comma": ("knn", 6, "1,2,3", "not a ';'-joined integer list"),
    "knn_uneven": ("knn", 6, "1;2;3;4", "lists 4 neighbours but row 0 lists 3"),
    "knn_out_of_range": ("knn", 6, f"1;{NUM_ROWS};3", f"not a row index in [0, {NUM_ROWS})"),
    "knn_negative": ("knn", 6, "1;-2;3", f"not a row index in [0, {NUM_ROWS})"),
    "knn_self": ("knn", 6, "1;6;3", "lists the row itself (entry 1)"),
}


@pytest.mark.parametrize("column,row,value,problem", BAD_CELLS.values(), ids=BAD_CELLS.keys())
def test_bad_cell_names_file_row_and_column(dataset, column, row, value, problem):
    write_csv, image_dir, _ = dataset
    csv_path = write_csv(**{column: (row, value)})
    with pytest.raises(tables.DataError) as error:
        read_train(csv_path, image_dir)
    message = str(error.value)
    assert str(csv_path) in message
    assert f"line {row + 2} (row index {row})" in message
    assert f"column {column!r}" in message
    assert problem in message


def test_fewer_neighbours_than_num_neighbors(dataset):
    write_csv, image_dir, _ = dataset
    columns = train_columns()
    columns["knn"] = [row.split(";")[0] for row in columns["knn"]]
    with pytest.raises(tables.DataError, match=r"line 2 \(row index 0\), column 'knn'.*fewer"):
        read_train(write_csv(columns), image_dir)


def test_missing_csv(tmp_path):
    with pytest.raises(tables.DataError, match=r"nowhere\.csv: file not found"):
        tables.read_eval_table(tmp_path / "nowhere.csv", tmp_path, num_classes=NUM_CLASSES)


@pytest.mark.parametrize("missing", ["knn", "valence", "subDirectory_filePath"])
def test_missing_train_column(dataset, missing):
    write_csv, image_dir, _ = dataset
    columns = {key: value for key, value in train_columns().items() if key != missing}
    with pytest.raises(tables.DataError, match=rf"train\.csv, line 1 \(header\).*'{missing}'"):
        read_train(write_csv(columns), image_dir)


def test_missing_eval_column(dataset):
    write_csv, image_dir, _ = dataset
    columns = {"subDirectory_filePath": train_columns()["subDirectory_filePath"]}
    with pytest.raises(tables.DataError, match=r"test\.csv, line 1 \(header\).*'expression'"):
        tables.read_eval_table(write_csv(columns, "test.csv"), image_dir, num_classes=NUM_CLASSES)


def test_empty_csv(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(",".join(tables.TRAIN_COLUMNS) + "\n")
    with pytest.raises(tables.DataError, match=r"empty\.csv: the file is empty"):
        read_train(tmp_path / "empty.csv", tmp_path)
    with pytest.raises(tables.DataError, match=r"header\.csv: no data rows"):
        read_train(tmp_path / "header.csv", tmp_path)


def test_missing_images_are_counted_and_named(dataset):
    write_csv, image_dir, _ = dataset
    for row in (2, 9):
        (image_dir / f"faces/{row:03d}.png").unlink()
    with pytest.raises(tables.DataError) as error:
        read_train(write_csv(), image_dir)
    message = str(error.value)
    assert "train.csv, column 'subDirectory_filePath': 2 of 12 image files are missing" in message
    assert "line 4 (row index 2) 'faces/002.png'" in message
    assert "line 11 (row index 9) 'faces/009.png'" in message
