"""MoVA's sizes as configs: build them on the meta device to count parameters (never materialised here).

    paper:          MoVA-8B: Llama-3-8B + CLIP ViT-L/14 at 672 px (48 x 48) + the release's seven experts
                    (DINOv2-g/14, Vary = SAM-B + stride-2 conv, Co-DETR ViT-L (conv-compressed), Pix2Struct-large,
                    Deplot-base, BiomedCLIP ViT-B/16, SAM-H), 3 adapter blocks, BERT-large gate text, 576 / 144 tokens
    tiny-packaged:  what ships here can fill: SmolLM2-135M + MobileNetV2 (stage 3, 8 x 8 at 128 px) as the base;
                    experts EfficientNet-Lite0 (late map), MobileNetV2 stage 1 (a low-level map that keeps colour),
                    facenet's MTCNN P-Net; the packaged MiniLM as the gate's text encoder; 16 / 4 tokens

`counts("paper")` gives the parts; tests/test_mova_presets.py prints them. The expert towers are the
architectures' shapes from transformers' configs (Co-DETR's detector ViT-L as a plain ViT-L/16 at 1280 px,
Vary's SAM-B as transformers' SAM image encoder), not the released modules, so their counts are approximate.
"""
from __future__ import annotations

import copy

from zoo.core.presets import Presets
from zoo.multimodal.modeling import build_on_meta

from .configuration_mova import CLIP_VIT_L14_672, MINILM, PAPER_EXPERTS, MovaConfig
from .modeling_mova import MovaForConditionalGeneration

# meta-llama/Meta-Llama-3-8B config.json; the <image> placeholder gets the id after its 128256 tokens
LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
             "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": False}
# HuggingFaceTB/SmolLM2-135M(-Instruct), the packaged LLM (zoo.integrations.assets.load_smollm2)
SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
                "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "hidden_act": "silu", "tie_word_embeddings": True}
PACKAGED_EXPERTS = [
    {"name": "EfficientNet", "description": "whole objects and scenes (a late, semantic feature map)",
     "tower": {"kind": "timm", "name": "tf_efficientnet_lite0", "image_size": 128, "feature_layer": -1,
               "weights": "efficientnet_lite0"}},
    {"name": "ColourNet", "description": "colours, edges and textures (an early, low-level feature map)",
     "tower": {"kind": "timm", "name": "mobilenetv2_100", "image_size": 128, "feature_layer": 1, "weights": "mobilenet_v2"}},
    {"name": "FaceNet", "description": "faces and people (a face detector's feature map)",
     "tower": {"kind": "facenet_mtcnn", "image_size": 128, "weights": "packaged"}},
]
MOBILENET_STAGE3 = {"kind": "timm", "name": "mobilenetv2_100", "image_size": 128, "feature_layer": 3, "weights": "mobilenet_v2"}

# name -> (config fields, reference figures)
PRESETS = Presets("MoVA preset", {
    "paper": ({"text_config": LLAMA3_8B, "vision_tower": CLIP_VIT_L14_672, "vision_experts": PAPER_EXPERTS,
               "image_token_id": 128256}, {"language_model": 8_030_261_248}),
    "tiny-packaged": ({"text_config": SMOLLM2_135M, "vision_tower": MOBILENET_STAGE3, "vision_experts": PACKAGED_EXPERTS,
                       "question_encoder": MINILM, "adapter_num_heads": 4, "image_token_budget": 16, "num_routing_tokens": 4,
                       "downsample_depth": 1}, {}),
})


def preset_config(name: str, **overrides) -> MovaConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown MoVA preset {name!r}; known: {sorted(PRESETS)}")
    fields, _ = PRESETS[name]
    return MovaConfig(**copy.deepcopy({**fields, **overrides}))


def _numel(module) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(model: MovaForConditionalGeneration) -> dict[str, int]:
    experts = {e["name"]: _numel(t) for e, t in zip(model.config.vision_experts, model.vision_experts)}
    return {"language_model": _numel(model.language_model), "base_encoder": _numel(model.vision_tower),
            "experts": experts, "experts_total": sum(experts.values()), "mov_adapter": _numel(model.adapter),
            "question_encoder": _numel(model.question_encoder), "downsample": _numel(model.downsample),
            "projector": _numel(model.projector), "routing_lora": _numel(model.routing_lora), "total": _numel(model)}


def counts(name: str, **overrides) -> dict:
    config = preset_config(name, **overrides)
    return {**parameter_counts(build_on_meta(MovaForConditionalGeneration, config)), "reference": PRESETS[name][1]}


__all__ = ["LLAMA3_8B", "PACKAGED_EXPERTS", "PRESETS", "SMOLLM2_135M", "counts", "parameter_counts", "preset_config"]
