"""The paper's two models as configs (no weights exist): build them on the meta device to count parameters.

    phi3-mini-siglip:  Phi-3-mini-4k-instruct + SigLIP-so400m-patch14-384, 4 experts top-2 on the 16 odd layers
                       published: 5.5B activated (including the vision tower)
    llama3-8b-siglip:  Llama-3-8B-Instruct + SigLIP-so400m, same MoE;  published: 11.3B activated
"""
from __future__ import annotations

from zoo.core.presets import Presets
from zoo.multimodal.modeling import build_on_meta, parameter_counts

from .configuration_moiie import MoiieConfig
from .modeling_moiie import MoiieForConditionalGeneration

SIGLIP_SO400M_384 = {
    "kind": "hf", "feature_layer": -2,
    "config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
               "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14, "image_size": 384},
}
PHI3_MINI = {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "hidden_act": "silu",
             "max_position_embeddings": 4096, "tie_word_embeddings": False}
LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0,
             "hidden_act": "silu", "tie_word_embeddings": False}

# name -> (config fields, published activated parameters); read-only, a lookup is a copy
PRESETS = Presets("MoIIE preset", {
    "phi3-mini-siglip": ({"text_config": PHI3_MINI, "vision_tower": SIGLIP_SO400M_384}, 5.5e9),
    "llama3-8b-siglip": ({"text_config": LLAMA3_8B, "vision_tower": SIGLIP_SO400M_384}, 11.3e9),
})


def preset_config(name: str) -> MoiieConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown MoIIE preset {name!r}; known: {sorted(PRESETS)}")
    return MoiieConfig(image_token_id=-200, **PRESETS[name][0])


def counts(name: str) -> dict[str, float]:
    """Activated parameters include the vision tower, as the paper counts them."""
    c = parameter_counts(build_on_meta(MoiieForConditionalGeneration, preset_config(name)))
    return {**c, "published_activated": PRESETS[name][1]}
