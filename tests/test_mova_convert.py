"""The converter from the released `mova_llama` layout (models_b.md §1g), on a synthetic state dict written from
the reference key list, and its handling of the release's `topk` / `topk_experts` config bug."""
import warnings

import pytest
import torch
from transformers import BertModel, CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM

from tests.tiny_mova import CLIP, tiny_model
from zoo.models.mova.convert_mova import convert_mova_config, convert_mova_state_dict, top_k_experts
from zoo.models.mova.presets import LLAMA3_8B


def released_state_dict(model) -> dict[str, torch.Tensor]:
    """The released key list with the tiny model's shapes; random values. Independent parts are built from
    their own libraries (CLIP, BERT, Llama), the MoV-Adapter from the reference's names."""
    config, g = model.config, torch.Generator().manual_seed(0)
    dim, text = model.vision_tower.hidden_size, model.question_encoder.hidden_size
    channels = [e.hidden_size for e in model.vision_experts]
    inner = config.adapter_intermediate_size or int(8 * dim / 3)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    def linear(prefix, out, inp):
        return {f"{prefix}.weight": rand(out, inp), f"{prefix}.bias": rand(out)}

    def norm(prefix, size):
        return {f"{prefix}.weight": rand(size), f"{prefix}.bias": rand(size)}

    def attention(prefix, kv):
        return {**linear(f"{prefix}.q_proj", dim, dim), **linear(f"{prefix}.k_proj", dim, kv),
                **linear(f"{prefix}.v_proj", dim, kv), **linear(f"{prefix}.proj", dim, dim),
                **norm(f"{prefix}.inner_attn_ln", dim)}

    state = {"model.mm_projector.pos_embed": rand(1, model.grid_side ** 2, dim)}
    for i in range(config.num_adapter_blocks):
        p = f"model.mm_projector.blocks.{i}"
        for j, c in enumerate(channels):
            state.update(attention(f"{p}.cross_attn.{j}", c), **norm(f"{p}.norm1.{j}", dim), **norm(f"{p}.norm2.{j}", c))
        state.update(attention(f"{p}.self_attn", dim), **norm(f"{p}.norm3", dim), **norm(f"{p}.norm4", dim))
        state.update(linear(f"{p}.mlp.w1", inner, dim), **linear(f"{p}.mlp.w2", inner, dim),
                     **norm(f"{p}.mlp.ffn_ln", inner), **linear(f"{p}.mlp.w3", dim, inner))
        state.update(linear(f"{p}.gate.0", dim, text + dim), **linear(f"{p}.gate.2", config.num_experts, dim))
    state.update(linear("model.mm_projector.mlp.0", config.text_config.hidden_size, dim),
                 **linear("model.mm_projector.mlp.2", config.text_config.hidden_size, config.text_config.hidden_size))
    bert = BertModel(model.question_encoder.model.config)  # with its pooler, as the release's BertModel has
    state.update({f"model.mm_projector.text_encoder.bert.{k}": v for k, v in bert.state_dict().items()})
    # the downsampler: timm RegStage modules (the layout is assumed, see convert_mova)
    state.update({f"model.mm_projector.downsample.{k}": rand(*v.shape) for k, v in model.downsample.state_dict().items()})
    clip = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in CLIP["config"].items() if k != "model_type"}))
    state.update({f"model.vision_tower.vision_tower_0.vision_tower.{k}": v for k, v in clip.state_dict().items()
                  if not k.endswith("position_ids")})
    for j in range(1, config.num_experts + 1):  # the experts' own layouts (DINOv2 hub code, SAM, ...): opaque here
        state[f"model.vision_tower.vision_tower_{j}.blocks.0.weight"] = rand(4)
    llama = LlamaForCausalLM(model.language_model.config)
    state.update({k: v for k, v in llama.state_dict().items()})
    return state


def test_a_released_state_dict_converts_and_loads_with_only_the_expert_towers_left_out(single_thread):
    model, _ = tiny_model(seed=4)
    released = released_state_dict(model)
    converted = convert_mova_state_dict(released, model.config)
    result = model.load_state_dict(converted.state_dict, strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("vision_experts.") for k in result.missing_keys) and result.missing_keys
    assert torch.equal(model.adapter.blocks[1].gate.net[2].weight, released["model.mm_projector.blocks.1.gate.2.weight"])
    assert torch.equal(model.adapter.blocks[0].cross_attn[2].k_proj.weight,
                       released["model.mm_projector.blocks.0.cross_attn.2.k_proj.weight"])
    assert torch.equal(model.language_model.lm_head.weight, released["lm_head.weight"])
    assert torch.equal(model.projector[2].bias, released["model.mm_projector.mlp.2.bias"])
    left = converted.left_out
    assert sorted(k for k in left if "vision_tower_" in k) == [f"model.vision_tower.vision_tower_{j}.blocks.0.weight"
                                                               for j in (1, 2, 3)]
    assert any("pooler" in k for k in left)
    assert len(converted.state_dict) + len(left) == len(released)  # nothing silently dropped


def test_an_unknown_released_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="1 keys this converter does not know: model.mm_projector.mystery"):
        convert_mova_state_dict({"model.mm_projector.mystery": torch.zeros(1)})


def test_the_topk_bug_reads_what_the_release_meant():
    assert top_k_experts({"topk": 2}) == 2  # written as topk, which the release's adapter never reads
    assert top_k_experts({"topk_experts": 1}) == 1
    assert top_k_experts({"topk": 2, "topk_experts": 2}) == 2
    with pytest.raises(ValueError, match="topk_experts=3.*topk=2.*disagree"):
        top_k_experts({"topk": 2, "topk_experts": 3})
    with pytest.warns(UserWarning, match="neither topk_experts nor topk"):
        assert top_k_experts({}) == 3


def test_a_released_config_converts_to_the_paper_shape():
    released = {"model_type": "mova_llama", "mm_projector_type": "mov_adapter", "topk": 2, "num_projector_layers": 3,
                "image_feat_size": 48, "num_routing_tokens": 144, "expert_channels": [1536, 512, 256, 1536, 768, 768, 256],
                "mm_vision_tower": ["clip"] + [f"expert{j}" for j in range(7)],
                **{k: v for k, v in LLAMA3_8B.items() if k != "model_type"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = convert_mova_config(released, image_token_id=128256)
    assert config.top_k_experts == 2 and config.num_experts == 7 and config.text_config.hidden_size == 4096
    with pytest.raises(ValueError, match="image_feat_size 24 != the base grid 48"):
        convert_mova_config({**released, "image_feat_size": 24})
    with pytest.raises(ValueError, match="mm_vision_tower lists 3 towers"):
        convert_mova_config({**released, "mm_vision_tower": ["a", "b", "c"]})
