"""The review page: one self-contained HTML file for deciding, row by row, whether a training
label is kept, changed or dropped (`python -m ldl_jax.inspect --workdir=W --html`).

The page opens from disk with no server and no network: its data (one JSON block) and its
script and style are inline, and every image is a small base64 JPEG thumbnail (96 px, 48 px
for images shown only as a neighbour), stored once however many rows show it. Rows come
lowest lambda first; the script shows one page of them at a time, so thousands of rows stay
responsive. Decisions are kept in the browser's localStorage under a key of the run and
exported as `review_decisions.csv` with the columns `subDirectory_filePath`, `given` (the
`expression` value the page was built from) and `decision`: `keep`, `drop` or `relabel:K`, K
the new `expression` value (0-based; the page's number key for it is K + 1).
`tools/apply_review.py` applies that file to the training CSV.

The page itself (markup, style and script) is `review_page.html` next to this module; this
module only fills in its data. No JAX or TensorFlow here: the caller computes the predictions.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

TEMPLATE = pathlib.Path(__file__).with_name("review_page.html")
DATA_MARKER = "/*REVIEW_DATA*/"
THUMBNAIL_SIDE = 96  # pixels, of a shown row's image
NEIGHBOR_SIDE = 48  # pixels, of an image shown only as a neighbour (the size it is shown at)
JPEG_QUALITY = 80
DECIMALS = 3  # of the distributions and lambda stored in the page


def thumbnail_base64(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """An (H, W, 3) uint8 image as a base64 JPEG no larger than side x side."""
    picture = Image.fromarray(np.asarray(image, np.uint8))
    if max(picture.size) > side:
        picture = picture.resize((side, side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def run_key(workdir, train_csv) -> str:
    """The localStorage key of a run's decisions: its workdir and training CSV, not its step,
    so decisions made on one checkpoint's page show again on a later checkpoint's."""
    identity = f"{pathlib.Path(workdir).resolve()}\n{pathlib.Path(train_csv).resolve()}"
    return f"ldl_jax.review.{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def page_data(
    order: np.ndarray,
    *,
    paths: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    lam: np.ndarray,
    knn: np.ndarray,
    targets: np.ndarray,
    images: np.ndarray,
    class_names: Sequence[str],
    title: str,
    key: str,
) -> dict:
    """The JSON the page reads.

    Args:
      order: (R,) the training rows to show, in page order (lowest lambda first).
      paths: (N,) every training row's `subDirectory_filePath`.
      labels: (N,) given labels.
      probs: (N, C) predicted distributions.
      lam: (N,) lambda.
      knn: (N, K) each row's VA neighbours (the K the run used).
      targets: (R, C) the label distribution each of `order`'s rows trains towards.
      images: (N, S, S, 3) uint8, the decoded training images.
      class_names: C names.
      title: what the page's header says the run is.
      key: the localStorage key of the decisions (`run_key`).

    Returns:
      {"title", "key", "num_rows" (N), "classes", "rows": one object per shown row (row index,
      path, given, pred, lam, p, y, nb: neighbour rows), "thumbs": {row: base64 JPEG} and
      "labels": {row: given label} for every row shown or shown as a neighbour}.
    """
    order = np.asarray(order)
    if len(targets) != len(order):
        raise ValueError(f"{len(targets)} target distributions for {len(order)} rows")
    neighbors = np.asarray(knn)[order]
    rows = [
        {
            "row": int(row),
            "path": str(paths[row]),
            "given": int(labels[row]),
            "pred": int(np.argmax(probs[row])),
            "lam": round(float(lam[row]), DECIMALS),
            "p": np.round(np.asarray(probs[row], np.float64), DECIMALS).tolist(),
            "y": np.round(np.asarray(target, np.float64), DECIMALS).tolist(),
            "nb": [int(n) for n in row_neighbors],
        }
        for row, target, row_neighbors in zip(order, targets, neighbors, strict=True)
    ]
    shown = {int(row) for row in order}
    pictured = sorted(shown | {int(n) for n in neighbors.ravel()})
    return {
        "title": title,
        "key": key,
        "num_rows": len(paths),
        "classes": [str(name) for name in class_names],
        "rows": rows,
        "thumbs": {
            str(row): thumbnail_base64(
                images[row], THUMBNAIL_SIDE if row in shown else NEIGHBOR_SIDE
            )
            for row in pictured
        },
        "labels": {str(row): int(labels[row]) for row in pictured},
    }


def render(data: dict) -> str:
    """The page's HTML with `data` inlined (escaped so no string in it can end the script)."""
    payload = json.dumps(data, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = TEMPLATE.read_text(encoding="utf-8")
    if template.count(DATA_MARKER) != 1:
        raise ValueError(f"{TEMPLATE} must hold {DATA_MARKER} exactly once")
    return template.replace(DATA_MARKER, payload)


def write_review_page(path, data: dict) -> int:
    """Writes the page to `path` through a temporary file; returns its size in bytes."""
    path = pathlib.Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(render(data), encoding="utf-8")
    temporary.replace(path)
    return path.stat().st_size
