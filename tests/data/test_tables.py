"""ldl_jax.data (tables, images, augment, batches, streams) on tiny generated data sets, and
the device transform (`device_augment`) against the host's."""

import concurrent.futures
import itertools
import pathlib
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from ldl_jax.data import augment as augment_lib
from ldl_jax.data import batches as batch_lib
from ldl_jax.data import device_augment, streams, tables
from ldl_jax.data import images as image_lib
from tests.helpers.image_checks import erased_box, exact_transform

NUM_ROWS = 12
SIZE = 16
NUM_CLASSES = 3
NUM_NEIGHBORS = 2
STORED_NEIGHBORS = 3
PAD = 2


def _images(num_rows=NUM_ROWS, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_rows, size, size, 3), np.uint8)


def _columns(num_rows=NUM_ROWS):
    """Valid training columns; row i lists the next STORED_NEIGHBORS rows cyclically."""
    va = np.random.default_rng(1).uniform(-1, 1, (num_rows, 2))
    knn = [
        ";".join(str((row + step) % num_rows) for step in range(1, STORED_NEIGHBORS + 1))
        for row in range(num_rows)
    ]
    return {
        "subDirectory_filePath": [f"faces/{row:03d}.png" for row in range(num_rows)],
        "expression": [str(row % NUM_CLASSES) for row in range(num_rows)],
        "valence": [str(float(value)) for value in va[:, 0]],
        "arousal": [str(float(value)) for value in va[:, 1]],
        "knn": knn,
    }


@pytest.fixture
def dataset(tmp_path):
    """Writes NUM_ROWS PNGs and returns (write_csv, image_dir, images).

    write_csv(columns=None, name="train.csv", **cell_overrides) writes a CSV with the
    valid columns, cells overridden as column=(row, value), and returns its path.
    """
    images = _images()
    image_dir = tmp_path / "images"
    (image_dir / "faces").mkdir(parents=True)
    for row, image in enumerate(images):
        Image.fromarray(image).save(image_dir / f"faces/{row:03d}.png")

    def write_csv(columns=None, name="train.csv", **overrides):
        columns = {key: list(value) for key, value in (columns or _columns()).items()}
        for column, (row, value) in overrides.items():
            columns[column][row] = value
        path = tmp_path / name
        pd.DataFrame(columns).to_csv(path, index=False)
        return path

    return write_csv, image_dir, images


def _read_train(csv_path, image_dir):
    return tables.read_train_table(
        csv_path, image_dir, num_classes=NUM_CLASSES, num_neighbors=NUM_NEIGHBORS
    )


def _train_table(num_rows=NUM_ROWS):
    """A TrainTable built in memory, for the batch tests."""
    columns = _columns(num_rows)
    va = np.stack([np.array(columns[key], float) for key in ("valence", "arousal")], 1)
    knn = np.array([row.split(";") for row in columns["knn"]], np.int32)[:, :NUM_NEIGHBORS]
    distance = np.abs(va[:, None] - va[knn]).sum(-1)
    return tables.TrainTable(
        paths=np.array(columns["subDirectory_filePath"]),
        labels=np.array(columns["expression"], np.int32),
        va=va.astype(np.float32),
        knn=knn,
        va_weights=np.exp(-distance / 0.5).astype(np.float32),
    )


def _train(table, images, **kwargs):
    kwargs = {"batch_size": 4, "seed": 3, "pad_size": PAD, **kwargs}
    return streams.train_batches(table, images, **kwargs)


def _take(iterator, count):
    return list(itertools.islice(iterator, count))


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------------------- tables


def test_read_train_table_parses_a_valid_csv(dataset):
    write_csv, image_dir, _ = dataset
    table = _read_train(write_csv(), image_dir)
    columns = _columns()

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
    columns = {key: _columns()[key] for key in tables.EVAL_COLUMNS}
    table = tables.read_eval_table(write_csv(columns), image_dir, num_classes=NUM_CLASSES)
    assert len(table.paths) == NUM_ROWS
    np.testing.assert_array_equal(table.labels, np.arange(NUM_ROWS) % NUM_CLASSES)


def _eval_columns_with_distributions():
    columns = {key: _columns()[key] for key in tables.EVAL_COLUMNS}
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
        _read_train(csv_path, image_dir)
    message = str(error.value)
    assert str(csv_path) in message
    assert f"line {row + 2} (row index {row})" in message
    assert f"column {column!r}" in message
    assert problem in message


def test_fewer_neighbours_than_num_neighbors(dataset):
    write_csv, image_dir, _ = dataset
    columns = _columns()
    columns["knn"] = [row.split(";")[0] for row in columns["knn"]]
    with pytest.raises(tables.DataError, match=r"line 2 \(row index 0\), column 'knn'.*fewer"):
        _read_train(write_csv(columns), image_dir)


def test_missing_csv(tmp_path):
    with pytest.raises(tables.DataError, match=r"nowhere\.csv: file not found"):
        tables.read_eval_table(tmp_path / "nowhere.csv", tmp_path, num_classes=NUM_CLASSES)


@pytest.mark.parametrize("missing", ["knn", "valence", "subDirectory_filePath"])
def test_missing_train_column(dataset, missing):
    write_csv, image_dir, _ = dataset
    columns = {key: value for key, value in _columns().items() if key != missing}
    with pytest.raises(tables.DataError, match=rf"train\.csv, line 1 \(header\).*'{missing}'"):
        _read_train(write_csv(columns), image_dir)


def test_missing_eval_column(dataset):
    write_csv, image_dir, _ = dataset
    columns = {"subDirectory_filePath": _columns()["subDirectory_filePath"]}
    with pytest.raises(tables.DataError, match=r"test\.csv, line 1 \(header\).*'expression'"):
        tables.read_eval_table(write_csv(columns, "test.csv"), image_dir, num_classes=NUM_CLASSES)


def test_empty_csv(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(",".join(tables.TRAIN_COLUMNS) + "\n")
    with pytest.raises(tables.DataError, match=r"empty\.csv: the file is empty"):
        _read_train(tmp_path / "empty.csv", tmp_path)
    with pytest.raises(tables.DataError, match=r"header\.csv: no data rows"):
        _read_train(tmp_path / "header.csv", tmp_path)


def test_missing_images_are_counted_and_named(dataset):
    write_csv, image_dir, _ = dataset
    for row in (2, 9):
        (image_dir / f"faces/{row:03d}.png").unlink()
    with pytest.raises(tables.DataError) as error:
        _read_train(write_csv(), image_dir)
    message = str(error.value)
    assert "train.csv, column 'subDirectory_filePath': 2 of 12 image files are missing" in message
    assert "line 4 (row index 2) 'faces/002.png'" in message
    assert "line 11 (row index 9) 'faces/009.png'" in message


# ----------------------------------------------------------------------------- decoding


def _count_decodes(monkeypatch):
    """Records every path `load_images` decodes, one entry per decode."""
    decoded = []
    original = image_lib._decode_resize

    def record(path):
        decoded.append(path.decode())
        return np.int32(0)

    def counting(path, image_size):
        recorded = tf.numpy_function(record, [path], tf.int32, stateful=True)
        with tf.control_dependencies([recorded]):
            return tf.identity(original(path, image_size))

    monkeypatch.setattr(image_lib, "_decode_resize", counting)
    return decoded


def test_load_images_decodes_each_image_once(dataset, monkeypatch):
    write_csv, image_dir, images = dataset
    table = _read_train(write_csv(), image_dir)
    decoded = _count_decodes(monkeypatch)
    loaded = image_lib.load_images(table.paths, SIZE)
    assert sorted(decoded) == sorted(table.paths)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, images)  # PNG is lossless; 16 -> 16 is exact


def test_load_images_resizes_and_expands_grayscale(tmp_path):
    Image.new("L", (20, 12), color=77).save(tmp_path / "gray.png")
    loaded = image_lib.load_images([tmp_path / "gray.png"], 8)
    assert loaded.shape == (1, 8, 8, 3)
    assert (loaded == 77).all()


def test_memmap_cache_matches_memory_and_is_reused(dataset, monkeypatch, tmp_path):
    write_csv, image_dir, images = dataset
    table = _read_train(write_csv(), image_dir)
    cache = tmp_path / "cache" / "train.npy"  # the directory is created
    in_memory = image_lib.load_images(table.paths, SIZE)
    cached = image_lib.load_images(table.paths, SIZE, cache_path=cache, max_in_memory_bytes=0)
    assert isinstance(cached, np.memmap)
    np.testing.assert_array_equal(cached, in_memory)
    names = sorted(path.name for path in cache.parent.iterdir())
    assert names == ["train.npy", "train.npy.json", "train.npy.lock"]

    decoded = _count_decodes(monkeypatch)
    again = image_lib.load_images(table.paths, SIZE, cache_path=cache, max_in_memory_bytes=0)
    assert decoded == []
    np.testing.assert_array_equal(again, images)

    fewer = image_lib.load_images(table.paths[:5], SIZE, cache_path=cache, max_in_memory_bytes=0)
    assert len(decoded) == 5
    np.testing.assert_array_equal(fewer, images[:5])


def test_loaders_of_one_cache_at_once_decode_it_once(dataset, monkeypatch, tmp_path):
    """As the processes of a multi-process run do: the first decodes, the other waits and
    opens its file."""
    write_csv, image_dir, images = dataset
    table = _read_train(write_csv(), image_dir)
    decoded = _count_decodes(monkeypatch)
    together = threading.Barrier(2)

    def load(_):
        together.wait()
        return image_lib.load_images(
            table.paths, SIZE, cache_path=tmp_path / "train.npy", max_in_memory_bytes=0
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        loaded = list(pool.map(load, range(2)))
    assert sorted(decoded) == sorted(table.paths)
    for array in loaded:
        np.testing.assert_array_equal(array, images)


def test_corrupt_image_names_file_and_row(dataset):
    write_csv, image_dir, _ = dataset
    table = _read_train(write_csv(), image_dir)
    (image_dir / "faces/007.png").write_bytes(b"this is not an image")
    with pytest.raises(tables.DataError, match=r"007\.png \(row index 7\): cannot read or decode"):
        image_lib.load_images(table.paths, SIZE)


def test_corrupt_image_leaves_no_cache_files(dataset, tmp_path):
    """A failed memmap build removes its temporary file, the lock and the directory it made."""
    write_csv, image_dir, _ = dataset
    table = _read_train(write_csv(), image_dir)
    (image_dir / "faces/007.png").write_bytes(b"this is not an image")
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    cache = workdir / "cache" / "train_images.npy"
    with pytest.raises(tables.DataError, match=r"007\.png \(row index 7\)"):
        image_lib.load_images(table.paths, SIZE, cache_path=cache, max_in_memory_bytes=0)
    assert list(workdir.iterdir()) == []


# ----------------------------------------------------------------------------- augment


def _augment(images, seed, *, pad_size=PAD, random_erasing=True):
    seed = tf.constant(seed, tf.int64)
    return augment_lib.augment(
        images, seed, pad_size=pad_size, random_erasing=random_erasing
    ).numpy()


@pytest.mark.parametrize("random_erasing", [True, False])
def test_augment_is_the_same_eagerly_and_inside_tf_data(random_erasing):
    images = _images(8)
    seed = tf.constant([5, 6], tf.int64)
    eager = _augment(images, [5, 6], random_erasing=random_erasing)
    dataset = tf.data.Dataset.from_tensors(images).map(
        lambda batch: augment_lib.augment(batch, seed, pad_size=PAD, random_erasing=random_erasing)
    )
    np.testing.assert_array_equal(next(dataset.as_numpy_iterator()), eager)
    assert eager.dtype == np.uint8 and eager.shape == images.shape


def test_augment_is_deterministic_per_seed():
    images = _images(8)
    np.testing.assert_array_equal(_augment(images, [1, 2]), _augment(images, [1, 2]))
    assert not np.array_equal(_augment(images, [1, 2]), _augment(images, [1, 3]))


def test_augment_without_padding_or_erasing_only_flips():
    images = _images(32)
    out = _augment(images, [0, 1], pad_size=0, random_erasing=False)
    flips = [exact_transform(out[i], images[i], 0) for i in range(len(images))]
    assert None not in flips
    assert {params[0] for params in flips} == {False, True}


def test_augment_flip_and_crop_shift_content():
    images = _images(64)
    out = _augment(images, [0, 2], random_erasing=False)
    params = [exact_transform(out[i], images[i], PAD) for i in range(len(images))]
    assert None not in params
    assert {flip for flip, _, _ in params} == {False, True}
    assert {top for _, top, _ in params} == set(range(2 * PAD + 1))
    assert {left for _, _, left in params} == set(range(2 * PAD + 1))


def test_random_erasing_changes_one_rectangle_of_plausible_area():
    images = _images(200, size=32)
    out = _augment(images, [9, 9])
    boxes = [erased_box(out[i], images[i], PAD) for i in range(len(images))]
    erased = [box for box in boxes if box is not None]
    assert 0.35 < len(erased) / len(images) < 0.65
    for _, _, height, width in erased:
        assert 0.015 <= height * width / 32**2 <= 0.33
        assert 0.25 <= height / width <= 4.0
    # the same seed without erasing gives the same flips and crops
    plain = _augment(images, [9, 9], random_erasing=False)
    unchanged = [i for i, box in enumerate(boxes) if box is None]
    np.testing.assert_array_equal(out[unchanged], plain[unchanged])


# ------------------------------------------------------------- the device transform vs the host's

# Non-square, so that a swapped axis shows.
HEIGHT, WIDTH = 12, 20
# Draws per distribution, and the tolerance: means agree within this many standard errors of
# their difference (a false alarm at 5 is a one-in-a-million event per statistic).
NUM_DRAWS = 20_000
TOLERANCE_SE = 5.0
NUM_NOISE_IMAGES = 2_000  # of 720 noise values each


@pytest.mark.parametrize("random_erasing", [True, False])
def test_device_transform_gives_the_host_pixels_for_the_same_params(random_erasing):
    images = np.random.default_rng(0).integers(0, 256, (64, HEIGHT, WIDTH, 3), np.uint8)
    params = augment_lib.draw_params(
        tf.constant([4, 2], tf.int64), 64, HEIGHT, WIDTH, PAD, random_erasing
    )
    host = augment_lib.transform(tf.constant(images), params, PAD).numpy()
    device = jax.jit(device_augment.transform, static_argnums=2)(
        images, {name: jnp.asarray(value.numpy()) for name, value in params.items()}, PAD
    )
    np.testing.assert_array_equal(np.asarray(device), host)
    assert 0 < params["flip"].numpy().sum() < 64  # both branches ran
    if random_erasing:
        assert 0 < params["erase"].numpy().sum() < 64


def _draw_statistics(params) -> dict[str, np.ndarray]:
    """Samples whose means characterise the draws: rates, offset histogram, erased boxes, noise."""
    erased = params["erase"]
    height, width = params["erase_h"][erased], params["erase_w"][erased]
    offsets = {
        f"offset[{axis}]=={value}": params["offset"][:, axis] == value
        for axis in (0, 1)
        for value in range(2 * PAD + 1)
    }
    noise = params["noise"][:NUM_NOISE_IMAGES].reshape(-1)
    return {
        "flip": params["flip"],
        **offsets,
        "erase": erased,
        "erase_area": height * width / (HEIGHT * WIDTH),
        "erase_aspect": height / width,
        "erase_top": params["top"][erased],
        "erase_left": params["left"][erased],
        "noise": noise,
        **{
            f"noise in [{low}, {low + 63}]": (noise >= low) & (noise <= low + 63)
            for low in (0, 64, 128, 192)
        },
    }


def test_device_draws_follow_the_host_distributions():
    host = augment_lib.draw_params(
        tf.constant([0, 1], tf.int64), NUM_DRAWS, HEIGHT, WIDTH, PAD, True
    )

    @jax.jit
    def draw_on_device():
        keys = device_augment.image_keys(device_augment.step_keys(0, 1)[0], jnp.arange(NUM_DRAWS))
        return device_augment.draw_params(keys, HEIGHT, WIDTH, PAD, True)

    device = draw_on_device()
    host = _draw_statistics({name: value.numpy() for name, value in host.items()})
    device = _draw_statistics(jax.device_get(device))
    for name, samples in host.items():
        other = device[name].astype(np.float64)
        samples = samples.astype(np.float64)
        difference = abs(samples.mean() - other.mean())
        standard_error = np.sqrt(samples.var() / samples.size + other.var() / other.size)
        assert difference <= TOLERANCE_SE * standard_error, (
            f"{name}: host mean {samples.mean():.4f}, device mean {other.mean():.4f}"
        )


# ----------------------------------------------------------------------------- batches


def test_train_batches_fields_shapes_and_consistency():
    table, images = _train_table(), _images()
    batches = _take(_train(table, images), 6)
    batch = batches[0]
    assert {key: (value.shape, value.dtype) for key, value in batch.items()} == {
        "image": ((4, SIZE, SIZE, 3), np.uint8),
        "neighbor_image": ((4, NUM_NEIGHBORS, SIZE, SIZE, 3), np.uint8),
        "label": ((4,), np.int32),
        "va_weight": ((4, NUM_NEIGHBORS), np.float32),
        "index": ((4,), np.int32),
        "neighbor_index": ((4, NUM_NEIGHBORS), np.int32),
        "neighbor_label": ((4, NUM_NEIGHBORS), np.int32),
    }
    num_erased = 0
    for batch in batches:
        index = batch["index"]
        np.testing.assert_array_equal(batch["label"], table.labels[index])
        np.testing.assert_array_equal(batch["neighbor_index"], table.knn[index])
        np.testing.assert_array_equal(batch["neighbor_label"], table.labels[table.knn[index]])
        np.testing.assert_array_equal(batch["va_weight"], table.va_weights[index])
        for row, neighbors in zip(index, batch["neighbor_index"], strict=True):
            for k, neighbor in enumerate(neighbors):
                out = batch["neighbor_image"][list(index).index(row), k]
                assert exact_transform(out, images[neighbor], PAD) is not None
        for out, row in zip(batch["image"], index, strict=True):
            num_erased += erased_box(out, images[row], PAD) is not None
    assert 0 < num_erased < 6 * 4


def test_train_batches_without_neighbour_images_keep_every_other_field():
    """The memory bank's stream: no `neighbor_image`, and the same central augmentation."""
    table, images = _train_table(), _images()
    with_neighbors = _take(_train(table, images, start_step=2), 2)
    without = _take(_train(table, images, start_step=2, neighbor_images=False), 2)
    for full, lean in zip(with_neighbors, without, strict=True):
        assert set(full) - set(lean) == {"neighbor_image"}
        _assert_batches_equal([lean], [{key: full[key] for key in lean}])


def test_train_batches_visit_every_row_once_per_epoch():
    table, images = _train_table(), _images()
    batches = _take(_train(table, images), 6)  # 3 steps per epoch
    epochs = [np.concatenate([b["index"] for b in batches[i : i + 3]]) for i in (0, 3)]
    for order in epochs:
        assert sorted(order) == list(range(NUM_ROWS))
    assert not np.array_equal(epochs[0], epochs[1])


def test_train_batches_drop_the_partial_batch():
    batches = _take(_train(_train_table(11), _images(11)), 2)  # 2 steps per epoch
    order = np.concatenate([b["index"] for b in batches])
    assert len(set(order)) == 8 and order.max() < 11


def test_train_batches_resume_gives_the_same_batches():
    table, images = _train_table(), _images()
    uninterrupted = _take(_train(table, images), 7)
    resumed = _take(_train(table, images, start_step=4), 3)  # mid epoch 1
    _assert_batches_equal(resumed, uninterrupted[4:])


def test_process_slices_concatenate_to_the_global_batch():
    table, images = _train_table(), _images()
    global_batches = _take(_train(table, images, start_step=2), 3)
    slices = [
        _take(_train(table, images, start_step=2, process_index=p, process_count=2), 3)
        for p in range(2)
    ]
    joined = [
        {key: np.concatenate([first[key], second[key]]) for key in first}
        for first, second in zip(*slices, strict=True)
    ]
    assert slices[0][0]["image"].shape[0] == 2
    _assert_batches_equal(joined, global_batches)


def test_index_batches_are_the_train_batches_without_images():
    table, images = _train_table(), _images()
    kwargs = {"start_step": 2, "process_index": 1, "process_count": 2}
    with_images = _take(_train(table, images, **kwargs), 4)
    for batch in with_images:
        del batch["image"], batch["neighbor_image"]
    indices = batch_lib.index_batches(table, batch_size=4, seed=3, **kwargs)
    _assert_batches_equal(_take(indices, 4), with_images)


def test_train_batches_rejects_indivisible_process_count():
    with pytest.raises(ValueError, match="divisible by process_count 3"):
        _train(_train_table(), _images(), process_count=3)


def test_eval_batches_count_every_image_once():
    images, labels = _images(10), np.arange(10) % NUM_CLASSES
    batches = list(batch_lib.eval_batches(images, labels, batch_size=4))
    assert [b["mask"].tolist() for b in batches][-1] == [True, True, False, False]
    assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
    for batch in batches:
        assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[mask], images)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[mask], labels)
    assert not batches[-1]["image"][2:].any()


def test_class_balanced_weights():
    weights = batch_lib.class_balanced_weights(np.array([0, 0, 0, 1, 2, 2]), 3)
    np.testing.assert_allclose(weights, [6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2)], rtol=1e-6)
    assert weights.dtype == np.float32
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no training sample"):
        batch_lib.class_balanced_weights(np.array([0, 2, 2]), 3)


def test_steps_per_epoch_drops_the_partial_batch():
    assert batch_lib.steps_per_epoch(12, 4) == 3
    assert batch_lib.steps_per_epoch(11, 4) == 2


def test_tables_batches_feeds_and_the_model_boundary_import_without_tensorflow():
    modules = (
        "ldl_jax.data.tables, ldl_jax.data.batches, ldl_jax.data.feeds, ldl_jax.parallel, "
        "ldl_jax.inference, ldl_jax.inspect"
    )
    code = f"import sys, {modules}; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[2])
