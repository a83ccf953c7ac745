"""Face detection with five landmarks, for prediction on photographs and video frames.

The detector is MTCNN from the `mtcnn` package (TensorFlow; its three networks' weights are
files inside the package, so nothing is downloaded). Its five landmarks (eyes, nose tip, mouth
corners) are what `face_align.align_face` maps onto the training template, so a detected face
reaches the model framed as RAF-DB's aligned crops are.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# MTCNN's landmark names in `face_align`'s order: left eye, right eye, nose tip, left mouth
# corner, right mouth corner, left and right as seen in the image.
_LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# Larger images are shrunk to this longer side for detection (the found points are scaled
# back): the image pyramid of a 12-megapixel photo costs seconds and finds nothing more.
DETECT_MAX_SIDE = 1024


@dataclasses.dataclass(frozen=True)
class Face:
    """A detected face in the coordinates of the image it was found in.

    Attributes:
      box: (x, y, w, h) in whole pixels.
      landmarks: (5, 2) float (x, y) points in `face_align`'s order.
      confidence: the detector's score in [0, 1].
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    confidence: float


class FaceDetector:
    """MTCNN, built once and used for every image or frame."""

    def __init__(self):
        from mtcnn import MTCNN  # TensorFlow: imported only when faces are to be found

        self._mtcnn = MTCNN()

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces in an (H, W, 3) uint8 RGB image, largest first."""
        scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
        if scale < 1.0:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        faces = [
            Face(
                box=tuple(int(round(v / scale)) for v in found["box"]),
                landmarks=np.array([found["keypoints"][name] for name in _LANDMARKS], np.float64)
                / scale,
                confidence=float(found["confidence"]),
            )
            for found in self._mtcnn.detect_faces(image)
        ]
        return sorted(faces, key=lambda face: -face.box[2] * face.box[3])
