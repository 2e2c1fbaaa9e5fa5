"""MoVA's two-pass generate: pass 1 answers the routing prompt (routing LoRA on), its text becomes the expert
mask, pass 2 answers with it; both KV-cached passes equal an uncached greedy loop over full sequences."""
import pytest
import torch

from tests.tiny_mova import image, tiny_model


def steer_routing_answer_(model, token_id: int, dim: int = 0) -> None:
    """Make the routing LoRA (on lm_head) force `token_id` in the routing pass only: residual dimension `dim` is
    held at a positive constant (every embedding and image token writes it, no layer changes it), and the LoRA
    reads it into that token's logit."""
    lm = model.language_model
    with torch.no_grad():
        lm.model.embed_tokens.weight[:, dim] = 3.0
        for layer in lm.model.layers:
            layer.self_attn.o_proj.weight[dim] = 0
            layer.mlp.down_proj.weight[dim] = 0
        model.projector[2].weight[dim] = 0
        model.projector[2].bias[dim] = 3.0
        pair = model.routing_lora.pairs["lm_head"]
        pair.lora_A.weight.zero_()
        pair.lora_A.weight[0, dim] = 1.0
        pair.lora_B.weight.zero_()
        pair.lora_B.weight[token_id, 0] = 100.0


def greedy_loop(model, ids, steps: int, **inputs) -> torch.Tensor:
    """Uncached greedy decoding: the whole sequence (with the image) every step; generate's suppression of the
    <image> placeholder and its stop at EOS, nothing else."""
    eos = model.generation_config.eos_token_id
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, **inputs).logits[:, -1]
        logits[:, model.config.image_token_id] = float("-inf")
        token = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        if token.item() == eos:
            break
    return ids


@pytest.fixture(scope="module")
def steered(single_thread):
    model, processor = tiny_model(seed=3, routing_lora_rank=1, routing_lora_targets=["lm_head"])
    steer_routing_answer_(model, processor.tokenizer.convert_tokens_to_ids("B"))
    return model, processor


def test_two_pass_generate_with_kv_cache_equals_an_uncached_greedy_loop(steered):
    model, processor = steered
    batch = processor(images=[image(5)], questions=["what colour"])
    out = model.generate(**batch, tokenizer=processor.tokenizer, max_new_tokens=5, do_sample=False)
    question = dict(question_input_ids=batch["question_input_ids"], question_attention_mask=batch["question_attention_mask"])
    routed = greedy_loop(model, batch["routing_input_ids"], model.config.routing_max_new_tokens,
                         pixel_values=batch["pixel_values"], routing_pass=True, **question)
    assert torch.equal(out.routing_sequences, routed[:, batch["routing_input_ids"].shape[1]:])
    assert out.routing_answers == ["B B B B"]  # the routing LoRA's choice
    assert out.chosen_experts == [["DINO"]] and out.expert_mask.tolist() == [[False, True, False]]
    answered = greedy_loop(model, batch["input_ids"], 5, pixel_values=batch["pixel_values"],
                           expert_mask=out.expert_mask, **question)
    assert torch.equal(out.sequences, answered)
    assert "B" not in processor.tokenizer.decode(out.sequences[0, batch["input_ids"].shape[1]:]).split()  # LoRA off


def test_the_chosen_mask_is_what_pass_two_uses(steered):
    model, processor = steered
    batch = processor(images=[image(5)], questions=["what colour"])
    routed = model.generate(**batch, tokenizer=processor.tokenizer, max_new_tokens=4)
    given = model.generate(**batch, expert_mask=torch.tensor([False, True, False]), max_new_tokens=4)
    assert given.routing_answers is None and given.routing_sequences is None  # no routing pass
    assert torch.equal(given.sequences, routed.sequences)
    everything = model.generate(**batch, expert_mask=torch.ones(3, dtype=torch.bool), max_new_tokens=4)
    assert everything.chosen_experts == [["ConvNet", "DINO", "Faces"]]


def test_coarse_routing_without_its_inputs_says_what_is_missing(steered):
    model, processor = steered
    batch = processor(images=[image(5)], questions=["what colour"])
    with pytest.raises(ValueError, match="pass tokenizer="):
        model.generate(**batch, max_new_tokens=2)
    answer_only = {k: v for k, v in batch.items() if not k.startswith("routing")}
    with pytest.raises(ValueError, match="coarse routing needs routing_input_ids"):
        model.generate(**answer_only, tokenizer=processor.tokenizer, max_new_tokens=2)
