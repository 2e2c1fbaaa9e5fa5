"""The MoFME training loop (few steps, incl. pause + resume) and the `zoo train` / `zoo eval` wiring."""
import pytest
import torch

from zoo.apps.cli import build_parser
from zoo.models.mofme import MoFMEConfig
from zoo.pipelines.train import TrainOptions, get_recipe, parse_extra
from zoo.pipelines.train_mofme import TINY_DEFAULTS, sample_batch, train_model
from zoo.pipelines.photos import photos

CONFIG = dict(head_channels=8, num_head_res_blocks=1, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
              num_experts=4, num_experts_per_tok=2, decoder_channels=8, decoder_hidden_channels=8, residual=True,
              hidden_dropout=0.0)
SETTINGS = {**TINY_DEFAULTS, "steps": 6, "batch": 2, "crop": 32, "warmup": 2, "checkpoint_every": 2}


def test_batches_are_a_function_of_seed_and_step():
    train = list(photos("train").values())
    a, b = sample_batch(5, 0, 3, 32, train), sample_batch(5, 0, 3, 32, train)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], sample_batch(6, 0, 3, 32, train)[0])
    assert a[0].shape == (3, 3, 32, 32) and (a[0] - a[1]).abs().mean() > 1e-3  # degraded differs from clean


@pytest.mark.slow
def test_pause_and_resume_reproduce_an_uninterrupted_run(tmp_path):
    config = MoFMEConfig(**CONFIG)
    straight, _, done = train_model(config, tmp_path / "a", SETTINGS, TrainOptions(seed=1), "straight")
    assert done
    _, _, done = train_model(config, tmp_path / "b", {**SETTINGS, "pause_after": 3}, TrainOptions(seed=1), "paused")
    assert not done and (tmp_path / "b" / "checkpoint" / "step.json").read_text() == '{"step": 3}'
    resumed, _, done = train_model(config, tmp_path / "b", SETTINGS, TrainOptions(seed=1, resume=True), "resumed")
    assert done
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)
    fresh = type(straight)(config).state_dict()
    assert any(not torch.equal(fresh[n], p) for n, p in straight.state_dict().items())  # it did train


def test_cli_and_registry_errors():
    args = build_parser().parse_args(["train", "mofme", "--recipe", "tiny", "--max-steps", "3", "--set", "lr=0.01"])
    assert args.system == "mofme" and args.max_steps == 3 and parse_extra(args.settings) == {"lr": 0.01}
    assert get_recipe("mofme", "tiny").__name__ == "train_tiny"
    with pytest.raises(ValueError, match="no recipe 'huge'"):
        get_recipe("mofme", "huge")
    with pytest.raises(ValueError, match="no training recipes for system"):
        get_recipe("nope", "tiny")
    with pytest.raises(ValueError, match="key=value"):
        parse_extra(["lr"])
    with pytest.raises(ValueError, match="unknown setting"):
        get_recipe("mofme", "tiny")(TrainOptions(extra={"learning_rate": 1.0}))


@pytest.mark.slow
def test_shipped_weights_meet_the_targets_and_fill_the_card():
    """The shipped tiny weights, re-evaluated on part of the held-out set, and the model card built from eval.json."""
    import json

    import yaml
    from transformers import AutoImageProcessor

    from zoo.models.mofme import restore_image
    from zoo.pipelines.evaluate_mofme import shipped_weights_dir
    from zoo.pipelines.mofme_card import render_model_card
    from zoo.pipelines.evaluate_mofme import load_variants, psnr
    from zoo.pipelines.photos import load_photo
    from zoo.pipelines.weather import degrade

    WEIGHTS = shipped_weights_dir()
    shipped = json.loads((WEIGHTS / "eval.json").read_text())
    assert shipped["MoFME"]["all"]["psnr"] >= shipped["input"]["all"]["psnr"] + 3.0
    assert shipped["MoFME"]["all"]["psnr"] >= shipped["MoE counterpart"]["all"]["psnr"] - 0.3
    models = load_variants(WEIGHTS)
    processor = AutoImageProcessor.from_pretrained(WEIGHTS / "tiny-fme")

    # the first held-out pair (chelsea, rain, seed 0) reproduces the shipped figure's ingredients
    clean = load_photo("chelsea")
    degraded = degrade(clean, "rain", 0.5, seed=0)
    restored = restore_image(models["MoFME"], processor, degraded).image
    assert psnr(clean, restored) > psnr(clean, degraded) + 3.0
    # the counterpart is no identity map (the L1 plateau it used to sit on: mean |output - input| 6e-4 on rain,
    # snow and raindrops): on every effect it changes the image, and it beats the input on average
    assert shipped["MoE counterpart"]["all"]["psnr"] > shipped["input"]["all"]["psnr"] + 1.0
    counterpart = models["MoE counterpart"]
    for index, effect in enumerate(("rain", "snow", "haze", "raindrop")):  # seeds as in held_out_pairs
        degraded = degrade(clean, effect, 0.5, seed=index)[100:228, 100:228]  # a 128 x 128 crop: fast
        with torch.no_grad():
            out = counterpart(pixel_values=torch.from_numpy(degraded.transpose(2, 0, 1).copy())[None]).reconstruction
        change = float(abs(out[0].permute(1, 2, 0).numpy() - degraded).mean())
        assert change > 0.005, (effect, change)
        assert shipped["MoE counterpart"][effect]["psnr"] != pytest.approx(shipped["input"][effect]["psnr"], abs=0.05), effect
    card = render_model_card()
    header = yaml.safe_load(card.split("---")[1])
    assert header["pipeline_tag"] == "image-to-image" and "moe" in header["tags"] and header["library_name"] == "transformers"
    assert f"{shipped['MoFME']['all']['psnr']:.2f} / {shipped['MoFME']['all']['ssim']:.3f}" in card
    assert "$" not in card  # every placeholder filled


def test_perceptual_term_uses_packaged_mobilenet_features():
    from zoo.integrations.assets import load_mobilenet_v2
    from zoo.pipelines.train_mofme import MobileNetPerceptualLoss

    loss = MobileNetPerceptualLoss()
    clean = torch.rand(1, 3, 32, 32)
    noisy = (clean + 0.2 * torch.randn_like(clean)).clamp(0, 1).requires_grad_(True)
    assert loss(clean, clean).item() == 0.0
    value = loss(noisy, clean)
    # independent reference: the packaged torchvision MobileNetV2's first 7 feature blocks, ImageNet-normalised
    features = load_mobilenet_v2().features[:7]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = (features((noisy - mean) / std) - features((clean - mean) / std)).abs().mean()
    torch.testing.assert_close(value, ref)
    value.backward()
    assert noisy.grad.abs().sum() > 0 and not any(p.requires_grad for p in loss.features.parameters())
