"""How the bundled benchmark's images are drawn: geometry on boolean masks, the source classes' shapes, the target's
composite objects, and the shaded backgrounds, colours and noise both share.

Nothing here keeps state or draws from a global generator: every random choice comes from the numpy Generator passed
in, in a fixed order, so an image is a pure function of its seed (rethink.data.synth seeds one Generator per image).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw


# ----------------------------------------------------------------------------------------------
# Geometry. All masks are boolean (size, size) arrays; pixel (row j, column i) has its centre at
# (x=i, y=j), the same convention PIL's polygon fill uses, so numpy discs and PIL polygons align.


@lru_cache(maxsize=8)
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _local(size: int, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in a frame centred at (cx, cy) and rotated by theta."""
    x, y = _coords(size)
    dx, dy = x - cx, y - cy
    c, s = math.cos(theta), math.sin(theta)
    return dx * c + dy * s, -dx * s + dy * c


def _to_image(cx: float, cy: float, theta: float, points) -> list[tuple[float, float]]:
    """Map points of an object's local frame to image coordinates."""
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + a * c - b * s, cy + a * s + b * c) for a, b in points]


def _polygon(size: int, points) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in points], fill=1)
    return np.asarray(img, dtype=bool)


def polyline(size: int, points, width: float) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    pts = [(float(x), float(y)) for x, y in points]
    ImageDraw.Draw(img).line(pts, fill=1, width=max(1, round(width)), joint="curve")
    return np.asarray(img, dtype=bool)


def disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    x, y = _coords(size)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _ellipse(size: int, cx: float, cy: float, a: float, b: float, theta: float) -> np.ndarray:
    u, v = _local(size, cx, cy, theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _rect(size: int, cx: float, cy: float, theta: float, a0: float, a1: float, b0: float, b1: float) -> np.ndarray:
    """Rectangle [a0, a1] x [b0, b1] in the frame of (cx, cy, theta)."""
    return _polygon(size, _to_image(cx, cy, theta, [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]))


def _regular(size: int, cx: float, cy: float, r: float, n: int, theta: float) -> np.ndarray:
    pts = [(r * math.cos(theta + 2 * math.pi * k / n), r * math.sin(theta + 2 * math.pi * k / n)) for k in range(n)]
    return _polygon(size, [(cx + px, cy + py) for px, py in pts])


def _star(size: int, cx: float, cy: float, r: float, theta: float, inner: float = 0.45) -> np.ndarray:
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * inner
        a = theta + math.pi * k / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return _polygon(size, pts)


def _patch(size: int, cx: float, cy: float, half: float, theta: float):
    """Local coordinates and the inside of a rotated square patch, for the texture classes."""
    u, v = _local(size, cx, cy, theta)
    return u, v, (np.abs(u) <= half) & (np.abs(v) <= half)


# ----------------------------------------------------------------------------------------------
# Source classes. Each draws one boolean mask for a shape of circumradius r centred at (cx, cy),
# rotated by theta, with stroke width w, on a size x size canvas.


def _outline(filled, size, cx, cy, r, theta, w):
    return filled(size, cx, cy, r, theta) & ~filled(size, cx, cy, max(r - w, 0.5), theta)


def _circle(size, cx, cy, r, theta, w, rng):
    return disc(size, cx, cy, r)


def _circle_outline(size, cx, cy, r, theta, w, rng):
    return disc(size, cx, cy, r) & ~disc(size, cx, cy, r - w)


def _polygon_class(n, outline):
    def draw(size, cx, cy, r, theta, w, rng):
        def filled(size_, cx_, cy_, r_, theta_):
            return _regular(size_, cx_, cy_, r_, n, theta_)

        return _outline(filled, size, cx, cy, r, theta, w) if outline else filled(size, cx, cy, r, theta)

    return draw


def _star_class(outline):
    def draw(size, cx, cy, r, theta, w, rng):
        # A star's arms are thin: a stroke as wide as for a square would fill them.
        return _outline(_star, size, cx, cy, r, theta, 0.6 * w) if outline else _star(size, cx, cy, r, theta)

    return draw


def _ellipse_class(size, cx, cy, r, theta, w, rng):
    return _ellipse(size, cx, cy, r, r * rng.uniform(0.35, 0.6), theta)


def _cross(size, cx, cy, r, theta, w, rng):
    t = r * rng.uniform(0.22, 0.32)
    return _rect(size, cx, cy, theta, -r, r, -t, t) | _rect(size, cx, cy, theta, -t, t, -r, r)


def _concentric(size, cx, cy, r, theta, w, rng):
    mask = np.zeros((size, size), dtype=bool)
    for rr in (r, 0.62 * r):
        mask |= disc(size, cx, cy, rr) & ~disc(size, cx, cy, rr - 0.7 * w)
    return mask | disc(size, cx, cy, 0.22 * r)


def _arrow(size, cx, cy, r, theta, w, rng):
    t = r * 0.16
    pts = [(-r, -t), (0.15 * r, -t), (0.15 * r, -0.55 * r), (r, 0), (0.15 * r, 0.55 * r), (0.15 * r, t), (-r, t)]
    return _polygon(size, _to_image(cx, cy, theta, pts))


def _crescent(size, cx, cy, r, theta, w, rng):
    shift = r * rng.uniform(0.35, 0.55)
    return disc(size, cx, cy, r) & ~disc(size, cx + shift * math.cos(theta), cy + shift * math.sin(theta), r)


def _semicircle(size, cx, cy, r, theta, w, rng):
    _, v = _local(size, cx, cy, theta)
    return disc(size, cx, cy, r) & (v >= 0)


def _sector(size, cx, cy, r, theta, w, rng):
    # A disc with a wedge cut out ("pac-man"); the wedge opens towards theta.
    u, v = _local(size, cx, cy, theta)
    half = rng.uniform(0.35, 0.6)
    wedge = np.abs(np.arctan2(v, u)) < half
    return disc(size, cx, cy, r) & ~wedge


def _bars(size, cx, cy, r, theta, w, rng):
    half = 0.75 * r
    u, _, inside = _patch(size, cx, cy, half, theta)
    n = int(rng.integers(3, 5))
    period = 2 * half / n
    return inside & (np.mod(u + half, period) < 0.5 * period)


def _checker(size, cx, cy, r, theta, w, rng):
    half = 0.75 * r
    u, v, inside = _patch(size, cx, cy, half, theta)
    period = 2 * half / int(rng.integers(3, 5))
    return inside & ((np.floor((u + half) / period) + np.floor((v + half) / period)) % 2 == 0)


def _dots(size, cx, cy, r, theta, w, rng):
    half = 0.8 * r
    u, v, inside = _patch(size, cx, cy, half, theta)
    period = 2 * half / 3
    du = np.mod(u + half, period) - period / 2
    dv = np.mod(v + half, period) - period / 2
    return inside & (du * du + dv * dv <= (0.3 * period) ** 2)


def _grid(size, cx, cy, r, theta, w, rng):
    half = 0.75 * r
    u, v, inside = _patch(size, cx, cy, half, theta)
    period = 2 * half / 3
    line = 0.5 * w
    return inside & ((np.mod(u + half + line / 2, period) < line) | (np.mod(v + half + line / 2, period) < line))


def _zigzag(size, cx, cy, r, theta, w, rng):
    n = int(rng.integers(3, 6))
    pts = [(-r + 2 * r * k / n, (0.4 * r if k % 2 else -0.4 * r)) for k in range(n + 1)]
    return polyline(size, _to_image(cx, cy, theta, pts), 0.8 * w)


def _arc(size, cx, cy, r, theta, w, rng):
    u, v = _local(size, cx, cy, theta)
    half = rng.uniform(0.5, 1.0) * math.pi / 2
    ring = disc(size, cx, cy, r) & ~disc(size, cx, cy, r - 1.3 * w)
    return ring & (np.abs(np.arctan2(v, u)) <= half)


def _spiral(size, cx, cy, r, theta, w, rng):
    turns = rng.uniform(1.5, 2.2)
    steps = 48
    pts = []
    for k in range(steps + 1):
        t = k / steps
        a = 2 * math.pi * turns * t
        pts.append((r * t * math.cos(a), r * t * math.sin(a)))
    return polyline(size, _to_image(cx, cy, theta, pts), 0.7 * w)


# The drawing function of each source class, in label order (rethink.data.synth.SOURCE_CLASSES is this order).
SOURCE_SHAPES = {
    "circle": _circle,
    "circle_outline": _circle_outline,
    "square": _polygon_class(4, outline=False),
    "square_outline": _polygon_class(4, outline=True),
    "triangle": _polygon_class(3, outline=False),
    "triangle_outline": _polygon_class(3, outline=True),
    "star": _star_class(outline=False),
    "star_outline": _star_class(outline=True),
    "hexagon": _polygon_class(6, outline=False),
    "hexagon_outline": _polygon_class(6, outline=True),
    "ellipse": _ellipse_class,
    "cross": _cross,
    "concentric": _concentric,
    "arrow": _arrow,
    "crescent": _crescent,
    "semicircle": _semicircle,
    "sector": _sector,
    "bars": _bars,
    "checker": _checker,
    "dots": _dots,
    "grid": _grid,
    "zigzag": _zigzag,
    "arc": _arc,
    "spiral": _spiral,
}


# ----------------------------------------------------------------------------------------------
# Colours and backgrounds.


@lru_cache(maxsize=16)
def _bilinear_weights(size: int, cells: int) -> np.ndarray:
    """(size, cells + 1) weights that linearly interpolate cells + 1 grid values onto size pixels."""
    t = np.linspace(0, cells, size)
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i0
    w = np.zeros((size, cells + 1), dtype=np.float32)
    w[np.arange(size), i0] = 1 - f
    w[np.arange(size), i0 + 1] = f
    w.setflags(write=False)
    return w


def smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise of unit-ish amplitude: a coarse random grid, bilinearly upsampled."""
    coarse = rng.standard_normal(size=(3, cells + 1, cells + 1), dtype=np.float32)
    w = _bilinear_weights(size, cells)
    return (w @ coarse @ w.T).transpose(1, 2, 0)  # (size, size, 3)


def background(rng: np.random.Generator, size: int, max_amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """A shaded canvas (float, size x size x 3) and its base colour, which the shapes on it contrast with."""
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    field = smooth_field(rng, size, cells=int(rng.integers(2, 5)))
    canvas = base + rng.uniform(0, max_amplitude) * field
    return canvas, base


def contrasting(rng: np.random.Generator, against: np.ndarray, min_distance: float, tries: int = 20) -> np.ndarray:
    """A random colour at least `min_distance` (RGB, 0-255) from `against`, or the last one tried."""
    for _ in range(tries):
        color = rng.uniform(0, 255, size=3).astype(np.float32)
        if float(np.linalg.norm(color - against)) >= min_distance:
            break
    return color


def finish(canvas: np.ndarray, rng: np.random.Generator, max_noise: float) -> np.ndarray:
    """The image's last step: pixel noise of a random strength, rounded and clipped to uint8."""
    sigma = np.float32(rng.uniform(0, max_noise))
    canvas = canvas + sigma * rng.standard_normal(size=canvas.shape, dtype=np.float32)
    np.rint(canvas, out=canvas)
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Target objects and what surrounds them.


def target_object(rng: np.random.Generator, category: str, size: int, s: float, cx: float, cy: float,
                  base: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The parts of one composite object: a list of (mask, colour) in paint order."""

    def color():
        return contrasting(rng, base, min_distance=70.0)

    if category == "house":
        theta = rng.uniform(-0.35, 0.35)
        parts = [
            (_rect(size, cx, cy, theta, -0.3 * s, 0.3 * s, -0.06 * s, 0.5 * s), color()),
            (_polygon(size, _to_image(cx, cy, theta, [(-0.42 * s, -0.05 * s), (0.42 * s, -0.05 * s), (0, -0.5 * s)])),
             color()),
        ]
        if rng.random() < 0.5:  # a door: changes the look, not the mask
            parts.append((_rect(size, cx, cy, theta, -0.08 * s, 0.08 * s, 0.2 * s, 0.5 * s), color()))
        return parts
    if category == "bullseye":
        outer, inner = color(), color()
        return [(disc(size, cx, cy, f * s), c) for f, c in ((0.5, outer), (0.34, inner), (0.17, outer))]
    if category == "dumbbell":
        theta = rng.uniform(0, math.pi)
        bar = max(1.0, 0.07 * s)
        c, sn = math.cos(theta), math.sin(theta)
        weight = color()
        return [
            (_rect(size, cx, cy, theta, -0.3 * s, 0.3 * s, -bar, bar), color()),
            (disc(size, cx - 0.3 * s * c, cy - 0.3 * s * sn, 0.2 * s), weight),
            (disc(size, cx + 0.3 * s * c, cy + 0.3 * s * sn, 0.2 * s), weight),
        ]
    if category == "flag":
        theta = rng.uniform(-0.3, 0.3)
        side = 1.0 if rng.random() < 0.5 else -1.0  # flies to the right or to the left

        def shape(points):  # points in units of s, in the flag's (possibly mirrored) frame
            return _polygon(size, _to_image(cx, cy, theta, [(side * a * s, b * s) for a, b in points]))

        def box(a0, a1, b0, b1):
            return shape([(a0, b0), (a1, b0), (a1, b1), (a0, b1)])

        pole, x0 = max(1.0 / s, 0.05), -0.35
        parts = [(box(x0 - pole, x0 + pole, -0.5, 0.5), color())]
        if rng.random() < 0.5:  # a rectangle with two stripes
            parts += [(box(x0, 0.45, -0.5, -0.3), color()), (box(x0, 0.45, -0.3, -0.1), color())]
        else:  # a pennant
            parts.append((shape([(x0, -0.5), (0.45, -0.3), (x0, -0.1)]), color()))
        return parts
    if category == "window":
        theta = rng.uniform(0, math.pi / 2)
        t = max(1.0, 0.06 * s)
        h = 0.45 * s
        inner = h - 2 * t
        frame = _rect(size, cx, cy, theta, -h, h, -h, h) & ~_rect(size, cx, cy, theta, -inner, inner, -inner, inner)
        cross = _rect(size, cx, cy, theta, -h, h, -t, t) | _rect(size, cx, cy, theta, -t, t, -h, h)
        # The panes are holes: the background shows through and is not part of the mask.
        return [(frame | cross, color())]
    raise ValueError(category)


def loose_shape(rng: np.random.Generator, size: int, r: float) -> np.ndarray:
    """A single shape of the source vocabulary: clutter that looks like an object's part."""
    cx, cy = rng.uniform(0, size, size=2)
    theta = rng.uniform(0, 2 * math.pi)
    kind = int(rng.integers(0, 7))
    if kind == 0:
        return disc(size, cx, cy, r)
    if kind == 1:
        return disc(size, cx, cy, r) & ~disc(size, cx, cy, 0.6 * r)
    if kind == 2:
        return _regular(size, cx, cy, r, 4, theta)
    if kind == 3:
        return _regular(size, cx, cy, r, 3, theta)
    if kind == 4:
        return _rect(size, cx, cy, theta, -r, r, -0.2 * r, 0.2 * r)
    if kind == 5:
        return _star(size, cx, cy, r, theta)
    return _regular(size, cx, cy, r, 6, theta)


def texture_patch(rng: np.random.Generator, canvas: np.ndarray, size: int) -> None:
    """Blend a faint stripe or checker texture over a large rotated rectangle of the background."""
    cx, cy = rng.uniform(0, size, size=2)
    u, v = _local(size, cx, cy, rng.uniform(0, math.pi))
    ha, hb = rng.uniform(0.2, 0.5, size=2) * size
    period = rng.uniform(3.0, 8.0)
    if rng.random() < 0.5:
        pattern = np.floor(u / period) % 2 == 0
    else:
        pattern = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    m = pattern & (np.abs(u) <= ha) & (np.abs(v) <= hb)
    alpha = rng.uniform(0.2, 0.5)
    canvas[m] = (1 - alpha) * canvas[m] + alpha * rng.uniform(0, 255, size=3).astype(np.float32)
