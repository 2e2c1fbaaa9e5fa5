"""Clean photos from packages and the seeded weather degradations."""
import numpy as np
import pytest

from zoo.pipelines.photos import SOURCES, TEST_PHOTOS, TRAIN_PHOTOS, VALIDATION_PHOTOS, load_photo, photos
from zoo.pipelines.weather import DEGRADATIONS, degrade


def test_split_is_by_source_photo():
    assert set(TRAIN_PHOTOS).isdisjoint(TEST_PHOTOS) and set(TRAIN_PHOTOS) | set(TEST_PHOTOS) == set(SOURCES)
    test = photos("test")
    assert list(test) == list(TEST_PHOTOS)
    for image in test.values():
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 300
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.1  # a real photo, not a flat field
    with pytest.raises(ValueError, match="split"):
        photos("val")


def test_validation_photos_are_train_photos_the_small_recipe_does_not_fit():
    assert set(VALIDATION_PHOTOS) < set(TRAIN_PHOTOS)
    assert set(photos("fit")) == set(TRAIN_PHOTOS) - set(VALIDATION_PHOTOS)
    assert set(photos("validation")) == set(VALIDATION_PHOTOS) and set(photos("validation")).isdisjoint(TEST_PHOTOS)


def test_raindrops_on_a_training_crop_are_as_large_as_on_a_test_photo():
    """Drop sizes are in pixels: the share of pixels a drop touches is about the same on a 96-px crop (what
    training sees) as on the whole held-out photo (what the test sees). They used to scale with the image
    size, so a 64-px crop got drops of radius 1-3 px and a 600-px photo 7-33 px."""
    photo = load_photo("coffee")
    crop = photo[100:196, 200:296]
    share = lambda image, seed: (np.abs(degrade(image, "raindrop", 0.5, seed=seed) - image).max(-1) > 0.03).mean()  # noqa: E731
    on_photo = np.mean([share(photo, seed) for seed in range(3)])
    on_crop = np.mean([share(crop, seed) for seed in range(60)])
    assert 0.15 < on_photo < 0.4, on_photo  # about a quarter of the photo, as before the change
    assert 0.6 < on_crop / on_photo < 1.6, (on_crop, on_photo)


@pytest.mark.parametrize("effect", sorted(DEGRADATIONS))
def test_degradation_is_seeded_and_measurable(effect):
    clean = load_photo("chelsea")[:160, :200]
    a = degrade(clean, effect, 0.5, seed=3)
    b = degrade(clean, effect, 0.5, seed=3)
    c = degrade(clean, effect, 0.5, seed=4)
    assert a.shape == clean.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)  # same seed, same image
    assert np.abs(a - c).mean() > 1e-4  # another seed, another pattern
    mse = lambda x: float(((x - clean) ** 2).mean())  # noqa: E731
    assert mse(a) > 3e-4  # changes the image measurably (PSNR < 35 dB)
    np.testing.assert_array_equal(degrade(clean, effect, 0.0, seed=3), clean)
    assert mse(degrade(clean, effect, 0.9, seed=3)) > mse(degrade(clean, effect, 0.2, seed=3))  # severity knob


def test_haze_follows_the_scattering_model():
    """I = J t + A (1 - t): a black scene shows A (1 - t), a white one t + A (1 - t); so the two
    recover one t per pixel with 0 < t < 1 and a constant A, and t is larger at the bottom (near)."""
    black, white = np.zeros((64, 64, 3), np.float32), np.ones((64, 64, 3), np.float32)
    i0, i1 = degrade(black, "haze", 0.5, seed=1), degrade(white, "haze", 0.5, seed=1)
    t = i1 - i0  # = t
    airlight = i0 / (1 - t)
    assert np.all((t > 0) & (t < 1)) and np.ptp(airlight) < 1e-4
    assert t[-8:].mean() > t[:8].mean()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown weather effect"):
        degrade(np.zeros((8, 8, 3), np.float32), "fog")
    with pytest.raises(ValueError, match="severity"):
        degrade(np.zeros((8, 8, 3), np.float32), "rain", 1.5)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        degrade(np.zeros((8, 8), np.float32), "snow")
