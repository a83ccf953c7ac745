"""Reading video files frame by frame, and drawing predictions onto a copy (OpenCV).

`read_frames` decodes one frame at a time (every Nth), so memory does not grow with the video;
`write_annotated` reads the video again and draws each analysed frame's face boxes and labels
on it and on the frames up to the next analysed one.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# Output containers OpenCV's bundled FFmpeg writes without extra codecs.
_FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}
_BOX_BGR = (0, 200, 0)


class UnreadableVideo(ValueError):
    """A file that cannot be opened or decoded as a video."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded frame: its index from 0, its time in seconds and its (H, W, 3) RGB pixels."""

    index: int
    time_s: float
    image: np.ndarray


def is_video(path) -> bool:
    return pathlib.Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_frames(path, every_n: int = 1) -> Iterator[Frame]:
    """Frames 0, N, 2N, ... of a video file, decoded one at a time (the others are skipped
    without conversion); a frame's time is its index over the stated frame rate.

    Raises:
      UnreadableVideo: OpenCV cannot open the file, it states no frame rate, or it has no
        frame; names the file.
    """
    if every_n < 1:
        raise ValueError(f"every_n={every_n}: must be at least 1")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UnreadableVideo(f"{path}: OpenCV cannot open it as a video")
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not fps > 0:
            raise UnreadableVideo(f"{path}: the video states no frame rate")
        index = 0
        while True:
            if index % every_n:
                if not capture.grab():
                    return
            else:
                ok, bgr = capture.read()
                if not ok:
                    if index == 0:
                        raise UnreadableVideo(f"{path}: no frame could be decoded")
                    return
                yield Frame(index, index / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()


def label(record: dict) -> str:
    """'Happy 0.93': a record's predicted class and its probability."""
    return f"{record['prediction']} {record['probabilities'][record['prediction']]:.2f}"


def write_annotated(source, records: Sequence[dict], out) -> int:
    """Writes a copy of video `source` to `out` (.avi or .mp4) with the predictions drawn.

    `records` are `source`'s prediction records (with "frame", "face" and "prediction"); an
    analysed frame's boxes and labels stay drawn until the next analysed frame. A record
    without a box (the whole frame was the face) is labelled in the top-left corner. Returns
    the number of frames written.
    """
    out = pathlib.Path(out)
    if out.suffix.lower() not in _FOURCC:
        raise ValueError(f"{out}: the annotated video must be .avi or .mp4")
    by_frame: dict[int, list[dict]] = {}
    for record in records:
        by_frame.setdefault(record["frame"], []).append(record)
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (
        int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    writer = cv2.VideoWriter(
        str(out), cv2.VideoWriter_fourcc(*_FOURCC[out.suffix.lower()]), fps, size
    )
    try:
        if not writer.isOpened():
            raise ValueError(f"{out}: OpenCV cannot write this video file")
        shown, index = [], 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return index
            shown = by_frame.get(index, shown)
            for record in shown:
                _draw(frame, record)
            writer.write(frame)
            index += 1
    finally:
        writer.release()
        capture.release()


def _draw(frame: np.ndarray, record: dict) -> None:
    """Draws a record's box and label onto a BGR frame in place."""
    if record["prediction"] is None:
        return
    x, y, w, h = record["face"] if isinstance(record["face"], list) else (0, 0, 0, 0)
    if w:
        cv2.rectangle(frame, (x, y), (x + w, y + h), _BOX_BGR, 2)
    scale = max(0.4, frame.shape[0] / 720)
    cv2.putText(
        frame,
        label(record),
        (x + 2, max(y - 6, int(18 * scale))),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        _BOX_BGR,
        max(1, round(2 * scale)),
        cv2.LINE_AA,
    )
