"""Decoding a release's images once, with the trainer's decoder, so that no bad file reaches it.

`decode_image(path)` decodes a file exactly as `ldl_jax.data.images` will in training
(`tf.io.decode_image`, 3 channels, the first frame): a file that passes here decodes there. A
file that does not pass gets one reason out of `SKIP_REASONS`, for the tools' `skipped.csv` and
summaries. The file's first bytes tell an empty file and a file that is no image at all (an HTML
page, a TIFF) from an image that is damaged (a truncated JPEG).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

EMPTY = "empty file"
NOT_AN_IMAGE = "not a JPEG/PNG/GIF/BMP image"
UNDECODABLE = "cannot decode"
UNREADABLE = "cannot read"
SKIP_REASONS = (EMPTY, NOT_AN_IMAGE, UNDECODABLE, UNREADABLE)

# The formats tf.io.decode_image reads, by their first bytes.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


@dataclasses.dataclass(frozen=True)
class Decoded:
    """(H, W, 3) uint8 `pixels`, or None with a `reason` from SKIP_REASONS and a `detail`."""

    pixels: np.ndarray | None
    reason: str | None = None
    detail: str = ""


def decode_image(path: Path) -> Decoded:
    """Reads and decodes one image file; never raises for a bad file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return Decoded(None, UNREADABLE, str(error))
    if not data:
        return Decoded(None, EMPTY)
    if not data.startswith(_SIGNATURES):
        return Decoded(None, NOT_AN_IMAGE, f"starts with {data[:8]!r}")
    try:
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        return Decoded(None, UNDECODABLE, getattr(error, "message", str(error)).strip())
    return Decoded(pixels.numpy())
