"""Short videos of easy-VQA-style shapes that move in a straight line: the video modality of the
Uni-MoE mixed instruction data (pipelines.unimoe_data), with answers known from the generator.

    MovingShape(shape, color, direction, size, start, speed)    one shape's whole trajectory
        --render_clip(shapes, frames, size, background)-->       uint8 [frames, size, size, 3]

The look follows easy-VQA's images (one flat-coloured circle, rectangle or triangle on a light,
slightly tinted background; its eight colours are the CSS named colours, read off its PNGs), so a
vision tower that has learned easy-VQA sees familiar frames. Each shape moves a whole number of
pixels per frame (`speed`) in one of four directions and stays entirely inside the frame in every
frame (`random_clip` only draws trajectories that do), so the direction is visible as a steady
centroid track. With two shapes, the two always differ in shape, colour and direction and never
touch in any frame (checked, redrawn otherwise), so each can be found by its colour alone.
Directions are image directions: "up" is towards row 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS = {  # easy-VQA's palette (the CSS colours of those names; green is CSS "lime")
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "teal": (0, 128, 128), "brown": (165, 42, 42), "gray": (128, 128, 128), "black": (0, 0, 0),
}
SHAPES = ("circle", "rectangle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy) in pixels
BACKGROUND_RANGE = (230, 256)  # easy-VQA backgrounds: each channel 230-255
FRAMES_RANGE = (4, 32)
SIZE_RANGE = (32, 256)
GAP = 2  # pixels between the boxes of two shapes, in every frame


@dataclass(frozen=True)
class MovingShape:
    """A shape whose centre is at `start` in frame 0 and moves `speed` pixels per frame in `direction`.
    `size` is the half-width of its bounding box (a circle's radius)."""

    shape: str
    color: str
    direction: str
    size: int
    start: tuple[int, int]  # (x, y) of the centre in frame 0
    speed: int

    def __post_init__(self):
        for name, value, known in (("shape", self.shape, SHAPES), ("color", self.color, COLORS),
                                   ("direction", self.direction, DIRECTIONS)):
            if value not in known:
                raise ValueError(f"MovingShape.{name} must be one of {sorted(known)}, got {value!r}")
        if self.size < 2 or self.speed < 1:
            raise ValueError(f"MovingShape.size must be >= 2 and speed >= 1, got size={self.size}, speed={self.speed}")

    def centre(self, frame: int) -> tuple[int, int]:
        dx, dy = DIRECTIONS[self.direction]
        return self.start[0] + dx * self.speed * frame, self.start[1] + dy * self.speed * frame

    def box(self, frame: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive, of the shape in `frame`."""
        x, y = self.centre(frame)
        return x - self.size, y - self.size, x + self.size, y + self.size


def _check_clip_size(frames: int, size: int) -> None:
    if not isinstance(frames, int) or not FRAMES_RANGE[0] <= frames <= FRAMES_RANGE[1]:
        raise ValueError(f"frames must be an int in {FRAMES_RANGE[0]}..{FRAMES_RANGE[1]}, got {frames!r}")
    if not isinstance(size, int) or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise ValueError(f"size must be an int in {SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels, got {size!r}")


def _draw(draw: ImageDraw.ImageDraw, item: MovingShape, frame: int) -> None:
    x0, y0, x1, y1 = item.box(frame)
    fill = COLORS[item.color]
    if item.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif item.shape == "rectangle":  # wider than tall, as easy-VQA draws most of them
        inset = item.size // 3
        draw.rectangle((x0, y0 + inset, x1, y1 - inset), fill=fill)
    else:  # apex up, like easy-VQA's triangles
        draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=fill)


def render_clip(shapes: list[MovingShape], frames: int = 8, size: int = 64,
                background: tuple[int, int, int] = (245, 245, 245)) -> np.ndarray:
    """uint8 [frames, size, size, 3]: the shapes drawn in order (later ones on top) on `background`."""
    _check_clip_size(frames, size)
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        image = Image.new("RGB", (size, size), tuple(background))
        draw = ImageDraw.Draw(image)
        for item in shapes:
            _draw(draw, item, t)
        video[t] = np.asarray(image)
    return video


def _inside(item: MovingShape, frames: int, size: int) -> bool:
    return all(0 <= v < size for t in (0, frames - 1) for v in item.box(t))


def _apart(a: MovingShape, b: MovingShape, frames: int) -> bool:
    for t in range(frames):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box(t), b.box(t)
        if ax0 <= bx1 + GAP and bx0 <= ax1 + GAP and ay0 <= by1 + GAP and by0 <= ay1 + GAP:
            return False
    return True


def _random_shape(rng: np.random.Generator, frames: int, size: int, shape: str, color: str,
                  direction: str) -> MovingShape:
    """A trajectory that stays inside the frame: travel is 25-50 % of the frame, the half-width 10-20 %."""
    half = int(rng.integers(max(2, size // 10), max(3, size // 5) + 1))
    speed = max(1, round(float(rng.uniform(0.25, 0.5)) * size / (frames - 1)))
    travel = speed * (frames - 1)
    dx, dy = DIRECTIONS[direction]
    lo, hi = half, size - 1 - half  # allowed centre range on each axis
    # the centre's range on each axis: the whole frame across the motion, shortened by the travel along it
    x_lo, x_hi = lo + travel * (dx < 0), hi - travel * (dx > 0)
    y_lo, y_hi = lo + travel * (dy < 0), hi - travel * (dy > 0)
    if x_lo > x_hi or y_lo > y_hi:
        raise ValueError(f"a {size}-pixel frame is too small for {frames} frames of motion")
    start = (int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(y_lo, y_hi + 1)))
    return MovingShape(shape, color, direction, half, start, speed)


def random_clip(rng: np.random.Generator, frames: int = 8, size: int = 64, num_shapes: int = 1,
                max_tries: int = 100) -> tuple[np.ndarray, list[MovingShape]]:
    """(video uint8 [frames, size, size, 3], its shapes): `num_shapes` (1 or 2) shapes of different
    shape, colour and direction, uniformly drawn, on a random easy-VQA-like background."""
    _check_clip_size(frames, size)
    if num_shapes not in (1, 2):
        raise ValueError(f"num_shapes must be 1 or 2, got {num_shapes!r}")
    background = tuple(int(c) for c in rng.integers(*BACKGROUND_RANGE, size=3))
    kinds = [str(s) for s in rng.choice(SHAPES, num_shapes, replace=False)]
    colors = [str(c) for c in rng.choice(list(COLORS), num_shapes, replace=False)]
    directions = [str(d) for d in rng.choice(list(DIRECTIONS), num_shapes, replace=False)]
    for _ in range(max_tries):
        shapes = [_random_shape(rng, frames, size, *attrs) for attrs in zip(kinds, colors, directions)]
        assert all(_inside(s, frames, size) for s in shapes)
        if num_shapes == 1 or _apart(*shapes, frames):
            return render_clip(shapes, frames, size, background), shapes
    raise RuntimeError(f"no non-touching trajectories for {num_shapes} shapes in {max_tries} tries "
                       f"({frames} frames of {size} px)")
