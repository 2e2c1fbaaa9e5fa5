"""UpcycledMoeForCausalLM as a Hugging Face model: round trips, generation, losses, what HF users try."""
import os

import pytest
import torch
from tiny_decoders import tiny_decoder, token_ids
from torch.nn import functional as F
from transformers import AutoModelForCausalLM
from transformers.generation.streamers import BaseStreamer

import zoo  # noqa: F401  (registers zoo_upcycled_moe)
from zoo.models.upcycled import UpcycledMoeConfig, UpcycledMoeForCausalLM
from zoo.upcycling.plan import PLANS, UpcyclePlan

MODALITY_PLAN = UpcyclePlan(num_experts=4, num_experts_per_tok=2, router="modality",
                            modality_experts={"text": [0], "image": [3]}, shared_experts=[1, 2], layers="odd")


def upcycled(arch="llama", plan="top2-of-4", **overrides):
    return UpcycledMoeForCausalLM.from_dense(tiny_decoder(arch, **overrides), plan).eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "phi3", "gpt2"])
def test_save_pretrained_round_trips_through_auto_model(tmp_path, arch):
    model = upcycled(arch)
    ids = token_ids()
    expected = model(ids).logits
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "generation_config.json", "model.safetensors"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is UpcycledMoeForCausalLM and loaded.config.text_config.model_type == arch
    torch.testing.assert_close(loaded(ids).logits, expected, atol=1e-5, rtol=0)


def test_from_dense_computes_the_dense_function_and_config_validates():
    dense = tiny_decoder()
    ids = token_ids()
    reference = dense(ids).logits
    model = UpcycledMoeForCausalLM.from_dense(dense, "top2-of-4")
    torch.testing.assert_close(model(ids).logits, reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="UpcyclePlan.num_experts"):
        UpcycledMoeConfig(text_config=dense.config.to_dict(), plan={"num_experts": -1})
    with pytest.raises(ValueError, match="text_config: architecture 'opt' cannot be upcycled"):
        UpcycledMoeConfig(text_config={"model_type": "opt"})
    assert not hasattr(model.config, "top_k")


def test_generate_with_cache_matches_without_cache():
    model = upcycled(plan="xmoe")
    prompt = token_ids(2, 5)
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_modality_ids_route_and_follow_generation():
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(), MODALITY_PLAN).eval()
    prompt = token_ids(1, 6)
    modality = torch.tensor([[1, 1, 1, 0, 0, 0]])
    model(prompt, modality_ids=modality)
    for _, ffn in model.moe_layers():
        used = ffn.last_routing.indices[ffn.last_routing.mask].view(6, 2)
        assert (used[:3] != 0).all() and (used[3:] != 3).all()  # image never uses the text expert and vice versa
    cached = model.generate(prompt, modality_ids=modality, max_new_tokens=6, do_sample=False, pad_token_id=0)
    uncached = model.generate(prompt, modality_ids=modality, max_new_tokens=6, do_sample=False, use_cache=False,
                              pad_token_id=0)
    assert torch.equal(cached, uncached)
    with pytest.raises(ValueError, match=r"modality_ids must have shape \(1, 6\)"):
        model(prompt, modality_ids=modality[:, :4])
    for wrong in (modality.flatten(), modality.T, torch.cat([modality, modality[:, :1]], dim=1)):
        with pytest.raises(ValueError, match=r"modality_ids must have shape \(1, 6\) like the input_ids"):
            model.generate(prompt, modality_ids=wrong, max_new_tokens=2, do_sample=False, pad_token_id=0)


def test_inputs_embeds_equal_input_ids():
    model = upcycled()
    ids = token_ids()
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits)


def naive_switch_loss(router_logits, k):
    """E * sum_e f_e * P_e per layer with a loop over tokens (f_e: routed slots per token)."""
    losses = []
    for logits in router_logits:
        probs = logits.softmax(-1)
        tokens, experts = probs.shape
        counts = torch.zeros(experts)
        for t in range(tokens):
            for e in probs[t].topk(k).indices.tolist():
                counts[e] += 1
        losses.append(experts * (counts / tokens * probs.mean(0)).sum())
    return torch.stack(losses).mean()


def test_aux_loss_is_added_whenever_labels_are_given():
    model = upcycled(plan="moe_llava")
    ids = token_ids()
    out = model(ids, labels=ids)  # no output_router_logits
    assert out.router_logits is None
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), ids[:, 1:].reshape(-1))
    with_logits = model(ids, labels=ids, output_router_logits=True)
    assert len(with_logits.router_logits) == 2 and with_logits.router_logits[0].shape == (18, 4)
    aux = naive_switch_loss(with_logits.router_logits, k=2)
    torch.testing.assert_close(out.aux_loss, aux, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ce + 0.01 * aux, atol=1e-5, rtol=1e-5)
    model.config.router_aux_loss_coef = 0.0
    torch.testing.assert_close(model(ids, labels=ids).loss, ce, atol=1e-5, rtol=1e-5)


def test_output_router_logits_during_generate():
    model = upcycled()
    out = model.generate(token_ids(1, 4), max_new_tokens=3, do_sample=False, output_router_logits=True,
                         pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    assert out.sequences.shape == (1, 7)


class CollectingStreamer(BaseStreamer):
    def __init__(self):
        self.tokens = []

    def put(self, value):
        self.tokens.extend(value.reshape(-1).tolist())

    def end(self):
        self.tokens.append("end")


def test_generate_with_a_streamer():
    model = upcycled()
    prompt = token_ids(1, 4)
    streamer = CollectingStreamer()
    out = model.generate(prompt, max_new_tokens=5, do_sample=False, streamer=streamer, pad_token_id=0)
    assert streamer.tokens == out[0].tolist() + ["end"]


def test_bf16_device_map_and_sharded_checkpoints(tmp_path):
    model = upcycled("qwen3")
    ids = token_ids()
    expected = model(ids).logits
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in os.listdir(tmp_path)
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, expected, atol=0, rtol=0)
    bf16 = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(bf16(ids).logits.float(), expected, atol=0.3, rtol=0.05)
    mapped = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="auto")
    assert "UpcycledFFN" in mapped._no_split_modules and "Qwen3DecoderLayer" in mapped._no_split_modules
    torch.testing.assert_close(mapped(ids).logits, expected, atol=0, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    plan = MODALITY_PLAN
    ids, modality = token_ids(), torch.randint(0, 2, (2, 9))

    def grads(checkpointing):
        model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(), plan).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, labels=ids, modality_ids=modality).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and any("moe.router" in n for n in plain)
    assert any("moe.experts.gate_up_proj" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_resize_token_embeddings_survives_a_round_trip(tmp_path):
    model = upcycled()
    model.resize_token_embeddings(101)
    assert model.config.text_config.vocab_size == 101
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[100, 5, 7]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_xmoe_split_threshold_one_loads_and_preserves(tmp_path):
    dense = tiny_decoder()
    ids = token_ids()
    reference = dense(ids).logits
    model = UpcycledMoeForCausalLM.from_dense(dense, PLANS["xmoe"].replace(threshold=1.0))
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, reference, atol=1e-5, rtol=0)


def test_built_from_config_the_experts_are_copies_and_routers_follow_the_plan():
    from tiny_decoders import tiny_config

    model = UpcycledMoeForCausalLM(UpcycledMoeConfig(text_config=tiny_config("llama"), plan=PLANS["top2-of-4"]))
    moe = model.model.model.layers[2].mlp.moe
    for e in range(1, 4):  # post_init's generic init did not touch the upcycled copies
        torch.testing.assert_close(moe.experts.gate_up_proj[e], moe.experts.gate_up_proj[0], atol=0, rtol=0)
    assert 0.01 < moe.router.weight.std().item() < 0.03  # router_init "normal", std 0.02
    xmoe = UpcycledMoeForCausalLM(UpcycledMoeConfig(text_config=tiny_config("llama"), plan=PLANS["xmoe"]))
    assert torch.count_nonzero(xmoe.model.model.layers[0].mlp.moe.router.weight) == 0  # router_init "zeros"


def test_router_losses_are_skipped_in_inference_and_keep_their_gradient_when_read_late():
    """Inference without labels never computes the router losses (aux_loss None, as transformers' MoEs without
    output_router_logits); losses read after their forward are computed in that forward's grad mode and equal
    the loss computed directly from the routing."""
    from zoo import TopKRouter
    from zoo.core.losses import load_balancing_loss

    model = upcycled(plan="moe_llava")
    ids = token_ids()
    with torch.no_grad():
        out = model(ids)
    assert out.aux_loss is None
    assert "not computed" in repr(model.moe_layers()[0][1].last_routing.aux_losses)
    with torch.no_grad():
        with_logits = model(ids, output_router_logits=True)
    torch.testing.assert_close(with_logits.aux_loss, naive_switch_loss(with_logits.router_logits, k=2), atol=1e-5, rtol=1e-5)

    router = TopKRouter(8, 4, top_k=2)
    hidden = torch.randn(6, 8)
    routing = router(hidden)  # grad mode
    with torch.no_grad():
        late = routing.aux_losses["load_balance"]
    probs = torch.softmax(routing.logits, dim=-1)
    assert late.requires_grad
    torch.testing.assert_close(late, load_balancing_loss(probs, routing.indices, routing.mask))
