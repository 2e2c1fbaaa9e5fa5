"""The patch-lattice measurement (zoo.pipelines.evaluate_mofme.patch_grid_ratio) and the decoder that has none."""
import numpy as np
import pytest
import torch

from zoo.models.mofme import MoFMEConfig, MoFMEForImageRestoration
from zoo.pipelines.evaluate_mofme import lattice_ratios, patch_grid_ratio
from zoo.pipelines.photos import load_photo

TINY = dict(head_channels=8, num_head_res_blocks=1, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
            num_experts=4, num_experts_per_tok=2, decoder_channels=8, decoder_hidden_channels=8, hidden_dropout=0.0)


def blocks(rng, rows: int, cols: int, patch: int = 8) -> np.ndarray:
    """A random constant per patch x patch block: the lattice at its plainest."""
    return np.kron(rng.standard_normal((rows, cols)), np.ones((patch, patch)))


def test_lattice_is_found_and_noise_or_a_photo_is_not():
    rng = np.random.default_rng(0)
    assert patch_grid_ratio(blocks(rng, 40, 50), 8) > 10  # every harmonic of 1/8 stands far out
    assert abs(patch_grid_ratio(rng.standard_normal((320, 400)), 8)) < 1.5  # white noise: flat spectrum
    photo = load_photo("chelsea")  # a PNG: no JPEG 8x8 blocks
    clean = patch_grid_ratio(photo, 8)
    assert abs(clean) < 1.5
    # a residual-like signal (noise, std 0.02) with a lattice of blocks as strong as the noise shows it
    noise = 0.02 * rng.standard_normal(photo.shape)
    lattice = 0.02 * blocks(rng, -(-photo.shape[0] // 8), -(-photo.shape[1] // 8))[: photo.shape[0], : photo.shape[1], None]
    assert abs(patch_grid_ratio(noise, 8)) < 1.5 and patch_grid_ratio(noise + lattice, 8) > 3


def test_the_measure_is_the_spectrum_at_patch_harmonics_against_neighbours():
    """Independent reference for one row: a cosine of period 8 on a flat-spectrum background puts its power in
    bin W/8; the ratio is that bin's power over the median of the bins around it (Hann-windowed). (The signal
    patch_grid_ratio hands in is an edge-energy map; any signal works the same way.)"""
    rng = np.random.default_rng(1)
    width, patch = 256, 8
    row = rng.standard_normal(width) + 3 * np.cos(2 * np.pi * np.arange(width) / patch)
    image = np.tile(row, (patch, 1))  # identical rows: the horizontal spectrum is this row's
    power = np.abs(np.fft.rfft((row - row.mean()) * np.hanning(width))) ** 2
    peak = width // patch
    around = [b for b in range(peak - 7, peak + 8) if abs(b - peak) > 1]
    first_harmonic = 10 * np.log10(power[peak] / np.median(power[around]))
    assert first_harmonic > 20
    ratios = lattice_ratios(image, patch, axis=1)
    assert ratios.shape == (patch // 2,) and ratios[0] == pytest.approx(first_harmonic, abs=1e-6)
    assert np.all(np.abs(ratios[1:]) < 6)  # harmonics 2 .. 4: noise only


@pytest.mark.parametrize("unembedding", ["pixel_shuffle", "bilinear"])
def test_decoder_unembedding_matches_a_naive_reference(unembedding):
    """pixel_shuffle: pixel (y, x) of channel c reads token (y//p, x//p)'s output c*p*p + (y%p)*p + x%p (its own
    block only); bilinear: the 2 x 2 nearest token projections weighted by distance (half-pixel centres,
    edges clamped), so neighbouring patches blend and no value jumps at a patch edge."""
    torch.manual_seed(0)
    model = MoFMEForImageRestoration(MoFMEConfig(**TINY, unembedding=unembedding)).eval()
    decoder, p = model.decoder, model.config.patch_size
    rows, cols = 2, 3
    tokens = torch.randn(1, rows * cols, model.config.hidden_size)
    captured = {}
    decoder.res1.register_forward_hook(lambda module, args, out: captured.update(features=args[0]))
    with torch.no_grad():
        decoder(tokens, (rows, cols))
        projected = decoder.to_pixels(tokens[0]).view(rows, cols, -1)  # [rows, cols, (p*p*)C]
    features = captured["features"][0]  # [C, H, W]
    channels = features.shape[0]
    for y in range(0, rows * p, 3):
        for x in range(0, cols * p, 5):
            if unembedding == "pixel_shuffle":
                expected = projected[y // p, x // p].view(channels, p, p)[:, y % p, x % p]
            else:
                fy, fx = (y + 0.5) / p - 0.5, (x + 0.5) / p - 0.5
                y0, x0 = int(np.floor(fy)), int(np.floor(fx))
                wy, wx = fy - y0, fx - x0
                at = lambda r, c: projected[min(max(r, 0), rows - 1), min(max(c, 0), cols - 1)]  # noqa: E731
                expected = ((1 - wy) * (1 - wx) * at(y0, x0) + (1 - wy) * wx * at(y0, x0 + 1)
                            + wy * (1 - wx) * at(y0 + 1, x0) + wy * wx * at(y0 + 1, x0 + 1))
            torch.testing.assert_close(features[:, y, x], expected, atol=1e-5, rtol=1e-4)


def test_decoder_skip_adds_the_heads_full_resolution_features():
    torch.manual_seed(0)
    model = MoFMEForImageRestoration(MoFMEConfig(**TINY, unembedding="bilinear", decoder_skip=True)).eval()
    pixels = torch.rand(1, 3, 16, 24)
    captured = {}
    model.decoder.res1.register_forward_hook(lambda module, args, out: captured.update(features=args[0]))
    with torch.no_grad():
        model(pixel_values=pixels)
        head = model.head(pixels)
        tokens = model.patch_embed(head)
        for layer in model.layers:
            tokens, _ = layer(tokens)
        without_skip = torch.nn.functional.interpolate(
            model.decoder.to_pixels(tokens).transpose(1, 2).reshape(1, -1, 2, 3), scale_factor=8, mode="bilinear")
    torch.testing.assert_close(captured["features"], without_skip + model.decoder.skip(head))
    plain = MoFMEForImageRestoration(MoFMEConfig(**TINY)).eval()
    assert plain.decoder.skip is None and "decoder.skip.weight" in model.state_dict()
