"""Clean real photographs shipped inside installed packages (no download), split by SOURCE image.

Every crop the trainer sees comes from a TRAIN photo; held-out figures are computed on TEST photos
only, so no pixel of a test photo is ever trained on. Grayscale photos are repeated to RGB.

    train: skimage astronaut, rocket, immunohistochemistry, hubble_deep_field, retina,
           stereo_motorcycle (left), camera, brick, grass, gravel; sklearn china.jpg
    test:  skimage chelsea, coffee; sklearn flower.jpg; matplotlib grace_hopper.jpg

The `small` MoFME recipe holds two train photos out as a validation split (its choices are made there, the
test photos stay untouched): "fit" = train minus VALIDATION_PHOTOS, "validation" = rocket, stereo_motorcycle.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load():
        from skimage import data

        image = getattr(data, name)()
        return image[0] if name == "stereo_motorcycle" else image
    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load():
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    return mpimg.imread(cbook.get_sample_data("grace_hopper.jpg"))


SOURCES: dict[str, Callable[[], np.ndarray]] = {
    **{name: _skimage(name) for name in ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
                                          "stereo_motorcycle", "camera", "brick", "grass", "gravel", "chelsea", "coffee")},
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _grace_hopper,
}
TEST_PHOTOS = ("chelsea", "coffee", "flower", "grace_hopper")
TRAIN_PHOTOS = tuple(name for name in SOURCES if name not in TEST_PHOTOS)
VALIDATION_PHOTOS = ("rocket", "stereo_motorcycle")
SPLITS = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS, "validation": VALIDATION_PHOTOS,
          "fit": tuple(name for name in TRAIN_PHOTOS if name not in VALIDATION_PHOTOS)}


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1]."""
    if name not in SOURCES:
        raise ValueError(f"unknown photo {name!r}; known: {sorted(SOURCES)}")
    image = np.asarray(SOURCES[name]())
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3])
    image.setflags(write=False)  # cached: callers must copy before editing
    return image


def photos(split: str) -> dict[str, np.ndarray]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return {name: load_photo(name) for name in SPLITS[split]}
