"""The MoFME gallery tab's handlers on real photos with the shipped weights (the gallery helper drives the app)."""
import gradio as gr
import numpy as np
import pytest
from skimage import data

from zoo.apps import mofme_tab
from zoo.pipelines.evaluate_mofme import psnr
from zoo.pipelines.photos import load_photo
from zoo.pipelines.weather import degrade

pytestmark = pytest.mark.slow  # loads the shipped weights and restores real photos


def test_sample_with_synthetic_rain_is_restored_and_mapped():
    degraded, restored, experts, uncertainty, report = mofme_tab.run_restoration(None, "chelsea", "Rain streaks", 0.5, 0, False)
    clean = load_photo("chelsea")
    assert degraded.shape == restored.shape == experts.shape == uncertainty.shape == clean.shape
    assert degraded.dtype == np.uint8
    # the handler's degraded image is the documented generator's output, and restoration helps
    np.testing.assert_array_equal(degraded, mofme_tab.to_uint8(degrade(clean, "rain", 0.5, seed=0)))
    assert psnr(clean, restored / 255.0) > psnr(clean, degraded / 255.0) + 2.0
    assert "PSNR" in report and "expert 0" in report and "uncertainty" in report
    assert len({tuple(c) for c in experts[::8, ::8].reshape(-1, 3)}) > 1  # the map shows several experts
    assert uncertainty.std() > 0


def test_grayscale_and_rgba_uploads_are_converted():
    gray = data.camera()[::4, ::4]  # 128 x 128, 2-D
    out = mofme_tab.run_restoration(gray, None, "Snow", 0.4, 1, False)
    assert out[1].shape == (128, 128, 3)
    rgba = np.dstack([data.astronaut()[::4, ::4], np.full((128, 128), 255, np.uint8)])
    rgba[:, :64, 3] = 0  # left half transparent: composited over white
    degraded, restored, *_ = mofme_tab.run_restoration(rgba, None, "Haze", 0.0, 0, False)  # severity 0: no weather
    assert (degraded[:, :64] == 255).all() and restored.shape == (128, 128, 3)


def test_large_photo_is_tiled():
    retina = data.retina()  # 1411 x 1411 RGB, 2 MP: 7 x 7 overlapping tiles
    degraded, restored, experts, *_ = mofme_tab.run_restoration(retina, None, "Raindrops on the lens", 0.5, 0, False)
    assert restored.shape == experts.shape == retina.shape


def test_already_degraded_upload_has_no_psnr():
    rainy = (degrade(load_photo("coffee")[:200, :240], "rain", 0.6, seed=2) * 255).astype(np.uint8)
    degraded, restored, *_, report = mofme_tab.run_restoration(rainy, None, "Rain streaks", 0.5, 0, True)
    np.testing.assert_array_equal(degraded, rainy)
    assert "No clean reference" in report


def test_bad_inputs_become_messages():
    with pytest.raises(gr.Error, match="smaller than one 8x8 patch"):
        mofme_tab.restore(np.zeros((5, 5, 3), np.uint8), None, "Snow", 0.5, 0, False)
    with pytest.raises(gr.Error, match="above the limit"):
        mofme_tab.restore(np.zeros((2049, 2048, 3), np.uint8), None, "Snow", 0.5, 0, False)
    with pytest.raises(gr.Error, match="upload a photo or pick a sample"):
        mofme_tab.restore(None, None, "Snow", 0.5, 0, False)
    with pytest.raises(gr.Error, match="unknown weather effect"):
        mofme_tab.restore(None, "coffee", "Fog", 0.5, 0, False)
    with pytest.raises(gr.Error, match="shape"):
        mofme_tab.restore(np.zeros((16, 16, 5), np.uint8), None, "Snow", 0.5, 0, False)


def test_tab_builds():
    with gr.Blocks() as demo:
        with gr.Tab(mofme_tab.TITLE):
            mofme_tab.build()
    images = [b for b in demo.blocks.values() if isinstance(b, gr.Image)]
    assert len(images) == 5 and any(isinstance(b, gr.Radio) and "Snow" in str(b.choices) for b in demo.blocks.values())
