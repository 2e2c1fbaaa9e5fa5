"""MoFME model, config, processor and tiling: tiny configs, real from_pretrained round trips."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageToImage

import zoo  # noqa: F401  (registers mofme)
from zoo.models.mofme import MoFMEConfig, MoFMEForImageRestoration, MoFMEImageProcessor, restore_image
from zoo.models.mofme.modeling_mofme import MoFMEMixtureOfFFN
from zoo.models.mofme.presets import PAPER_EXPERTS, PAPER_TOP_K, PRESETS, build_on_meta, moe_ffn_parameters
from zoo.models.mofme.processing_mofme import to_rgb_array
from zoo.core.routing import TopKRouter

TINY = dict(head_channels=8, num_head_res_blocks=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_experts=4, num_experts_per_tok=2, decoder_channels=8, decoder_hidden_channels=8, hidden_dropout=0.0)


def tiny(**overrides) -> MoFMEForImageRestoration:
    torch.manual_seed(0)
    return MoFMEForImageRestoration(MoFMEConfig(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("moe_type,router_type", [("fme", "uncertainty"), ("ffn", "uncertainty"), ("fme", "top_k")])
def test_save_load_through_auto_classes(tmp_path, moe_type, router_type):
    model = tiny(moe_type=moe_type, router_type=router_type)
    model.train()(torch.rand(2, 3, 32, 32))  # move the UaR running statistics off their init
    model.eval()
    model.save_pretrained(tmp_path)
    MoFMEImageProcessor(tile_size=64, tile_overlap=16).save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mofme"
    loaded = AutoModelForImageToImage.from_pretrained(tmp_path).eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, MoFMEForImageRestoration) and isinstance(processor, MoFMEImageProcessor)
    assert processor.tile_size == 64
    x = torch.rand(1, 3, 24, 40)
    torch.testing.assert_close(loaded(x).reconstruction, model(x).reconstruction)
    bf16 = AutoModelForImageToImage.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert bf16(x.bfloat16()).reconstruction.dtype == torch.bfloat16


def test_conventional_moe_matches_naive_loop():
    torch.manual_seed(0)
    layer = MoFMEMixtureOfFFN(TopKRouter(16, 4, top_k=2), 16, ffn_ratio=2)
    with torch.no_grad():
        layer.router.weight.normal_(0, 1)
        layer.experts.up_proj_bias.normal_(0, 0.1)
    x = torch.randn(10, 16)
    out, _ = layer(x)
    ex = layer.experts
    for t in range(10):
        probs = torch.softmax(layer.router.weight @ x[t], -1)
        top = probs.topk(2).indices
        u = F.layer_norm(x[t], (16,), layer.norm.weight, layer.norm.bias)
        ref = sum(probs[e] / probs[top].sum() * (ex.down_proj[e] @ F.gelu(ex.up_proj[e] @ u + ex.up_proj_bias[e])
                                                 + ex.down_proj_bias[e]) for e in top)
        torch.testing.assert_close(out[t], ref, atol=1e-5, rtol=1e-4)


def test_output_routing_and_loss():
    model = tiny()
    x, y = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    out = model(pixel_values=x, labels=y, output_router_logits=True)
    torch.testing.assert_close(out.loss, F.l1_loss(out.reconstruction, y))
    squared = model(pixel_values=x, labels=y, reconstruction_loss="l2").loss  # the tiny recipe's loss
    torch.testing.assert_close(squared, ((out.reconstruction - y) ** 2).sum() / y.numel())
    # per-image losses (pipelines.train_mofme's validation comparison): against skimage's PSNR of each image
    from skimage.metrics import peak_signal_noise_ratio

    per_image = [((out.reconstruction[i] - y[i]) ** 2).mean().item() for i in range(2)]
    psnr = model(pixel_values=x, labels=y, reconstruction_loss="psnr").loss
    floored = [10 * np.log10(e + 1e-4) for e in per_image]  # -PSNR of each image, the 1e-4 floor added
    reference = [-peak_signal_noise_ratio(y[i].numpy(), out.reconstruction[i].detach().numpy(), data_range=1.0)
                 for i in range(2)]
    assert floored == pytest.approx(reference, abs=0.2)  # the floor moves images at 20-30 dB by < 0.05 dB
    torch.testing.assert_close(psnr, torch.tensor(np.mean(floored), dtype=torch.float32))
    rmse = model(pixel_values=x, labels=y, reconstruction_loss="rmse").loss
    torch.testing.assert_close(rmse, torch.tensor(np.mean([np.sqrt(e + 1e-4) for e in per_image]), dtype=torch.float32))
    assert len(out.routing_weights) == 2 and out.routing_weights[0].shape == (2, 6, 4)
    torch.testing.assert_close(out.routing_weights[0].sum(-1), torch.ones(2, 6))
    assert (out.routing_weights[0] > 0).sum(-1).eq(2).all()  # top-2
    assert out.routing_uncertainty[0].shape == (2, 6) and (out.routing_uncertainty[0] >= 0).all()
    assert 0 <= out.reconstruction.min() and out.reconstruction.max() <= 1
    out.loss.backward()
    assert model.layers[0].moe.experts.film_proj.grad.abs().sum() > 0


def test_bad_inputs_and_config():
    model = tiny()
    with pytest.raises(ValueError, match="multiples of patch_size"):
        model(torch.rand(1, 3, 20, 16))
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\]"):
        model(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="labels"):
        model(torch.rand(1, 3, 16, 16), labels=torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="reconstruction_loss"):
        model(torch.rand(1, 3, 16, 16), labels=torch.rand(1, 3, 16, 16), reconstruction_loss="huber")
    with pytest.raises(ValueError, match="moe_type"):
        MoFMEConfig(moe_type="dense")
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        MoFMEConfig(num_experts=4, num_experts_per_tok=5)
    with pytest.raises(ValueError, match="hidden_size"):
        MoFMEConfig(hidden_size=100, num_attention_heads=8)
    with pytest.raises(ValueError, match="uar_dropout"):
        MoFMEConfig(uar_dropout=0.0)


def test_paper_presets_parameter_counts_on_meta():
    """FFN-block parameters at paper size against the closed-form count (models_b.md §3f: E = 16 is
    6.22M / 18.9M per layer)."""
    D = 384
    for e in PAPER_EXPERTS:
        for k in PAPER_TOP_K:
            fme = build_on_meta(PRESETS[f"paper-fme-e{e}-k{k}"])
            ffn = build_on_meta(PRESETS[f"paper-ffn-e{e}-k{k}"])
            assert next(fme.parameters()).device.type == "meta"
            router = e * D + 1  # + UaR temperature
            per_fme = 2 * D + 2 * (D * D + D) + router + e * (2 * D * D + 2 * D) + (4 * D * D + 4 * D) + (4 * D * D + D)
            per_ffn = 2 * D + router + e * (4 * D * D + 4 * D + 4 * D * D + D)
            assert moe_ffn_parameters(fme) == 2 * per_fme and moe_ffn_parameters(ffn) == 2 * per_ffn
    assert round(per_fme / 1e6, 2) == 6.22 and round(per_ffn / 1e6, 1) == 18.9


def test_image_conversion_and_limits():
    gray = (np.arange(100, dtype=np.uint8).reshape(10, 10))
    np.testing.assert_allclose(to_rgb_array(gray)[:, :, 1], gray / 255.0, atol=1e-6)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest transparent -> white
    out = to_rgb_array(rgba)
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])
    np.testing.assert_allclose(out[1, 1], [1, 1, 1])
    processor = MoFMEImageProcessor(max_image_pixels=64 * 64)
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        processor(np.zeros((5, 30, 3), np.uint8))
    with pytest.raises(ValueError, match="above the limit"):
        processor(np.zeros((65, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_rgb_array(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_rgb_array(np.full((4, 4, 3), 7.0))
    batch = processor([gray[:, :9], gray[:, :9]])  # 10 x 9 -> padded to 16 x 16
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["original_sizes"].tolist() == [[10, 9], [10, 9]]


def test_tiled_restoration_geometry_is_exact():
    """A residual model whose last conv is zero is the identity: tiling, blending and cropping must
    give back every pixel of an odd-sized image spanning several overlapping tiles."""
    model = tiny(residual=True)
    with torch.no_grad():
        model.decoder.conv2.weight.zero_()
        model.decoder.conv2.bias.zero_()
    processor = MoFMEImageProcessor(tile_size=32, tile_overlap=8)
    image = np.random.default_rng(0).random((45, 77, 3)).astype(np.float32)
    result = restore_image(model, processor, image, tiles_per_batch=3)
    np.testing.assert_allclose(result.image, image, atol=1e-6)
    assert result.routing_weights.shape == (6, 10, 4) and result.uncertainty.shape == (6, 10)
    np.testing.assert_allclose(result.routing_weights.sum(-1), 1.0, atol=1e-5)


def test_single_tile_matches_direct_call():
    model = tiny()
    processor = MoFMEImageProcessor(tile_size=64, tile_overlap=16)
    image = np.random.default_rng(1).random((40, 48, 3)).astype(np.float32)
    result = restore_image(model, processor, image)
    direct = model(torch.from_numpy(image.transpose(2, 0, 1))[None], output_router_logits=True)
    np.testing.assert_allclose(result.image, direct.reconstruction[0].permute(1, 2, 0).detach().numpy(), atol=1e-6)
    np.testing.assert_array_equal(result.dominant_expert.reshape(-1), direct.routing_weights[-1][0].argmax(-1).numpy())
