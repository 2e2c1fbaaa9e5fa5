"""Convert a released MoVA checkpoint (`zongzhuofan/llama3-mova-8b`, model_type "mova_llama",
MovaLlamaForCausalLM) to MovaForConditionalGeneration.

    config.json (mova_llama)  --convert_mova_config-->  MovaConfig     (Llama fields -> text_config; topk bug, below)
    state dict                --convert_mova_state_dict-->  ConvertedMova(state_dict, left_out)

    model.mm_projector.blocks.{i}.gate.{0,2}.*             -> adapter.blocks.{i}.gate.net.{0,2}.*
    model.mm_projector.blocks.{i}.*  (cross_attn.{j}.{q_proj,k_proj,v_proj,proj,inner_attn_ln}, norm1.{j}, norm2.{j},
                                      self_attn.*, mlp.{w1,w2,w3,ffn_ln}, norm3, norm4)  -> adapter.blocks.{i}.*
    model.mm_projector.pos_embed                           -> adapter.pos_embed
    model.mm_projector.text_encoder.bert.*                 -> question_encoder.model.*    (the pooler: left out)
    model.mm_projector.downsample.*                        -> downsample.*   (timm RegStage layout, assumed)
    model.mm_projector.mlp.{0,2}.*                         -> projector.{0,2}.*
    model.vision_tower.vision_tower_0.vision_tower.*       -> vision_tower.tower.tower.model.*   (CLIP-L, LLaVA's wrapper)
    model.vision_tower.vision_tower_{1..7}.*               -> left out: the experts are off-the-shelf checkpoints
                                                              in their own libraries' layouts; load them from those
    model.{embed_tokens,layers,norm}.*, lm_head.*          -> language_model.{model.*, lm_head.*}

Every released key is either converted or listed in `left_out` with the reason; an unknown key is an error.

The `topk` / `topk_experts` bug: the release's `initialize_vision_modules` writes `config.topk`, but the adapter
reads `config.topk_experts` (models_b.md §1g). `convert_mova_config` takes `topk_experts` when present, else
`topk` (what the author meant), and refuses a config where the two disagree.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from zoo.integrations.checkpoint_keys import rename

from .configuration_mova import CLIP_VIT_L14_672, PAPER_EXPERTS, MovaConfig

RULES = [
    ("model.mm_projector.pos_embed", "adapter.pos_embed"),
    ("model.mm_projector.blocks.", "adapter.blocks."),
    ("model.mm_projector.text_encoder.bert.", "question_encoder.model."),
    ("model.mm_projector.downsample.", "downsample."),
    ("model.mm_projector.mlp.", "projector."),
    ("model.vision_tower.vision_tower_0.vision_tower.", "vision_tower.tower.tower.model."),
    ("model.embed_tokens.", "language_model.model.embed_tokens."),
    ("model.layers.", "language_model.model.layers."),
    ("model.norm.", "language_model.model.norm."),
    ("lm_head.", "language_model.lm_head."),
]
_GATE = re.compile(r"^(adapter\.blocks\.\d+\.gate)\.(\d+)\.")
_EXPERT_TOWER = re.compile(r"^model\.vision_tower\.vision_tower_([1-9]\d*)\.")
_LEFT_OUT = {
    "model.mm_projector.text_encoder.bert.pooler.": "BERT's pooler: the gate reads the [CLS] hidden state, not the pooler",
    "model.mm_projector.text_encoder.bert.embeddings.position_ids": "a non-persistent buffer in transformers 5",
}
LLAMA_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act",
                "tie_word_embeddings", "bos_token_id", "eos_token_id")


@dataclass
class ConvertedMova:
    state_dict: dict[str, torch.Tensor]
    left_out: dict[str, str] = field(default_factory=dict)  # released key -> why it is not in state_dict


def top_k_experts(released: Mapping) -> int:
    """The gate's k from a released config, through its `topk` / `topk_experts` bug."""
    read, written = released.get("topk_experts"), released.get("topk")
    if read is not None and written is not None and read != written:
        raise ValueError(f"released MoVA config: topk_experts={read!r} (what the adapter reads) and topk={written!r} "
                         "(what initialize_vision_modules writes) disagree; fix one of them")
    if read is None and written is None:
        warnings.warn("released MoVA config has neither topk_experts nor topk; using the paper's 3", UserWarning,
                      stacklevel=3)
        return 3
    return read if read is not None else written


def convert_mova_config(released: Mapping, vision_experts: list[dict] | None = None, **overrides) -> MovaConfig:
    """A released mova_llama config.json (as a dict) -> MovaConfig. The expert towers are the pool in
    `vision_experts` (default: the release's seven), whose count must match the release's."""
    if released.get("mm_projector_type", "mov_adapter") != "mov_adapter":
        raise ValueError(f"released config: mm_projector_type {released.get('mm_projector_type')!r} is not MoVA's 'mov_adapter'")
    experts = PAPER_EXPERTS if vision_experts is None else vision_experts
    towers = released.get("mm_vision_tower")
    if towers is not None and len(towers) != len(experts) + 1:
        raise ValueError(f"released config: mm_vision_tower lists {len(towers)} towers (base + experts), the pool has "
                         f"{len(experts)} experts + the base")
    channels = released.get("expert_channels")
    if channels is not None and len(channels) != len(experts):
        raise ValueError(f"released config: expert_channels has {len(channels)} entries for {len(experts)} experts")
    text = {"model_type": "llama", **{k: released[k] for k in LLAMA_FIELDS if k in released}}
    fields = dict(text_config=text, vision_tower=CLIP_VIT_L14_672, vision_experts=experts,
                  num_adapter_blocks=released.get("num_projector_layers", 3), top_k_experts=top_k_experts(released),
                  num_routing_tokens=released.get("num_routing_tokens", 144))
    fields.update(overrides)
    config = MovaConfig(**fields)
    feat = released.get("image_feat_size")
    if feat is not None and "vision_tower" not in overrides:
        side = config.vision_tower["config"]["image_size"] // config.vision_tower["config"]["patch_size"]
        if feat != side:
            raise ValueError(f"released config: image_feat_size {feat} != the base grid {side}")
    return config


def convert_mova_state_dict(state: Mapping[str, torch.Tensor], config: MovaConfig | None = None) -> ConvertedMova:
    converted, left_out, unknown = {}, {}, []
    num_experts = None if config is None else config.num_experts
    for key, value in state.items():
        reason = next((why for prefix, why in _LEFT_OUT.items() if key.startswith(prefix)), None)
        expert = _EXPERT_TOWER.match(key)
        if reason is not None:
            left_out[key] = reason
        elif expert is not None:
            if num_experts is not None and int(expert.group(1)) > num_experts:
                raise ValueError(f"{key}: expert tower {expert.group(1)} beyond the config's {num_experts} experts")
            left_out[key] = "an expert tower (frozen, off the shelf): load it from its own checkpoint"
        else:
            new = rename(key, RULES)
            if new == key:
                unknown.append(key)
                continue
            converted[_GATE.sub(r"\1.net.\2.", new)] = value
    if unknown:
        shown = ", ".join(sorted(unknown)[:8])
        raise ValueError(f"released MoVA state dict: {len(unknown)} keys this converter does not know: {shown}")
    return ConvertedMova(converted, left_out)


__all__ = ["ConvertedMova", "convert_mova_config", "convert_mova_state_dict", "top_k_experts"]
