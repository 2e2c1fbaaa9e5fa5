"""MoIIE, MoTE, MoE-LLaVA on tiny configs: routing against naive loops over the released layouts,
converters, save/load through from_pretrained, presets on the meta device."""
import pytest
import torch
from torch.nn import functional as F

import zoo  # noqa: F401  (registers the configs with the Auto classes)
from zoo.models.moe_llava import MoeLlavaConfig, MoeLlavaForConditionalGeneration
from zoo.models.moe_llava.convert_moe_llava import convert_moe_llava_state_dict
from zoo.models.moiie import MoiieConfig, MoiieForConditionalGeneration, expert_groups
from zoo.models.moiie.convert_moiie import convert_moiie_state_dict
from tests.tiny_systems import IMAGE_ID, LLAMA, TOWER
from zoo.models.mote import MoteConfig, MoteForConditionalGeneration

PHI = {"model_type": "phi", "num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 48,
       "num_attention_heads": 2, "vocab_size": 64, "hidden_act": "gelu_new"}


def run_ffn(model, layer, hidden, modality):
    ffn = model.decoder_layers[layer].mlp
    with model.routing_context.use(modality_ids=modality):
        return ffn(hidden)


def released_non_moe_keys(model, rules):
    """Random tensors under the released names for every non-MoE parameter of `model`."""
    inverse = [(new, old) for old, new in rules]
    out = {}
    for key, value in model.state_dict().items():
        if ".mlp.moe." in key:
            continue
        for new, old in inverse:
            if key.startswith(new):
                key = old + key[len(new):]
                break
        out[key] = torch.randn_like(value) if value.is_floating_point() else value
    return out


# -- MoIIE -------------------------------------------------------------------------------------------
def test_expert_split_generalises_to_any_even_count():
    assert expert_groups(4) == {"image": [0], "shared": [1, 2], "text": [3]}
    assert expert_groups(8) == {"image": [0, 1], "shared": [2, 3, 4, 5], "text": [6, 7]}
    assert expert_groups(6) == {"image": [0], "shared": [1, 2, 3, 4], "text": [5]}
    with pytest.raises(ValueError, match="even number"):
        expert_groups(5)


@pytest.mark.parametrize("groups, message", [
    ({"image": [0, 1], "shared": [1, 2], "text": [3]}, "expert 1 is in both"),
    ({"image": [0], "shared": [1], "text": [3]}, "experts \\[2\\] belong to no group"),
    ({"image": [0], "shared": [], "text": [1, 2, 3]}, "image tokens reach 1 experts"),
    ({"image": [0], "shared": [1, 2], "text": [7]}, "outside"),
])
def test_bad_expert_groups_are_refused(groups, message):
    with pytest.raises(ValueError, match=message):
        MoiieConfig(text_config=LLAMA, vision_tower=TOWER, expert_groups=groups)


def test_moiie_routing_matches_the_released_code_after_conversion():
    config = MoiieConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)
    model = MoiieForConditionalGeneration(config).eval()
    assert model.moe_layer_ids == [1, 3]
    from zoo.models.moiie.convert_moiie import RULES

    released = released_non_moe_keys(model, RULES)
    H, I = 32, 48
    for layer in (1, 3):
        for e in range(4):
            for name, shape in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
                released[f"model.layers.{layer}.mlp.experts.{e}.{name}.weight"] = torch.randn(shape) / 4
        released[f"model.layers.{layer}.mlp.gate.weight"] = torch.randn(3, H)
        released[f"model.layers.{layer}.mlp.gate_vis.weight"] = torch.randn(3, H)
    model.load_state_dict(convert_moiie_state_dict(released, config), strict=True)

    hidden = torch.randn(1, 6, H)
    modality = torch.tensor([[0, 1, 1, 0, 1, 0]])
    with torch.no_grad():
        out = run_ffn(model, 3, hidden, modality)
    p = lambda e, n: released[f"model.layers.3.mlp.experts.{e}.{n}.weight"]  # noqa: E731
    for t in range(6):
        h = hidden[0, t]
        vision = bool(modality[0, t])
        gate = released["model.layers.3.mlp.gate_vis.weight" if vision else "model.layers.3.mlp.gate.weight"]
        probs = torch.softmax(gate @ h, -1)
        top = torch.topk(probs, 2)
        weights = top.values / top.values.sum()
        want = torch.zeros(H)
        for w, i in zip(weights, top.indices):
            e = int(i) + (0 if vision else 1)  # the released offsets, right for E = 4
            want += w * (p(e, "down_proj") @ (F.silu(p(e, "gate_proj") @ h) * (p(e, "up_proj") @ h)))
        torch.testing.assert_close(out[0, t], want, atol=1e-5, rtol=1e-4)

    # one Switch loss per router over its own tokens, weighted 0.001 each
    routing = model.decoder_layers[3].mlp.last_routing
    total = model.router_aux_loss(routing)
    want = 0.0
    for name, rows, allowed in (("image", [1, 2, 4], [0, 1, 2]), ("text", [0, 3, 5], [1, 2, 3])):
        probs = torch.softmax(routing.logits[rows][:, allowed], -1)
        chosen = torch.topk(probs, 2).indices
        f = torch.tensor([(chosen == e).sum().item() / len(rows) for e in range(3)])
        want += 0.001 * 3 * float((f * probs.mean(0)).sum())
    assert total.item() == pytest.approx(want, rel=1e-5)

    with pytest.raises(ValueError, match="released MoIIE checkpoints have 4 experts"):
        convert_moiie_state_dict(released, MoiieConfig(text_config=LLAMA, vision_tower=TOWER, num_experts=8))


def test_moiie_forward_loss_and_save_load_roundtrip(tmp_path):
    from transformers import AutoModel

    config = MoiieConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID, expert_lora_rank=2)
    model = MoiieForConditionalGeneration(config).eval()
    n = model.num_image_tokens()
    ids = torch.tensor([[1, 2] + [IMAGE_ID] * n + [3, 4, 5]])
    pixels = torch.randn(1, 3, 32, 32)
    labels = torch.full_like(ids, -100)
    labels[0, -1] = 5
    out = model(input_ids=ids, pixel_values=pixels, labels=labels, output_router_logits=True)
    logits = model(input_ids=ids, pixel_values=pixels).logits
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits[0, -2:-1], torch.tensor([5])).item() + out.aux_loss.item(), rel=1e-4)
    assert out.modality_ids[0].tolist() == [0, 0] + [1] * n + [0, 0, 0]
    assert len(out.router_logits) == 2
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path).eval()
    assert type(again) is MoiieForConditionalGeneration
    torch.testing.assert_close(again(input_ids=ids, pixel_values=pixels).logits, logits)
    with pytest.raises(ValueError, match="image placeholder tokens but 2 image"):
        model(input_ids=ids, pixel_values=torch.randn(2, 3, 32, 32))


# -- MoTE ----------------------------------------------------------------------------------------------
def test_mote_layer_is_shared_fp_ffn_plus_top1_ternary_expert(tmp_path):
    config = MoteConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)
    model = MoteForConditionalGeneration(config).eval()
    assert model.moe_layer_ids == [0, 2]
    ffn = model.decoder_layers[2].mlp
    experts = ffn.moe.experts
    with torch.no_grad():  # experts drift apart from their common init, as after training
        experts.gate_up_proj.add_(0.05 * torch.randn_like(experts.gate_up_proj))
        experts.down_proj.add_(0.05 * torch.randn_like(experts.down_proj))
    hidden = torch.randn(1, 5, 32)
    modality = torch.zeros(1, 5, dtype=torch.long)
    with torch.no_grad():
        out = run_ffn(model, 2, hidden, modality)
    dense = ffn.moe.shared_experts
    assert not any(p.requires_grad for p in dense.parameters())  # the fp FFN stays frozen

    def fake_int8(v):
        step = v.abs().max() / 127
        return (v / step).round() * step

    def ternary(w):
        s = w.abs().mean()
        return (w / s).round().clamp(-1, 1) * s

    for t in range(5):
        h = hidden[0, t]
        probs = torch.softmax(ffn.moe.router.weight @ h, -1)
        e = int(probs.argmax())
        gate_up, down = ternary(experts.gate_up_proj[e]), ternary(experts.down_proj[e])
        g, u = (gate_up @ fake_int8(h)).chunk(2)
        want = dense(h[None])[0] + probs[e] * (down @ fake_int8(F.silu(g) * u))
        torch.testing.assert_close(out[0, t], want, atol=1e-4, rtol=1e-4)

    ids = torch.tensor([[1] + [IMAGE_ID] * model.num_image_tokens() + [2, 3]])
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(input_ids=ids, pixel_values=pixels).logits
    model.pack_experts_()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits, before, atol=1e-4, rtol=1e-4)
    model.save_pretrained(tmp_path)
    again = MoteForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert again.config.ternary_packed and again.decoder_layers[0].mlp.moe.experts.packed
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        key = "language_model.model.layers.0.mlp.moe.experts.gate_up_proj_packed"
        assert f.get_tensor(key).dtype == torch.uint8
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, pixel_values=pixels).logits, before, atol=1e-4, rtol=1e-4)


# -- MoE-LLaVA ---------------------------------------------------------------------------------------
def test_moe_llava_deepspeed_phi_checkpoint_converts_and_routes_top2():
    from zoo.models.moe_llava.convert_moe_llava import RULES

    config = MoeLlavaConfig(text_config=PHI, vision_tower=TOWER, image_token_id=IMAGE_ID, min_capacity=64)
    model = MoeLlavaForConditionalGeneration(config).eval()
    assert model.moe_layer_ids == [0]
    released = released_non_moe_keys(model, RULES)
    prefix = "model.layers.0.mlp.deepspeed_moe"
    released[f"{prefix}.gate.wg.weight"] = torch.randn(4, 32)
    for e in range(4):
        base = f"{prefix}.experts.deepspeed_experts.{e}"
        released[f"{base}.fc1.weight"], released[f"{base}.fc1.bias"] = torch.randn(48, 32) / 4, torch.randn(48)
        released[f"{base}.fc2.weight"], released[f"{base}.fc2.bias"] = torch.randn(32, 48) / 4, torch.randn(32)
    model.load_state_dict(convert_moe_llava_state_dict(released, config), strict=True)
    hidden = torch.randn(1, 5, 32)
    with torch.no_grad():
        out = run_ffn(model, 0, hidden, torch.zeros(1, 5, dtype=torch.long))
    from transformers.activations import ACT2FN

    gelu_new = ACT2FN["gelu_new"]
    for t in range(5):
        h = hidden[0, t]
        probs = torch.softmax(released[f"{prefix}.gate.wg.weight"] @ h, -1)
        first = int(probs.argmax())
        second = int(probs.masked_fill(torch.arange(4) == first, -1).argmax())
        total = probs[first] + probs[second]
        want = torch.zeros(32)
        for e in (first, second):
            b = f"{prefix}.experts.deepspeed_experts.{e}"
            y = released[f"{b}.fc2.weight"] @ gelu_new(released[f"{b}.fc1.weight"] @ h + released[f"{b}.fc1.bias"]) + released[f"{b}.fc2.bias"]
            want += probs[e] / total * y
        torch.testing.assert_close(out[0, t], want, atol=1e-5, rtol=1e-4)
    broken = dict(released)
    del broken[f"{prefix}.experts.deepspeed_experts.3.fc1.weight"]
    with pytest.raises(ValueError, match="missing \\[3\\]"):
        convert_moe_llava_state_dict(broken, config)


def test_moe_llava_llama_layout_converts_and_capacity_switches_with_mode():
    config = MoeLlavaConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)
    model = MoeLlavaForConditionalGeneration(config)
    router = model.decoder_layers[0].mlp.moe.router
    assert router.capacity_factor == 1.5 and router.gumbel_second
    model.eval()
    assert router.capacity_factor == 2.0
    from zoo.models.moe_llava.convert_moe_llava import RULES

    released = released_non_moe_keys(model, RULES)
    for layer in (0, 2):
        released[f"model.layers.{layer}.mlp.deepspeed_moe.gate.wg.weight"] = torch.randn(4, 32)
        for e in range(4):
            base = f"model.layers.{layer}.mlp.deepspeed_moe.experts.deepspeed_experts.{e}"
            for name, shape in (("gate_proj", (48, 32)), ("up_proj", (48, 32)), ("down_proj", (32, 48))):
                released[f"{base}.{name}.weight"] = torch.randn(shape)
    converted = convert_moe_llava_state_dict(released, config)
    model.load_state_dict(converted, strict=True)
    experts = model.decoder_layers[2].mlp.moe.experts
    torch.testing.assert_close(experts.gate_up_proj[1, :48], released["model.layers.2.mlp.deepspeed_moe.experts.deepspeed_experts.1.gate_proj.weight"])
    torch.testing.assert_close(experts.gate_up_proj[1, 48:], released["model.layers.2.mlp.deepspeed_moe.experts.deepspeed_experts.1.up_proj.weight"])


# -- presets (meta device) --------------------------------------------------------------------------------
@pytest.mark.parametrize("module, name, key", [
    ("zoo.models.moiie.presets", "phi3-mini-siglip", "activated"),
    ("zoo.models.moiie.presets", "llama3-8b-siglip", "activated"),
    ("zoo.models.moe_llava.presets", "phi2x4-clip336", "activated_without_tower"),
])
def test_presets_match_published_activated_parameters(module, name, key):
    import importlib

    counts = importlib.import_module(module).counts(name)
    print(f"{name}: total {counts['total'] / 1e9:.2f}B, activated {counts[key] / 1e9:.3f}B "
          f"(published {counts['published_activated'] / 1e9}B)")
    assert abs(counts[key] / counts["published_activated"] - 1) < 0.02
