"""The paper's MoME-23/4 as configs (no MoME weights were released): build them on the meta device to count.

    mome-23/4-avsr:  Llama 3.2-1B (frozen) + Whisper-medium encoder (frozen) + AV-HuBERT-Large features (1024-d, 25 fps;
                     the video encoder itself is not part of the model: its features are an input),
                     audio rates {4, 16}, video rates {2, 5}, MoME-23/4 (23 routed + 1 shared, top-4, bottleneck 12)
                     in parallel to MHSA in all 16 layers.   published: 12.7 M active parameters
    mome-23/4-asr:   the same without video, ASR rates {4, 8, 12, 16, 20}

Counting (`counts(name)`, on the meta device; transformers configs with the published dimensions):

    frozen           Llama 3.2-1B 1,235,814,400;  Whisper-medium encoder 307,216,384 (AV-HuBERT: outside)
    per MoME layer   router 23 x 2048 = 47,104;  each bottleneck expert 2 x 12 x 2048 = 49,152
                     total 47,104 + 24 x 49,152 = 1,226,752;   active per token 47,104 + 5 x 49,152 = 292,864
    16 layers        MoME total 19,628,032, active 4,685,824 (the same for every placement: MHSA, FFN, LAYER)
    projector/rate   Linear(1024, 2048) + ReLU + Linear(2048, 2048) + LayerNorm(2048) = 6,299,648
                     (zoo.multimodal.matryoshka; hidden width config.projector_hidden_size, default the LLM's 2048)

    avsr: trainable 44.83 M = 4 projectors (audio 4, 16; video 2, 5) + MoME 19.63 M
          active for one (a, v) pair 17.29 M = 2 projectors 12.60 M + MoME active 4.69 M       published 12.7 M
    asr:  trainable 51.13 M = 5 projectors + MoME;  active for one rate 10.99 M

The gap to the published 12.7 M (avsr) is in the projectors. The MoME part is fixed by the paper's
numbers (23/4, bottleneck 12, one shared expert, 16 layers of width 2048; counting all 23 routed
experts as active would give 19.6 M for MoME alone, so the paper counts the routed top-k only).
12.7 - 4.69 = 8.0 M leaves ~4.0 M per projector, i.e. a hidden width of ~1300 instead of 2048
(2 x (3073 I + 6144) = 8.0 M at I ~ 1302); the paper's projector width is not in our notes and
Llama-AVSR's code was not available here. `counts(name, projector_hidden_size=1024)` gives 10.99 M,
so the published figure sits between widths 1024 and 2048.
"""
from __future__ import annotations

import torch

from zoo.core.presets import Presets

from .configuration_mome import PAPER_AUDIO_TOWER, PAPER_LLM, MomeConfig
from .modeling_mome import MomeForSpeechRecognition

MOME_23_4 = {"num_routed_experts": 23, "num_shared_experts": 1, "num_experts_per_tok": 4, "bottleneck_size": 12,
             "router_aux_loss_coef": 0.01, "mome_placement": "attention", "mome_layers": "all"}

PRESETS = Presets("MoME preset", {
    "mome-23/4-avsr": ({**MOME_23_4, "audio_compression_rates": [4, 16], "video_feature_size": 1024,
                        "video_compression_rates": [2, 5], "video_token_id": 128257}, 12.7e6),
    "mome-23/4-asr": ({**MOME_23_4, "audio_compression_rates": [4, 8, 12, 16, 20]}, None),
})


def preset_config(name: str, **overrides) -> MomeConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown MoME preset {name!r}; known: {sorted(PRESETS)}")
    fields, _ = PRESETS[name]
    # <audio> / <video> as the two ids after Llama's vocabulary (placeholder ids are never embedded)
    return MomeConfig(text_config={"model_type": "llama", **PAPER_LLM}, audio_tower=PAPER_AUDIO_TOWER,
                      audio_token_id=128256, **{**fields, **overrides})


def build_on_meta(config: MomeConfig) -> MomeForSpeechRecognition:
    """A paper-size model without memory or weights."""
    with torch.device("meta"):
        return MomeForSpeechRecognition(config, load_tower_weights=False)


def _numel(module) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(model: MomeForSpeechRecognition) -> dict[str, int]:
    """Frozen parts, trainable parts, and what one inference setting (one audio rate, one video rate) runs per token."""
    config = model.config
    mome_total = sum(_numel(m.mome) for m in model.mome_modules)
    mome_active = 0
    for m in model.mome_modules:
        routed = m.mome.routed_experts
        per_expert = _numel(routed) // routed.num_experts
        mome_active += _numel(m.mome.router) + _numel(m.mome.shared_experts) + config.num_experts_per_tok * per_expert
    audio = model.audio_projectors.projectors
    audio_per_rate = _numel(audio[str(config.audio_compression_rates[0])])
    video_per_rate = 0
    if model.video_projectors is not None:
        video_per_rate = _numel(model.video_projectors.projectors[str(config.video_compression_rates[0])])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "language_model": _numel(model.language_model) - mome_total,  # frozen (MoME modules sit inside it)
        "audio_tower": _numel(model.audio_tower),  # frozen
        "audio_projectors": _numel(model.audio_projectors), "audio_projector_per_rate": audio_per_rate,
        "video_projectors": _numel(model.video_projectors), "video_projector_per_rate": video_per_rate,
        "mome_total": mome_total, "mome_active": mome_active,
        "trainable": trainable,
        "active_trainable": audio_per_rate + video_per_rate + mome_active,
    }


def counts(name: str, **overrides) -> dict[str, float]:
    config = preset_config(name, **overrides)
    return {**parameter_counts(build_on_meta(config)), "published_active": PRESETS[name][1]}
