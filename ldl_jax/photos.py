"""Reading a photograph upright, with the decoder that training and evaluation use.

Pixels come from `ldl_jax.data.images.decode_rgb` (TensorFlow), so an image file gives the
same pixels here as in `--mode=eval`. TensorFlow ignores EXIF orientation, so a portrait phone
photo (stored sideways with orientation 6 or 8) would reach the face detector on its side:
`read_upright` reads the orientation tag with Pillow (the header only) and turns the decoded
array as a photo viewer shows it. Training and evaluation keep the stored pixel order: the
aligned crops of FER data sets carry no orientation tag, and for a file without one (or with
orientation 1) prediction and evaluation see identical pixels.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
import tensorflow as tf
from PIL import ExifTags, Image

from ldl_jax.data import images

# EXIF orientation -> the turn that shows the stored pixels upright (Pillow's exif_transpose).
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


class UnreadableImage(ValueError):
    """A file that cannot be read or decoded as an image."""


def exif_orientation(contents: bytes) -> int:
    """The EXIF orientation (1 to 8) of an encoded image; 1 (as stored) if it has none or
    its metadata cannot be parsed."""
    try:
        with Image.open(io.BytesIO(contents)) as image:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError):
        return 1
    return orientation if orientation in _UPRIGHT else 1


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """`image` (H, W, C) as stored, turned as its EXIF `orientation` says it is shown."""
    return np.ascontiguousarray(_UPRIGHT[orientation](image))


def read_upright(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, decoded as evaluation decodes it, upright.

    Raises:
      UnreadableImage: the file cannot be read or is not a decodable image; names the file.
    """
    try:
        contents = pathlib.Path(path).read_bytes()
        image = images.decode_rgb(contents).numpy()
    except OSError as error:
        raise UnreadableImage(f"{path}: cannot read the file ({error.strerror})") from error
    except tf.errors.OpError as error:
        reason = images.op_error_reason(error)
        raise UnreadableImage(f"{path}: not a decodable image ({reason})") from error
    return upright(image, exif_orientation(contents))
