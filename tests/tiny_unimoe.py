"""Tiny Uni-MoE pieces for the tests: the word-level tokenizer of tiny_mome, a tiny Llama, a tiny CLIP vision
tower (32 px, 2x2 patches = 4 image tokens), a tiny random Whisper (trimmed encoder + 1-layer decoder as
the Q-Former, 3 queries per chunk), the processor around them. Everything builds offline in about a second."""
from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM, WhisperFeatureExtractor

from tests.tiny_mome import CHAT_TEMPLATE, TOWER as WHISPER, clip, text_config, tiny_tokenizer  # noqa: F401
from zoo.models.unimoe import UniMoeConfig, UniMoeForConditionalGeneration, UniMoeProcessor
from zoo.multimodal.processing import VisionLanguageImageProcessor

CLIP = {"kind": "hf", "feature_layer": -1, "config": {
    "model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "patch_size": 16, "image_size": 32}}
IMAGE_TOKENS = 4
QUERIES = 3
FRAMES = 2


def tiny_processor(**overrides) -> UniMoeProcessor:
    fields = dict(num_image_tokens=IMAGE_TOKENS, num_audio_query_tokens=QUERIES, num_video_frames=FRAMES,
                  chat_template=CHAT_TEMPLATE)
    fields.update(overrides)
    image_processor = VisionLanguageImageProcessor(32, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    return UniMoeProcessor(image_processor, WhisperFeatureExtractor(), tiny_tokenizer(), **fields)


def tiny_config(processor: UniMoeProcessor, **overrides) -> UniMoeConfig:
    fields = dict(text_config=text_config(len(processor.tokenizer)), vision_tower=CLIP, audio_tower=WHISPER,
                  image_token_id=processor.image_token_id, video_token_id=processor.video_token_id,
                  audio_token_id=processor.audio_token_id, num_audio_query_tokens=QUERIES, expert_lora_rank=2,
                  expert_lora_alpha=4)
    fields.update(overrides)
    return UniMoeConfig(**fields)


def dense_llm(processor: UniMoeProcessor, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(processor).text_config).eval()


def trained_looking_(model: UniMoeForConditionalGeneration, seed: int = 0) -> UniMoeForConditionalGeneration:
    """Sharpen the routers and move every LoRA B off zero, as training would, so routing mistakes show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ffn in model.moe_feed_forwards():
            ffn.moe.router.weight.copy_(torch.randn(ffn.moe.router.weight.shape, generator=generator))
            for name, p in ffn.moe.experts.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model


def tiny_model(processor=None, seed: int = 0, trained: bool = True, **overrides) -> UniMoeForConditionalGeneration:
    processor = processor or tiny_processor()
    torch.manual_seed(seed)
    model = UniMoeForConditionalGeneration(tiny_config(processor, **overrides)).eval()
    return trained_looking_(model, seed) if trained else model


def image(seed: int = 0, side: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def video(frames: int = 5, seed: int = 0, side: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, side, side, 3), dtype=np.uint8)
