"""The converters of Uni-MoE's two released layouts, on synthetic state dicts whose MoE / connector key names
are written out as the release spells them (shared/reference/models_a.md §1g), not derived from the
converter's rules: the converted model must compute what the released weights (LoRA merged by hand) compute."""
import pytest
import torch

from tests.tiny_unimoe import clip, image, tiny_config, tiny_processor
from zoo.models.unimoe import UniMoeForConditionalGeneration
from zoo.models.unimoe.convert_unimoe import (convert_unimoe_8e_state_dict, convert_unimoe_v1_state_dict,
                                              global_expert_index)

pytestmark = pytest.mark.usefixtures("single_thread")
H, I, E, LAYERS = 32, 64, 4, 2


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3


def released_common(model):
    """The non-MoE part as the release names it: Llama under `model.`, towers, projector, Q-Former, queries."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("language_model.model.") and ".mlp." not in key:
            state["model." + key[len("language_model.model."):]] = value  # a Llama's own key names
        elif key.startswith("language_model.lm_head."):
            state["lm_head." + key[len("language_model.lm_head."):]] = value
        elif key.startswith("vision_tower.model."):
            state["model.vision_tower.vision_tower." + key[len("vision_tower.model."):]] = value  # CLIP's keys
        elif key.startswith("audio_tower.encoder."):
            state["model.audio_tower.audio_tower." + key[len("audio_tower.encoder."):]] = value  # WhisperEncoder's keys
        elif key.startswith("audio_aligner.decoder."):
            state["model.mm_audio_aligner.decoder.audio_decoder." + key[len("audio_aligner.decoder."):]] = value
    state["model.mm_audio_aligner.decoder.audio_decoder.embed_tokens.weight"] = torch.zeros(51865, 16)  # unused
    state["model.audio_tower.encoder.conv1.weight"] = torch.zeros(16, 80, 3)  # WhisperModel's unused random copy
    state["model.mm_projector.0.weight"] = model.connector.projector[0].weight
    state["model.mm_projector.0.bias"] = model.connector.projector[0].bias
    state["model.mm_projector.2.weight"] = model.connector.projector[2].weight
    state["model.mm_projector.2.bias"] = model.connector.projector[2].bias
    state["model.mm_audio_aligner.projector.weight"] = model.audio_aligner.projector.weight
    state["model.mm_audio_aligner.projector.bias"] = model.audio_aligner.projector.bias
    state["model.query_tokens"] = model.audio_aligner.query_tokens
    return {k: v.detach().clone() for k, v in state.items()}


def reference_model(processor, sources):
    torch.manual_seed(0)
    model = UniMoeForConditionalGeneration(tiny_config(processor, expert_sources=sources)).eval()
    with torch.no_grad():
        for layer, ffn in enumerate(model.moe_feed_forwards()):
            ffn.moe.router.weight.copy_(randn(E, H, seed=100 + layer) * 10)
    return model


def outputs(model, processor):
    batch = processor(text=processor.prompt("what", media=("image", "audio")), images=image(), audio=clip(0.4),
                      sampling_rate=16_000)
    with torch.no_grad():
        return model(**batch).logits


def converted_model(processor, sources, state):
    model = UniMoeForConditionalGeneration(tiny_config(processor, expert_sources=sources), load_tower_weights=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_v1_layout_with_its_peft_adapter_merged(processor):
    sources = ["mlp_base", "mlp_base1", "mlp_base4", "mlp_base7"]
    model = reference_model(processor, sources)
    state = released_common(model)
    for layer in range(LAYERS):
        state[f"model.layers.{layer}.mlp.gate.weight"] = model.moe_feed_forwards()[layer].moe.router.weight.detach().clone()
        for e in range(E):
            state[f"model.layers.{layer}.mlp.experts.{e}.gate_proj.weight"] = randn(I, H, seed=10 * layer + e)
            state[f"model.layers.{layer}.mlp.experts.{e}.up_proj.weight"] = randn(I, H, seed=50 + 10 * layer + e)
            state[f"model.layers.{layer}.mlp.experts.{e}.down_proj.weight"] = randn(H, I, seed=90 + 10 * layer + e)
    q_a, q_b, d_a, d_b = randn(2, H, seed=1), randn(H, 2, seed=2), randn(2, I, seed=3), randn(H, 2, seed=4)
    adapter = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": q_a,
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": q_b,
               "base_model.model.model.layers.1.mlp.experts.2.down_proj.lora_A.weight": d_a,
               "base_model.model.model.layers.1.mlp.experts.2.down_proj.lora_B.weight": d_b}
    # the expected model: the released weights, the adapter merged by hand (alpha / r = 8 / 2 = 4)
    with torch.no_grad():
        for layer, ffn in enumerate(model.moe_feed_forwards()):
            for e in range(E):
                gate = state[f"model.layers.{layer}.mlp.experts.{e}.gate_proj.weight"]
                up = state[f"model.layers.{layer}.mlp.experts.{e}.up_proj.weight"]
                down = state[f"model.layers.{layer}.mlp.experts.{e}.down_proj.weight"]
                ffn.moe.experts.gate_up_proj[e] = torch.cat([gate, up])
                ffn.moe.experts.down_proj[e] = down + (4 * d_b @ d_a if (layer, e) == (1, 2) else 0)
        model.language_model.model.layers[0].self_attn.q_proj.weight += 4 * q_b @ q_a
    converted = convert_unimoe_v1_state_dict(state, model.config, adapter, {"r": 2, "lora_alpha": 8})
    torch.testing.assert_close(outputs(converted_model(processor, sources, converted), processor), outputs(model, processor),
                               atol=1e-5, rtol=1e-5)
    assert not converted["language_model.model.layers.0.mlp.moe.experts.gate_up_lora_B"].any()  # fresh deltas: B = 0
    with pytest.raises(ValueError, match=r"the router has 3 experts, config num_experts=4"):
        convert_unimoe_v1_state_dict({**state, "model.layers.0.mlp.gate.weight": torch.zeros(3, H)}, model.config)
    with pytest.raises(ValueError, match="convert into a config with expert_sources"):
        convert_unimoe_v1_state_dict(state, tiny_config(processor))
    with pytest.raises(ValueError, match=r"adapter adapts model.layers.0.self_attn.x_proj, but the state dict has no"):
        convert_unimoe_v1_state_dict(state, model.config, {
            "base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight": q_a,
            "base_model.model.model.layers.0.self_attn.x_proj.lora_B.weight": q_b}, {"r": 2, "lora_alpha": 8})


def test_the_local_to_global_expert_index_of_deepspeed():
    assert [global_expert_index(rank, local, 8, 4) for rank in range(4) for local in range(2)] == list(range(8))
    assert global_expert_index(1, 0, 8, 2) == 4
    with pytest.raises(ValueError, match="each of the 2 ranks holds 4 experts"):
        global_expert_index(0, 4, 8, 2)


def test_8e_layout_lora_per_expert_file_and_base_ffns_from_mlp_dir(processor):
    sources = ["mlp_audiocap", "mlp_base", "mlp_base4", "mlp_base"]  # slots 1 and 3 share a source
    model = reference_model(processor, sources)
    state = released_common(model)
    mlp_dir = {name: {} for name in set(sources)}
    for s, name in enumerate(sorted(mlp_dir)):
        for layer in range(LAYERS):
            mlp_dir[name][f"model.layers.{layer}.mlp.gate_proj.weight"] = randn(I, H, seed=200 + 10 * s + layer)
            mlp_dir[name][f"model.layers.{layer}.mlp.up_proj.weight"] = randn(I, H, seed=300 + 10 * s + layer)
            mlp_dir[name][f"model.layers.{layer}.mlp.down_proj.weight"] = randn(H, I, seed=400 + 10 * s + layer)
    files = {e: {} for e in range(E)}  # {e}_mlp_experts.bin, saved with ep_size 2: experts 0, 1 on rank 0, 2, 3 on rank 1
    for layer in range(LAYERS):
        state[f"model.layers.{layer}.mlp.deepspeed_moe.gate.wg.weight"] = \
            model.moe_feed_forwards()[layer].moe.router.weight.detach().clone()
        for e, local in ((0, 0), (1, 1), (2, 0), (3, 1)):
            prefix = f"model.layers.{layer}.mlp.deepspeed_moe.experts.deepspeed_experts.{local}"
            for p, (proj, rows, cols) in enumerate((("gate_proj", I, H), ("up_proj", I, H), ("down_proj", H, I))):
                files[e][f"{prefix}.{proj}_lora_A.weight"] = randn(8, cols, seed=500 + 100 * layer + 10 * e + p)
                files[e][f"{prefix}.{proj}_lora_B.weight"] = randn(rows, 8, seed=600 + 100 * layer + 10 * e + p)
    with torch.no_grad():  # expected: expert e = its source FFN + (16 / 8) B A per projection
        for layer, ffn in enumerate(model.moe_feed_forwards()):
            for e, local in ((0, 0), (1, 1), (2, 0), (3, 1)):
                prefix = f"model.layers.{layer}.mlp.deepspeed_moe.experts.deepspeed_experts.{local}"
                merged = {proj: mlp_dir[sources[e]][f"model.layers.{layer}.mlp.{proj}.weight"]
                          + 2 * files[e][f"{prefix}.{proj}_lora_B.weight"] @ files[e][f"{prefix}.{proj}_lora_A.weight"]
                          for proj in ("gate_proj", "up_proj", "down_proj")}
                ffn.moe.experts.gate_up_proj[e] = torch.cat([merged["gate_proj"], merged["up_proj"]])
                ffn.moe.experts.down_proj[e] = merged["down_proj"]
    want = outputs(model, processor)
    converted = convert_unimoe_8e_state_dict(state, model.config, files, mlp_dir, ep_size=2, lora_alpha=16)
    torch.testing.assert_close(outputs(converted_model(processor, sources, converted), processor), want, atol=1e-5, rtol=1e-5)
    # the same tensors as DeepSpeed's per-rank shards
    shards = {0: {**files[0], **files[1]}, 1: {**files[2], **files[3]}}
    by_rank = convert_unimoe_8e_state_dict(state, model.config, shards, mlp_dir, ep_size=2, lora_alpha=16, by="rank")
    assert all(torch.equal(by_rank[k], converted[k]) for k in converted if "lora" not in k)
    with pytest.raises(ValueError, match=r"the file of expert 2 holds .* wrong ep_size or misnamed file"):
        convert_unimoe_8e_state_dict(state, model.config, files, mlp_dir, ep_size=1)
    with pytest.raises(ValueError, match=r"layer 0 expert 2: no gate_proj weight .* source 'mlp_base4'"):
        convert_unimoe_8e_state_dict(state, model.config, files, {**mlp_dir, "mlp_base4": {}}, ep_size=2)
