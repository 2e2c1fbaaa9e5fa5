"""KV-cached generate() of the vision-language wrapper against a loop that re-runs the whole sequence
(no cache) for every new token, for each system; batches with left padding; the gallery's greedy_answer."""
import pytest
import torch

import zoo  # noqa: F401  (registers the configs with the Auto classes)
from zoo.models.moe_llava import MoeLlavaConfig, MoeLlavaForConditionalGeneration
from zoo.models.moiie import MoiieConfig, MoiieForConditionalGeneration
from zoo.models.mote import MoteConfig, MoteForConditionalGeneration
from zoo.pipelines.vl_demo import greedy_answer

TOWER = {"kind": "timm", "name": "mobilenetv2_100", "image_size": 64}  # 2x2 grid: 4 image tokens
# a large init so the logits depend visibly on every layer (near-uniform logits would hide cache bugs)
LLAMA = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 32, "intermediate_size": 48,
         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64, "initializer_range": 0.2,
         "eos_token_id": None, "bos_token_id": None, "pad_token_id": 0}
IMAGE_ID = 63
NEW_TOKENS = 8

SYSTEMS = {
    "moiie": lambda: MoiieForConditionalGeneration(MoiieConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)),
    "moiie-lora": lambda: MoiieForConditionalGeneration(
        MoiieConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID, expert_lora_rank=2)),
    "mote": lambda: MoteForConditionalGeneration(MoteConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)),
    "mote-packed": lambda: MoteForConditionalGeneration(
        MoteConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID, expert_lora_rank=2)),
    "moe-llava": lambda: MoeLlavaForConditionalGeneration(
        MoeLlavaConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)),
}


def build(system):
    torch.manual_seed(0)
    model = SYSTEMS[system]().eval()
    with torch.no_grad():
        # upcycled experts start as identical copies (then routing cannot change the output) and the
        # routers nearly uniform: move both, as training does, so that a routing mistake shows
        for ffn in model.moe_feed_forwards():
            for p in ffn.moe.router.parameters():
                p.normal_(0, 1.0)
            for p in ffn.moe.experts.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * (0.3 * p.std() if p.std() > 0 else 0.3))
    return model.pack_experts_() if system == "mote-packed" else model


def prompt(model, text_before, text_after):
    return [*text_before, *[IMAGE_ID] * model.num_image_tokens(), *text_after]


def uncached_greedy(model, ids, pixels, steps):
    """The reference: the whole sequence (with the image) through the model for every new token."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, pixel_values=pixels).logits[:, -1]  # [B, V]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_cached_generate_equals_the_uncached_greedy_loop(system, single_thread):
    model = build(system)
    ids = torch.tensor([prompt(model, [5, 6], [7, 8, 9])])
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    lengths = []
    hook = model.language_model.model.register_forward_hook(
        lambda m, args, kwargs, out: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    generated = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=NEW_TOKENS, do_sample=False)
    hook.remove()
    assert lengths == [ids.shape[1]] + [1] * (NEW_TOKENS - 1)  # the prompt once, then one new token per step
    want = uncached_greedy(model, ids, pixels, NEW_TOKENS)
    assert generated.tolist() == want.tolist()
    assert len(set(want[0, ids.shape[1]:].tolist())) > 1  # not a degenerate repeat of one token

    # the gallery's helper: the same tokens, and the routing of the prompt as a plain forward computes it
    new_ids, routing = greedy_answer(model, ids, pixels, stop_ids=set(), max_new_tokens=NEW_TOKENS)
    assert new_ids == want[0, ids.shape[1]:].tolist()
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
    for (prompt_routing, modality_ids), ffn in zip(routing, model.moe_feed_forwards()):
        assert torch.equal(prompt_routing.indices, ffn.last_routing.indices)
        assert torch.equal(modality_ids, out.modality_ids.reshape(-1))
    stop = want[0, ids.shape[1] + 2].item()
    new_ids, _ = greedy_answer(model, ids, pixels, stop_ids={stop}, max_new_tokens=NEW_TOKENS)
    assert new_ids == want[0, ids.shape[1]: ids.shape[1] + want[0, ids.shape[1]:].tolist().index(stop)].tolist()


@pytest.mark.parametrize("system", ["moiie", "mote-packed", "moe-llava"])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(system, single_thread):
    model = build(system)
    prompts = [prompt(model, [5, 6, 10, 11], [7, 8, 9]), prompt(model, [12], [13])]
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batch = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=NEW_TOKENS,
                           do_sample=False)
    for row, p in enumerate(prompts):
        alone = uncached_greedy(model, torch.tensor([p]), pixels[row:row + 1], NEW_TOKENS)
        assert batch[row, width:].tolist() == alone[0, len(p):].tolist()


def test_greedy_answer_refuses_a_batch():
    model = build("moiie")
    ids = torch.tensor([prompt(model, [5], [6])] * 2)
    with pytest.raises(ValueError, match="one sample"):
        greedy_answer(model, ids, torch.randn(2, 3, 64, 64), stop_ids=set())


def test_routing_context_for_other_tokens_is_refused_not_read_as_text():
    """Ids for the 7-token prompt while a layer sees 1 new token: a clear error (it used to route the
    token silently as text); the model's own cached decoding sets ids for the new tokens."""
    model = build("moiie")
    ffn = model.decoder_layers[1].mlp
    hidden = torch.randn(1, 1, 32)
    with torch.no_grad(), model.routing_context.use(torch.ones(1, 7, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"modality_ids has shape \(1, 7\) but this MoE layer sees \(1, 1\)"):
            ffn(hidden)
    with torch.no_grad(), model.routing_context.use(torch.zeros(1, 1, dtype=torch.long)):
        ffn(hidden)
    assert 0 not in ffn.last_routing.indices.tolist()  # expert 0 is MoIIE's intra-vision expert: text cannot reach it