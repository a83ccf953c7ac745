"""ldl_jax.data.images: decoding every image once, in memory or into a memmap cache."""

import concurrent.futures
import re
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ldl_jax.data import images as image_lib
from ldl_jax.data import tables
from tests.helpers.rows import SIZE, read_train


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
    table = read_train(write_csv(), image_dir)
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
    table = read_train(write_csv(), image_dir)
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
    table = read_train(write_csv(), image_dir)
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
    table = read_train(write_csv(), image_dir)
    (image_dir / "faces/007.png").write_bytes(b"this is not an image")
    with pytest.raises(tables.DataError) as error:
        image_lib.load_images(table.paths, SIZE)
    # The reason alone, on one line: not TensorFlow's function, node and op names around it.
    prefix = f"{image_dir / 'faces/007.png'} (row index 7): cannot read or decode the image: "
    assert str(error.value).startswith(prefix)
    assert re.fullmatch(
        r"Unknown image file format\. One of [A-Za-z ,]+ required\.",
        str(error.value)[len(prefix) :],
    )


def test_corrupt_image_leaves_no_cache_files(dataset, tmp_path):
    """A failed memmap build removes its temporary file, the lock and the directory it made."""
    write_csv, image_dir, _ = dataset
    table = read_train(write_csv(), image_dir)
    (image_dir / "faces/007.png").write_bytes(b"this is not an image")
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    cache = workdir / "cache" / "train_images.npy"
    with pytest.raises(tables.DataError, match=r"007\.png \(row index 7\)"):
        image_lib.load_images(table.paths, SIZE, cache_path=cache, max_in_memory_bytes=0)
    assert list(workdir.iterdir()) == []
