"""Uni-MoE's released sizes as configs: build them on the meta device to count parameters (never materialised).

    v1-4e: Vicuna-7B-v1.5 + CLIP ViT-L/14-336 + Whisper-small (encoder + decoder as Q-Former, 50 queries),
           every one of the 32 FFNs a top-2-of-4 layer of LoRA experts (r 8, alpha 16) over the stage-2 FFNs
           {base, base1, base4, base7} (issue #26's 4E choice)
    8e:    the same with 8 experts over the 8e slot files (mlp_dir "Uni-MoE-8e-Experts"), DeepSpeed's Gumbel
           2nd choice, and the balance loss (its coefficient is not in our notes: 0.01 here, unverified)

Reference figures (shared/reference/models_a.md §1a, [calc]): about 11.1B active in the LLM (top-2 of full
7B FFNs), about 19.7B total for 4E and 37B for 8E. Measured here (`counts(name)`, the language model only):

    Llama-2 7B parts     embeddings + lm_head 262.1M, attention + norms 32 x 67.1M = 2.148B; FFN 135.3M per layer
    per MoE layer        router 4096 E; each expert 135.3M frozen FFN + 329,728 LoRA (r 8: 8 x (H + 2I) + 8 x (I + H))
    v1-4e                total 19.77B, active 11.09B    (reference 19.7B / 11.1B)
    8e                   total 37.12B, active 11.09B    (reference 37B / 11.1B)

The gaps (+0.07B 4E, +0.12B 8E, -0.01B active) are the LoRA deltas (42M for 4E, 84M for 8E, 21M active)
and the routers (0.5M / 1M), which the reference arithmetic leaves out, plus its rounding (2.41B + k x 4.33B);
the active count is the same for 4E and 8E (top-2 either way).
Outside the LLM: CLIP-L/336 303.5M, the mlp2x_gelu projector 21.0M, the Whisper-small encoder 88.2M
and the Q-Former (its decoder without the 39.8M token table, 50 queries, Linear 768 -> 4096) 116.9M.
The released base shards (9 x 9.9 GB fp32, about 22B) hold the 4E LLM plus the encoders and the random
decoder copies of the audio tower (README quirk), consistent with these counts.
"""
from __future__ import annotations

from zoo.core.presets import Presets
from zoo.multimodal.modeling import build_on_meta

from .configuration_unimoe import CLIP_VIT_L14_336, WHISPER_SMALL, UniMoeConfig
from .modeling_unimoe import UniMoeForConditionalGeneration

# Vicuna-7B-v1.5 (lmsys/vicuna-7b-v1.5 config.json: Llama-2 7B); the placeholders get ids after its 32000 tokens
VICUNA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False}
V1_4E_SOURCES = ["mlp_base", "mlp_base1", "mlp_base4", "mlp_base7"]  # LLaVA-1.5, short speech, vision, long speech
E8_SOURCES = ["mlp_audiocap", "mlp_basev", "mlp_base", "mlp_base1", "mlp_base4", "mlp_base7", "mlp_base", "mlp_base7"]

# name -> (config fields, reference figures of the language model)
PRESETS = Presets("Uni-MoE preset", {
    "v1-4e": ({"num_experts": 4, "expert_sources": V1_4E_SOURCES},
              {"active": 11.1e9, "total": 19.7e9}),
    "8e": ({"num_experts": 8, "expert_sources": E8_SOURCES, "router_gumbel_second": True, "router_aux_loss_coef": 0.01},
           {"active": 11.1e9, "total": 37e9}),
})


def preset_config(name: str, **overrides) -> UniMoeConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown Uni-MoE preset {name!r}; known: {sorted(PRESETS)}")
    fields, _ = PRESETS[name]
    return UniMoeConfig(text_config=dict(VICUNA_7B), vision_tower=CLIP_VIT_L14_336, audio_tower=WHISPER_SMALL,
                        image_token_id=32000, video_token_id=32001, audio_token_id=32002, **{**fields, **overrides})


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: UniMoeForConditionalGeneration) -> dict[str, int]:
    """The language model's total and per-token active parameters (k of E experts per MoE layer), and the rest."""
    language = _numel(model.language_model)
    inactive = lora = 0
    for ffn in model.moe_feed_forwards():
        bank = ffn.moe.experts
        per_expert = _numel(bank) // bank.num_experts  # every expert holds its own frozen FFN here
        inactive += (bank.num_experts - model.config.num_experts_per_tok) * per_expert
        lora += sum(p.numel() for n, p in bank.named_parameters() if "lora_" in n)
    return {"language_model": language, "language_model_active": language - inactive, "expert_lora": lora,
            "vision_tower": _numel(model.vision_tower), "projector": _numel(model.connector),
            "audio_tower": _numel(model.audio_tower), "audio_qformer": _numel(model.audio_aligner),
            "total": _numel(model)}


def counts(name: str, **overrides) -> dict:
    config = preset_config(name, **overrides)
    return {**parameter_counts(build_on_meta(UniMoeForConditionalGeneration, config)), "reference": PRESETS[name][1]}


__all__ = ["E8_SOURCES", "PRESETS", "V1_4E_SOURCES", "VICUNA_7B", "counts", "parameter_counts", "preset_config"]
