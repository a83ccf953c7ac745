"""Drawing the synthetic data set's cartoon faces (`ldl_jax.synthetic` samples what to draw).

`render_face(rng, expression, image_size)` draws one face whose mouth, eyes, brows and nose
follow the `Expression` parameters, with face shape, skin, hair, pose, lighting, noise and
occluders drawn from `rng`, supersampled and downsampled with antialiasing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

# Faces are drawn this many times larger, then downsampled with antialiasing.
_SUPERSAMPLING = 3


@dataclasses.dataclass(frozen=True)
class Expression:
    """Facial action parameters, each roughly in [-1.5, 1.5].

    Attributes:
        mouth_curve: Corners up (> 0, smile) or down (< 0, frown).
        mouth_open: Jaw drop; 0 is closed lips.
        mouth_width: Relative mouth width (1 is neutral).
        eye_open: Relative eye opening (1 is neutral).
        brow_raise: Brows up (> 0) or lowered (< 0).
        brow_tilt: Inner brow ends down (> 0, frowning) or up (< 0, worried).
        teeth: Visible teeth inside an open mouth (> 0.5 shows them).
        wrinkle: Nose-bridge wrinkles (disgust).
        asymmetry: One-sided upper-lip raise (disgust).
    """

    mouth_curve: float
    mouth_open: float
    mouth_width: float
    eye_open: float
    brow_raise: float
    brow_tilt: float
    teeth: float
    wrinkle: float
    asymmetry: float


@dataclasses.dataclass(frozen=True)
class _FaceFrame:
    """Maps face coordinates to canvas pixels.

    Face coordinates put the face centre at (0, 0), x to the face's right and
    y downwards; the face outline spans about [-0.8, 0.8] x [-1, 1].

    Attributes:
        center: Canvas position of the face centre, in pixels.
        scale: Pixels per face unit.
        angle: In-plane rotation in radians.
    """

    center: tuple[float, float]
    scale: float
    angle: float

    def points(self, x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        """Returns canvas points of the face points (x[i], y[i])."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        canvas_x = self.center[0] + self.scale * (cos * x - sin * y)
        canvas_y = self.center[1] + self.scale * (sin * x + cos * y)
        return list(zip(canvas_x.tolist(), canvas_y.tolist(), strict=True))

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, steps: int = 48
    ) -> list[tuple[float, float]]:
        """Returns the canvas polygon of an axis-aligned face-space ellipse."""
        t = np.linspace(0.0, 2.0 * np.pi, steps, endpoint=False)
        return self.points(cx + rx * np.cos(t), cy + ry * np.sin(t))

    def width(self, face_units: float) -> int:
        """Converts a stroke width from face units to whole pixels (>= 1)."""
        return max(1, round(face_units * self.scale))


def render_face(rng: np.random.Generator, expression: Expression, image_size: int) -> np.ndarray:
    """Draws one face and returns it as a (size, size, 3) uint8 array."""
    canvas_size = image_size * _SUPERSAMPLING
    background = _random_color(rng, low=20, high=235)
    image = Image.new("RGB", (canvas_size, canvas_size), background)
    draw = ImageDraw.Draw(image)
    frame = _random_frame(rng, canvas_size)
    skin = _random_skin(rng)
    hair = _random_color(rng, low=10, high=120)

    _draw_head(draw, frame, rng, skin, hair)
    _draw_eyes(draw, frame, rng, expression)
    _draw_brows(draw, frame, expression, hair)
    _draw_nose(draw, frame, expression, skin)
    _draw_mouth(draw, frame, expression, skin)
    if rng.random() < 0.15:
        _draw_occluder(draw, frame, rng)

    small = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return _apply_lighting_and_noise(rng, np.asarray(small, dtype=np.float64))


def _random_frame(rng: np.random.Generator, canvas_size: int) -> _FaceFrame:
    """Draws face position, size and in-plane rotation."""
    scale = canvas_size * rng.uniform(0.36, 0.44)
    offset = rng.uniform(-0.06, 0.06, size=2) * canvas_size
    center = (canvas_size / 2 + offset[0], canvas_size / 2 + offset[1] + 0.03 * canvas_size)
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    return _FaceFrame(center=center, scale=scale, angle=float(angle))


def _random_color(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    """Draws an RGB colour with channels in [low, high]."""
    return tuple(int(c) for c in rng.integers(low, high + 1, size=3))


def _random_skin(rng: np.random.Generator) -> tuple[int, int, int]:
    """Draws a skin tone between a dark and a light reference."""
    dark, light = np.array([95.0, 60.0, 40.0]), np.array([245.0, 210.0, 180.0])
    tone = dark + rng.uniform(0.1, 1.0) * (light - dark)
    tone += rng.normal(0.0, 8.0, size=3)
    return tuple(int(c) for c in np.clip(tone, 0, 255))


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Scales a colour's brightness."""
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)


def _draw_head(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    rng: np.random.Generator,
    skin: tuple[int, int, int],
    hair: tuple[int, int, int],
) -> None:
    """Draws neck, optional hair and the face outline."""
    half_width = rng.uniform(0.70, 0.86)
    half_height = rng.uniform(0.92, 1.06)
    draw.polygon(frame.ellipse(0.0, 1.0, 0.38, 0.5), fill=_shade(skin, 0.85))
    if rng.random() < 0.75:
        hair_height = rng.uniform(0.75, 1.0)
        draw.polygon(frame.ellipse(0.0, -0.2, half_width * 1.12, hair_height), fill=hair)
    draw.polygon(frame.ellipse(0.0, 0.0, half_width, half_height), fill=skin)


def _draw_eyes(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    rng: np.random.Generator,
    expression: Expression,
) -> None:
    """Draws both eyes: sclera, iris, pupil and upper lid line."""
    iris_color = _random_color(rng, low=20, high=140)
    spacing = rng.uniform(0.28, 0.36)
    height_center = rng.uniform(-0.16, -0.08)
    half_width = 0.15
    half_height = 0.085 * float(np.clip(expression.eye_open, 0.15, 2.0))
    iris_radius = 0.065
    for side in (-1.0, 1.0):
        cx = side * spacing
        draw.polygon(
            frame.ellipse(cx, height_center, half_width, half_height),
            fill=(240, 240, 235),
        )
        iris_height = min(iris_radius, half_height)
        draw.polygon(frame.ellipse(cx, height_center, iris_radius, iris_height), fill=iris_color)
        pupil = 0.45 * iris_radius
        draw.polygon(
            frame.ellipse(cx, height_center, pupil, min(pupil, half_height)),
            fill=(15, 15, 15),
        )
        t = np.linspace(np.pi, 2.0 * np.pi, 16)
        lid = frame.points(cx + half_width * np.cos(t), height_center + half_height * np.sin(t))
        draw.line(lid, fill=(30, 25, 25), width=frame.width(0.025))


def _draw_brows(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    expression: Expression,
    hair: tuple[int, int, int],
) -> None:
    """Draws both eyebrows; raise moves them up, tilt lowers the inner ends."""
    base = -0.34 - 0.12 * expression.brow_raise
    tilt = 0.08 * expression.brow_tilt
    for side in (-1.0, 1.0):
        x = side * np.array([0.10, 0.28, 0.46])
        y = base + np.array([tilt, -0.03 - 0.2 * tilt, -0.5 * tilt])
        draw.line(frame.points(x, y), fill=_shade(hair, 0.8), width=frame.width(0.05))


def _draw_nose(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    expression: Expression,
    skin: tuple[int, int, int],
) -> None:
    """Draws the nose and, for high ``wrinkle``, bridge wrinkles."""
    line_color = _shade(skin, 0.65)
    draw.line(
        frame.points(np.array([0.0, 0.04, 0.0]), np.array([-0.05, 0.18, 0.22])),
        fill=line_color,
        width=frame.width(0.025),
    )
    t = np.linspace(0.15 * np.pi, 0.85 * np.pi, 10)
    draw.line(
        frame.points(0.09 * np.cos(t), 0.2 + 0.05 * np.sin(t)),
        fill=line_color,
        width=frame.width(0.02),
    )
    num_wrinkles = int(np.clip(round(3 * expression.wrinkle), 0, 3))
    for row in range(num_wrinkles):
        y = -0.1 + 0.05 * row
        for side in (-1.0, 1.0):
            draw.line(
                frame.points(side * np.array([0.05, 0.13]), np.array([y, y - 0.03])),
                fill=_shade(skin, 0.55),
                width=frame.width(0.018),
            )


def _draw_mouth(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    expression: Expression,
    skin: tuple[int, int, int],
) -> None:
    """Draws lips, and the open mouth with optional teeth.

    The mouth is a centre line bent by ``mouth_curve`` and tilted on one side
    by ``asymmetry``; an open mouth spreads upper and lower lips around it.
    """
    half_width = 0.26 * float(np.clip(expression.mouth_width, 0.5, 1.5))
    t = np.linspace(-1.0, 1.0, 25)
    x = half_width * t
    center_line = (
        0.52
        - 0.13 * expression.mouth_curve * t**2
        - 0.05 * expression.asymmetry * np.clip(t, 0.0, 1.0)
    )
    opening = float(np.clip(expression.mouth_open, 0.0, 1.5))
    profile = np.sqrt(1.0 - t**2)
    lip_color = _shade(skin, 0.6)
    if opening < 0.12:
        draw.line(frame.points(x, center_line), fill=lip_color, width=frame.width(0.035))
        return

    upper = center_line - 0.06 * opening * profile
    lower = center_line + 0.16 * opening * profile
    outline = frame.points(np.concatenate([x, x[::-1]]), np.concatenate([upper, lower[::-1]]))
    draw.polygon(outline, fill=(70, 15, 20))
    if expression.teeth > 0.5:
        teeth_bottom = np.minimum(upper + 0.05 * opening + 0.02, lower)
        draw.polygon(
            frame.points(np.concatenate([x, x[::-1]]), np.concatenate([upper, teeth_bottom[::-1]])),
            fill=(235, 235, 225),
        )
    draw.line(outline + outline[:1], fill=lip_color, width=frame.width(0.03))


def _draw_occluder(draw: ImageDraw.ImageDraw, frame: _FaceFrame, rng: np.random.Generator) -> None:
    """Covers part of the face with a bar or a patch of random colour."""
    color = _random_color(rng, low=0, high=255)
    if rng.random() < 0.5:
        top = rng.uniform(-0.5, 0.5)
        x = np.array([-0.95, 0.95, 0.95, -0.95])
        y = np.array([top, top, top + 0.18, top + 0.18])
    else:
        left, top = rng.uniform(-0.8, 0.3), rng.uniform(-0.7, 0.5)
        width, height = rng.uniform(0.25, 0.5, size=2)
        x = np.array([left, left + width, left + width, left])
        y = np.array([top, top, top + height, top + height])
    draw.polygon(frame.points(x, y), fill=color)


def _apply_lighting_and_noise(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    """Applies a brightness gradient, global exposure and pixel noise."""
    size = pixels.shape[0]
    direction = rng.uniform(0.0, 2.0 * np.pi)
    coords = np.linspace(-1.0, 1.0, size)
    ramp = np.cos(direction) * coords[None, :] + np.sin(direction) * coords[:, None]
    gain = rng.uniform(0.8, 1.15) * (1.0 + rng.uniform(0.0, 0.35) * ramp)
    noisy = pixels * gain[:, :, None] + rng.normal(0.0, rng.uniform(1.0, 6.0), pixels.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
