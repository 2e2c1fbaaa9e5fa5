"""Seeded weather degradations for all-weather restoration: rain streaks, snow, haze, raindrops.

Every generator is `f(image [H, W, 3] float in [0, 1], severity in [0, 1], seed) -> degraded image`
(same shape, float32, in [0, 1]); the same (image, severity, seed) always gives the same output, and
severity 0 returns the image unchanged. Each models one physical effect:

* rain_streaks: sparse drops motion-blurred along one wind angle into streaks, added as a bright
  layer (screen blend, so streaks lighten like the Rain100/Outdoor-Rain renders). Severity raises
  density, length and brightness.
* snow: flakes of two size layers (far: many small, near: few large soft discs, slightly
  motion-blurred) blended towards white, plus a faint white veil. Severity raises count and opacity.
* haze: the atmospheric scattering model I = J t + A (1 - t), t = exp(-beta d), with a synthetic
  depth d (far at the top of the frame, plus smooth random variation), airlight A ~ 0.8-0.95 and
  beta growing with severity.
* raindrops: drops on the lens: each round-ish drop shows a blurred, flipped (lens-like) view of
  the scene around it with a dark rim; severity raises their number and size. Sizes are in pixels
  (radius 6-26 px at severity 0.5), the same whatever the size of the image: they used to scale with
  max(H, W) / 256, so the 64-px training crops got drops of radius 1-3 px while the held-out photos
  (400-640 px) got 7-33 px, and a model trained on crops never saw a test-sized drop (issue 17).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import ndimage


def weather_effect(render: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]):
    """Wrap `render(image, severity, rng)` into the public `f(image, severity=0.5, seed=0)`: checks the
    arguments, returns a copy at severity 0, seeds the generator, clips the result to [0, 1] float32."""

    @functools.wraps(render)
    def effect(image: np.ndarray, severity: float = 0.5, seed: int = 0) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
        if not 0.0 <= severity <= 1.0:
            raise ValueError(f"severity must be in [0, 1], got {severity}")
        image = image.astype(np.float32, copy=False)
        if severity == 0:
            return image.copy()
        return np.clip(render(image, severity, np.random.default_rng(seed)), 0.0, 1.0).astype(np.float32)

    return effect


def _line_kernel(length: int, angle_deg: float) -> np.ndarray:
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    t = np.linspace(-c, c, 4 * size)
    dx, dy = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    kernel[np.round(c + t * dy).astype(int), np.round(c + t * dx).astype(int)] = 1.0
    return kernel / kernel.sum()


@weather_effect
def rain_streaks(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    density = 0.002 + 0.02 * severity
    drops = (rng.random((h, w)) < density).astype(np.float32) * rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    length = int(round(6 + 24 * severity * rng.uniform(0.8, 1.2)))
    angle = 90.0 + rng.uniform(-20, 20)  # mostly vertical, wind tilts it
    streaks = ndimage.convolve(drops, _line_kernel(length, angle), mode="reflect")
    streaks = np.clip(streaks * length * (0.35 + 0.5 * severity), 0.0, 1.0)[:, :, None]
    return 1.0 - (1.0 - image) * (1.0 - streaks)


@weather_effect
def snow(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    flakes = np.zeros((h, w), np.float32)
    for count_per_mpx, sigma in ((20000, 0.7), (2500, 2.0)):  # far small flakes, near large ones
        count = rng.poisson(count_per_mpx * severity * h * w / 1e6)
        layer = np.zeros((h, w), np.float32)
        layer[rng.integers(0, h, count), rng.integers(0, w, count)] = rng.uniform(0.6, 1.0, count)
        layer = ndimage.gaussian_filter(layer, sigma) * (2 * np.pi * sigma**2)
        flakes = np.maximum(flakes, np.clip(layer, 0.0, 1.0))
    flakes = ndimage.convolve(flakes, _line_kernel(3, 90.0 + rng.uniform(-30, 30)), mode="reflect")
    alpha = np.clip(flakes * (0.7 + 0.3 * severity), 0.0, 1.0)[:, :, None]
    veiled = image * (1 - 0.15 * severity) + 0.15 * severity
    return veiled * (1 - alpha) + alpha


@weather_effect
def haze(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    rows = np.linspace(1.0, 0.2, h, dtype=np.float32)[:, None]  # top of the frame is far away
    variation = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), max(h, w) / 8)
    variation /= np.abs(variation).max() + 1e-8
    depth = np.clip(rows + 0.25 * variation, 0.05, 1.2)
    beta = 0.3 + 1.7 * severity
    transmission = np.exp(-beta * depth)[:, :, None]
    airlight = rng.uniform(0.8, 0.95)
    return image * transmission + airlight * (1 - transmission)


RAINDROP_SCALE = 2.0  # drop radii in pixels = U(3, 6 + 14 severity) x this (as the old rule gave a 512-px photo)


@weather_effect
def raindrops(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    out = image.copy()
    blurred = ndimage.gaussian_filter(image, sigma=(3, 3, 0))
    count = rng.poisson((3 + 40 * severity) * h * w / 256**2)  # per area: a crop gets its share, as of a photo
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(count):
        radius = rng.uniform(3, 6 + 14 * severity) * RAINDROP_SCALE
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        stretch = rng.uniform(0.8, 1.3)  # drops are a little elongated
        y0, y1 = int(max(cy - radius * stretch - 2, 0)), int(min(cy + radius * stretch + 3, h))
        x0, x1 = int(max(cx - radius - 2, 0)), int(min(cx + radius + 3, w))
        if y1 <= y0 or x1 <= x0:
            continue
        dy, dx = (yy[y0:y1, x0:x1] - cy) / stretch, xx[y0:y1, x0:x1] - cx
        dist = np.sqrt(dy**2 + dx**2) / radius
        inside = np.clip((1.0 - dist) * radius / 1.5, 0.0, 1.0)[:, :, None]  # soft edge
        # a drop is a small lens: it shows the scene around it, upside down and blurred
        sy = np.clip(np.round(cy - 1.5 * dy * stretch), 0, h - 1).astype(int)
        sx = np.clip(np.round(cx - 1.5 * dx), 0, w - 1).astype(int)
        lens = blurred[sy, sx] * 1.08 + 0.04
        rim = np.exp(-((dist - 0.9) ** 2) / 0.01)[:, :, None] * 0.25
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - inside) + np.clip(lens - rim, 0, 1) * inside
    return out


DEGRADATIONS: dict[str, Callable[..., np.ndarray]] = {
    "rain": rain_streaks,
    "snow": snow,
    "haze": haze,
    "raindrop": raindrops,
}


def degrade(image: np.ndarray, effect: str, severity: float = 0.5, seed: int = 0) -> np.ndarray:
    if effect not in DEGRADATIONS:
        raise ValueError(f"unknown weather effect {effect!r}; known: {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[effect](image, severity, seed)
