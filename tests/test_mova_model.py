"""MoVA's model: identity at init (zero-initialised layers), the expert mask through zoo.core's external-mask
feature (a forbidden expert gets weight 0 and cannot change the output), the gate against a naive reference,
the routing LoRA on in the routing pass only, the save / load round trip through the Auto classes, clear errors."""
import copy

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from tests.tiny_mova import EXPERTS, image, tiny_config, tiny_model
from zoo.core.routing import Router
from zoo.models.mova import MovaConfig, MovaForConditionalGeneration
from zoo.models.mova.vision_experts import expert_tokens


@pytest.fixture(scope="module")
def trained(single_thread):
    return tiny_model(seed=0)


def answer_inputs(processor, seeds=(0,), question="what colour"):
    batch = processor(images=[image(s) for s in seeds], questions=[question] * len(seeds))
    return {k: v for k, v in batch.items() if not k.startswith("routing")}


def logits(model, inputs, mask):
    with torch.no_grad():
        return model(**inputs, expert_mask=mask).logits


def test_at_init_every_block_is_the_identity_so_the_experts_change_nothing(single_thread):
    model, processor = tiny_model(seed=1, trained=False)
    inputs = answer_inputs(processor, seeds=(0, 1))
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert torch.equal(logits(model, inputs, none), logits(model, inputs, torch.ones(2, 3, dtype=torch.bool)))
    with torch.no_grad():  # the adapter's output is the base encoder's tokens, exactly
        pixels = inputs["pixel_values"]
        base = expert_tokens(model.vision_tower(pixels), model.grid_side)
        experts = [expert_tokens(e(pixels), model.grid_side) for e in model.vision_experts]
        text = model.question_embeddings(2, question_input_ids=inputs["question_input_ids"])
        fused, routings = model.adapter(base, experts, text, torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(fused, base)
    # the gate starts uniform over the allowed experts: top-2 of three equal ones, ties to the lower index
    assert torch.allclose(routings[0].dense_weights(), torch.tensor([[0.5, 0.5, 0.0]] * 2))


def test_a_trained_adapter_does_use_the_experts(trained):
    model, processor = trained
    inputs = answer_inputs(processor)
    assert not torch.allclose(logits(model, inputs, torch.zeros(3, dtype=torch.bool)),
                              logits(model, inputs, torch.ones(3, dtype=torch.bool)))


def test_a_forbidden_expert_gets_zero_gate_weight_and_its_features_cannot_change_the_output(trained):
    model, processor = trained
    inputs = answer_inputs(processor, seeds=(0, 1))
    mask = torch.tensor([[True, True, False], [False, True, True]])  # sample 0 forbids expert 2, sample 1 expert 0
    out = model(**inputs, expert_mask=mask)
    for weights in out.gate_weights:
        assert torch.all(weights[~mask] == 0) and torch.allclose(weights.sum(-1), torch.ones(2))
    changed = copy.deepcopy(model)
    with torch.no_grad():
        for p in changed.vision_experts[2].parameters():
            p.add_(torch.randn_like(p))  # expert 2's features change for every image
    new = changed(**inputs, expert_mask=mask).logits
    assert torch.equal(new[0], out.logits[0])  # sample 0 does not use expert 2: bit-identical
    assert not torch.allclose(new[1], out.logits[1])  # sample 1 does


def test_the_mask_reaches_every_gate_through_the_routing_context_and_results_are_recorded_there(trained):
    model, processor = trained
    inputs = answer_inputs(processor)
    mask = torch.tensor([True, False, True])
    out = model(**inputs, expert_mask=mask)
    for block, weights in zip(model.adapter.blocks, out.gate_weights):
        assert isinstance(block.gate, Router)  # the core's router, with its external mask
        recorded = model.routing_context.result(block.gate)
        assert torch.equal(recorded.dense_weights(), weights)
        assert torch.isneginf(recorded.logits[0, 1])  # forbidden = -inf, as zoo.core.routing applies it
    assert model.routing_context.current().expert_mask is None  # per-call: nothing left behind


def test_the_gate_matches_a_naive_masked_softmax_top_k(trained):
    model, processor = trained
    inputs = answer_inputs(processor, seeds=(0, 1))
    mask = torch.tensor([[True, True, True], [True, False, True]])
    out = model(**inputs, expert_mask=mask)
    with torch.no_grad():
        pixels = inputs["pixel_values"]
        x = expert_tokens(model.vision_tower(pixels), model.grid_side) + model.adapter.pos_embed
        text = model.question_embeddings(2, question_input_ids=inputs["question_input_ids"])
        first, _, last = model.adapter.blocks[0].gate.net
        logits = last(F.gelu(first(torch.cat([text, x.mean(1)], -1)))).masked_fill(~mask, -1e6)  # the release's -1e6
        probs = logits.softmax(-1)
        top = probs.topk(2, dim=-1)
        naive = torch.zeros_like(probs).scatter(1, top.indices, top.values / top.values.sum(-1, keepdim=True))
    assert torch.allclose(out.gate_weights[0], naive, atol=1e-6)


@pytest.mark.parametrize("kind", ["routing", "answer"])
def test_each_pass_lora_acts_in_its_own_pass_only(single_thread, kind):
    model, processor = tiny_model(seed=2, **{f"{kind}_lora_rank": 2})
    batch = processor(images=[image(0)], questions=["what colour"])
    routing = dict(input_ids=batch["routing_input_ids"], attention_mask=batch["routing_attention_mask"],
                   pixel_values=batch["pixel_values"], routing_pass=True)
    answer = answer_inputs(processor)
    before = {"routing": model(**routing).logits, "answer": model(**answer).logits}
    with torch.no_grad():
        for name, p in getattr(model, f"{kind}_lora").named_parameters():
            p.copy_(torch.randn_like(p))
    after = {"routing": model(**routing).logits, "answer": model(**answer).logits}
    other = "answer" if kind == "routing" else "routing"
    assert not torch.allclose(after[kind], before[kind])
    assert torch.equal(after[other], before[other])
    assert not any(k.startswith("language_model") and "lora" in k for k in model.state_dict())  # LLM keys unchanged


def test_save_and_load_through_the_auto_classes_gives_identical_outputs(trained, tmp_path):
    model, processor = trained
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is MovaConfig
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(loaded) is MovaForConditionalGeneration and type(AutoModel.from_pretrained(tmp_path)) is type(loaded)
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded_processor) is type(processor) and reloaded_processor.expert_names == processor.expert_names
    assert reloaded_processor.num_routing_tokens == processor.num_routing_tokens
    inputs = answer_inputs(reloaded_processor, seeds=(0, 1))
    assert torch.equal(inputs["input_ids"], answer_inputs(processor, seeds=(0, 1))["input_ids"])
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.equal(logits(loaded, inputs, mask), logits(model, inputs, mask))


def test_an_empty_or_malformed_expert_pool_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"MovaConfig\.vision_experts is empty"):
        tiny_config(64, 60, vision_experts=[])
    with pytest.raises(ValueError, match=r"MovaConfig\.vision_experts\[0\] must be a dict with exactly the keys"):
        tiny_config(64, 60, vision_experts=[{"name": "x", "tower": EXPERTS[0]["tower"]}])
    with pytest.raises(ValueError, match=r"MovaConfig\.vision_experts\[1\]\['tower'\] must be a spec dict with kind"):
        tiny_config(64, 60, vision_experts=[EXPERTS[0], {**EXPERTS[1], "tower": {"kind": "magic"}}])
    with pytest.raises(ValueError, match=r"MovaConfig\.top_k_experts \(2\) must be <= the number of vision_experts \(1\)"):
        tiny_config(64, 60, vision_experts=EXPERTS[:1], max_routed_experts=1)
    with pytest.raises(ValueError, match="names must differ"):
        tiny_config(64, 60, vision_experts=[EXPERTS[0], {**EXPERTS[1], "name": "convnet"}])


def test_bad_images_masks_and_missing_questions_get_clear_errors(trained):
    model, processor = trained
    inputs = answer_inputs(processor)
    with pytest.raises(ValueError, match=r"pixel_values must be \[n_images, 3, H, W\], got \(3, 32, 32\)"):
        model(**{**inputs, "pixel_values": inputs["pixel_values"][0]})
    with pytest.raises(ValueError, match="pixel_values holds NaN"):
        model(**{**inputs, "pixel_values": torch.full_like(inputs["pixel_values"], float("nan"))})
    with pytest.raises(TypeError, match="pixel_values must be floating point"):
        model(**{**inputs, "pixel_values": inputs["pixel_values"].to(torch.uint8)})
    with pytest.raises(ValueError, match=r"expert_mask must have shape \(3,\) or \(1, 3\).*got \(2, 3\)"):
        model(**inputs, expert_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expert_mask must have shape .*got \(4,\)"):
        model(**inputs, expert_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool tensor"):
        model(**inputs, expert_mask=torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="the gate reads the question: pass question_input_ids"):
        model(**{k: v for k, v in inputs.items() if not k.startswith("question")})
    with pytest.raises(ValueError, match="not an image PIL can read"):
        processor(images=[b"not an image"], questions=["what colour"])
    with pytest.raises(ValueError, match=r"1 image\(s\) given but the text has 2"):
        processor(images=[image(0)], questions=["what colour", "what shape"])


def test_the_packaged_mtcnn_expert_holds_facenets_pnet_weights():
    import importlib.util

    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.6.0)")
    from zoo.models.mova.vision_experts import build_expert_tower, mtcnn_pnet_path

    expert = build_expert_tower({"kind": "facenet_mtcnn", "image_size": 48, "weights": "packaged"})
    state = torch.load(mtcnn_pnet_path(), weights_only=True)
    assert torch.equal(expert.tower.conv3.weight, state["conv3.weight"])
    assert not any(p.requires_grad for p in expert.parameters())
    pixels = torch.rand(1, 3, 48, 48)
    x = (pixels - 127.5 / 255) / (128 / 255)  # facenet's (p - 127.5) / 128
    for conv, act in (("conv1", "prelu1"), ("conv2", "prelu2"), ("conv3", "prelu3")):
        x = F.prelu(F.conv2d(x, state[f"{conv}.weight"], state[f"{conv}.bias"]), state[f"{act}.weight"])
        if conv == "conv1":
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    assert torch.allclose(expert(pixels), x, atol=1e-5)


def test_without_a_question_encoder_the_gate_reads_text_embeds_of_the_configured_width(single_thread):
    model, processor = tiny_model(seed=5, question_encoder=None, text_embed_size=5)
    inputs = {k: v for k, v in answer_inputs(processor).items() if not k.startswith("question")}
    a, b = torch.randn(1, 5), torch.randn(1, 5)
    assert not torch.equal(model(**inputs, text_embeds=a).gate_weights[0], model(**inputs, text_embeds=b).gate_weights[0])
    with pytest.raises(ValueError, match=r"text_embeds must be a float tensor \[n_images, 5\]"):
        model(**inputs, text_embeds=torch.randn(1, 4))
    with pytest.raises(ValueError, match="pass text_embeds \\(this config has no question_encoder\\)"):
        model(**inputs)
