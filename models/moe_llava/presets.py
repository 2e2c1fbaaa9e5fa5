"""MoE-LLaVA-Phi2-2.7B-4e as a config, built on the meta device to count parameters.

    phi2x4-clip336: Phi-2 + CLIP ViT-L/14-336 (layer -2), 4 experts top-2 on the 16 even layers
                    published: 3.6B activated (LLM + projector; the vision tower is not counted)
"""
from __future__ import annotations

from zoo.core.presets import Presets
from zoo.multimodal.modeling import build_on_meta, parameter_counts

from .configuration_moe_llava import MoeLlavaConfig
from .modeling_moe_llava import MoeLlavaForConditionalGeneration

CLIP_VIT_L14_336 = {
    "kind": "hf", "feature_layer": -2,
    "config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
               "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14, "image_size": 336,
               "projection_dim": 768},
}
PHI2 = {"model_type": "phi", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
        "num_attention_heads": 32, "vocab_size": 51200, "hidden_act": "gelu_new", "partial_rotary_factor": 0.4,
        "tie_word_embeddings": False}

# name -> (config fields, published activated parameters); read-only, a lookup is a copy
PRESETS = Presets("MoE-LLaVA preset", {"phi2x4-clip336": ({"text_config": PHI2, "vision_tower": CLIP_VIT_L14_336}, 3.6e9)})


def preset_config(name: str) -> MoeLlavaConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown MoE-LLaVA preset {name!r}; known: {sorted(PRESETS)}")
    return MoeLlavaConfig(image_token_id=-200, **PRESETS[name][0])


def counts(name: str) -> dict[str, float]:
    """Activated parameters exclude the vision tower, as MoE-LLaVA counts them."""
    c = parameter_counts(build_on_meta(MoeLlavaForConditionalGeneration, preset_config(name)))
    return {**c, "activated_without_tower": c["activated"] - c["vision_tower"], "published_activated": PRESETS[name][1]}
