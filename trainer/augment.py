"""Data augmentation for image datasets: every training batch is seen through a fresh random
distortion, so a small network learns digits that are not exactly where, or as thick as, MNIST
drew them.

    augment = get_augmentation("affine(shift=2, rotate=10, scale=0.1) + stroke(widen=1)", side=28, fill=-0.42)
    xb = augment(xb, rng)        # (n, 784) -> (n, 784), float32

``affine``: each image gets its own transform, a shift of up to ``shift`` pixels on each axis, a
rotation of up to ``rotate`` degrees and a scale factor within ``1 +- scale``, all uniform. Output
pixels are read from the source by inverse mapping with bilinear interpolation; whatever falls
outside the source reads as ``fill`` (the background value after normalisation).

``stroke``: each image's strokes are widened by up to ``widen`` pixels on every side, or thinned
by up to ``thin``, uniform: a grey dilation (erosion) with a 3x3 square, blended with the image
for the fraction of a pixel. A marker or a small drawing on a wide brush gives strokes wider
for the digit's size than MNIST's pen.

Several are applied in turn when joined by ``+``. Validation and test data are never augmented.
"""

from __future__ import annotations

import math

import numpy as np

from shared.text import shortened

from .specs import build


class Affine:
    """A random affine distortion per image of a (n, side*side) batch."""

    def __init__(self, shift: float = 2.0, rotate: float = 0.0, scale: float = 0.0, *, side: int, fill: float = 0.0):
        if shift < 0 or rotate < 0 or not 0 <= scale < 1:
            raise ValueError("affine needs shift >= 0 (pixels), rotate >= 0 (degrees) and 0 <= scale < 1")
        # Beyond these the distortion stops making sense: shifted by half the field or more, an item
        # can leave it altogether and the network learns from blank images; a turn past 180 degrees
        # is a smaller turn the other way.
        if shift >= side / 2 or rotate > 180:
            raise ValueError(f"affine needs shift < {side / 2:g} (half the {side}-pixel field) and rotate <= 180 "
                             f"(degrees), got shift={shift:g}, rotate={rotate:g}")
        self.shift, self.rotate, self.scale = float(shift), float(rotate), float(scale)
        self.side, self.fill = side, np.float32(fill)
        centre = (side - 1) / 2
        ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) - np.float32(centre)
        self.ys, self.xs, self.centre = ys.ravel(), xs.ravel(), np.float32(centre)

    def __repr__(self) -> str:
        return f"affine(shift={self.shift:g}, rotate={self.rotate:g}, scale={self.scale:g})"

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, side = len(x), self.side
        _check_size(x, side, "affine")
        angle = np.radians(rng.uniform(-self.rotate, self.rotate, n)).astype(np.float32)
        zoom = rng.uniform(1 - self.scale, 1 + self.scale, n).astype(np.float32)
        ty, tx = rng.uniform(-self.shift, self.shift, (2, n)).astype(np.float32)
        # Inverse map: output pixel p reads source (R(-angle) (p - t)) / zoom + centre.
        cos, sin = (np.cos(angle) / zoom)[:, None], (np.sin(angle) / zoom)[:, None]
        dy, dx = self.ys[None, :] - ty[:, None], self.xs[None, :] - tx[:, None]
        src_y = cos * dy - sin * dx + self.centre
        src_x = sin * dy + cos * dx + self.centre
        # Pad by one pixel of fill so every out-of-range read lands on it after clipping.
        src_y = np.clip(src_y, -1, side) + 1
        src_x = np.clip(src_x, -1, side) + 1
        y0 = np.minimum(np.floor(src_y), side).astype(np.intp)
        x0 = np.minimum(np.floor(src_x), side).astype(np.intp)
        wy, wx = src_y - y0, src_x - x0
        padded = np.full((n, side + 2, side + 2), self.fill, dtype=np.float32)
        padded[:, 1:-1, 1:-1] = x.reshape(n, side, side)
        flat = padded.reshape(-1)
        base = (np.arange(n, dtype=np.intp) * (side + 2) ** 2)[:, None] + y0 * (side + 2) + x0
        top = flat[base] * (1 - wx) + flat[base + 1] * wx
        bottom = flat[base + side + 2] * (1 - wx) + flat[base + side + 3] * wx
        return (top * (1 - wy) + bottom * wy).astype(np.float32, copy=False)


class Stroke:
    """Strokes widened or thinned by a random fraction of a pixel per image of a (n, side*side) batch."""

    def __init__(self, widen: float = 1.0, thin: float = 0.0, *, side: int, fill: float = 0.0):
        # One step of a 3x3 filter moves every edge by a pixel: more would merge a digit's strokes
        # (widen) or wipe out MNIST's, 2 to 3 pixels across (thin).
        if not (0 <= widen <= 1 and 0 <= thin <= 1):
            raise ValueError(f"stroke needs 0 <= widen <= 1 and 0 <= thin <= 1 (pixels on each side), "
                             f"got widen={widen:g}, thin={thin:g}")
        self.widen, self.thin = float(widen), float(thin)
        self.side, self.fill = side, np.float32(fill)

    def __repr__(self) -> str:
        return f"stroke(widen={self.widen:g}, thin={self.thin:g})"

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, side = len(x), self.side
        _check_size(x, side, "stroke")
        amount = rng.uniform(-self.thin, self.widen, n).astype(np.float32)[:, None, None]
        images = x.reshape(n, side, side)
        padded = np.full((n, side + 2, side + 2), self.fill, dtype=np.float32)
        padded[:, 1:-1, 1:-1] = images
        # Only what the range can ask for: no dilation without widen, no erosion without thin.
        widest = _over_neighbours(np.maximum, padded) if self.widen > 0 else images
        narrowest = _over_neighbours(np.minimum, padded) if self.thin > 0 else images
        target = np.where(amount >= 0, widest, narrowest)
        out = images + np.abs(amount) * (target - images)
        return out.reshape(n, side * side)


def _over_neighbours(reduce, padded: np.ndarray) -> np.ndarray:
    """``reduce`` (np.maximum: dilation; np.minimum: erosion) over each pixel's 3x3 neighbourhood,
    for a (n, side + 2, side + 2) batch padded by one pixel of fill."""
    side = padded.shape[1] - 2
    out = padded[:, 1:-1, 1:-1].copy()
    for dy in range(3):
        for dx in range(3):
            reduce(out, padded[:, dy:dy + side, dx:dx + side], out=out)
    return out


def _check_size(x: np.ndarray, side: int, name: str) -> None:
    if x.shape[1] != side * side:
        raise ValueError(f"{name} augmentation expects {side}x{side} images ({side * side} values), got {x.shape[1]}")


class Chain:
    """Augmentations applied in turn."""

    def __init__(self, steps: list):
        self.steps = steps

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.steps))

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in self.steps:
            x = step(x, rng)
        return x


AUGMENTATIONS = {"affine": Affine, "stroke": Stroke}


def split_chain(spec: str) -> list[str]:
    """``"affine(shift=2) + stroke(1)"`` -> ``["affine(shift=2)", "stroke(1)"]``: split on the ``+``
    outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(spec):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "+" and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    if any(not part.strip() for part in parts):
        raise ValueError(f"cannot parse {shortened(repr(spec))}: expected augmentations joined by '+', e.g. "
                         "'affine(shift=2) + stroke(widen=1)'")
    return parts


def get_augmentation(spec: str, *, side: int, fill: float = 0.0):
    """An augmentation from its spec string, e.g. ``"affine(shift=2, rotate=10, scale=0.1)"``, or
    several joined by ``+``, applied in that order."""
    steps = [build(AUGMENTATIONS, part, "augmentation", side=side, fill=fill) for part in split_chain(spec)]
    return steps[0] if len(steps) == 1 else Chain(steps)


def image_side(input_size: int) -> int:
    side = math.isqrt(input_size)
    if side * side != input_size:
        raise ValueError(f"augmentation needs square images; {input_size} inputs are not a square")
    return side
