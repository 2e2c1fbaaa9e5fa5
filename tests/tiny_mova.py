"""Tiny MoVA pieces for the tests: a word-level tokenizer that knows the routing letters, a tiny Llama, a tiny
CLIP base encoder (32 px, 8 x 8 patches = a 4 x 4 grid), three random experts from three libraries (timm,
transformers' DINOv2, facenet's MTCNN P-Net), a tiny BERT sentence encoder, and the processor around them."""
from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tests.tiny_mome import CHAT_TEMPLATE, SPECIAL, WORDS
from zoo.models.mova import MovaConfig, MovaForConditionalGeneration, MovaProcessor

LETTERS = ["A", "B", "C"]
ROUTING_WORDS = LETTERS + ["none", ",", "what", "colour", "shape", "question", "0:", "red", "blue", "circle"]
CLIP = {"kind": "hf", "feature_layer": -1, "config": {
    "model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "patch_size": 8, "image_size": 32}}
EXPERTS = [
    {"name": "ConvNet", "description": "colours and textures",
     "tower": {"kind": "timm", "name": "test_efficientnet", "image_size": 32, "feature_layer": 1}},
    {"name": "DINO", "description": "objects and parts",
     "tower": {"kind": "hf_vision", "config": {"model_type": "dinov2", "hidden_size": 8, "num_hidden_layers": 1,
                                               "num_attention_heads": 2, "intermediate_size": 16, "image_size": 28,
                                               "patch_size": 14}}},
    {"name": "Faces", "description": "faces",
     "tower": {"kind": "facenet_mtcnn", "image_size": 24}},
]
IMAGE_TOKENS, ROUTING_TOKENS = 4, 1


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS + [w for w in ROUTING_WORDS if w not in WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_config(vocab_size: int, image_token_id: int, **overrides) -> MovaConfig:
    text = dict(model_type="llama", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=64, max_position_embeddings=1024, initializer_range=0.2,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)
    encoder = {"config": {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "intermediate_size": 16, "vocab_size": vocab_size}, "pooling": "mean"}
    fields = dict(text_config=text, vision_tower=CLIP, vision_experts=EXPERTS, num_adapter_blocks=2, adapter_num_heads=2,
                  top_k_experts=2, question_encoder=encoder, downsample_depth=1, image_token_budget=IMAGE_TOKENS,
                  num_routing_tokens=ROUTING_TOKENS, image_token_id=image_token_id, max_routed_experts=3,
                  routing_max_new_tokens=4)
    fields.update(overrides)
    return MovaConfig(**fields)


def trained_looking_(model: MovaForConditionalGeneration, seed: int = 0) -> MovaForConditionalGeneration:
    """Move every zero-initialised layer off zero, as training would, so the experts visibly change the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "_zero_init", False):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.5)
        model.adapter.pos_embed.copy_(torch.randn(model.adapter.pos_embed.shape, generator=generator) * 0.1)
    return model


def tiny_model(seed: int = 0, trained: bool = True, **overrides):
    """-> (model, processor)."""
    tokenizer = tiny_tokenizer()
    probe = MovaProcessor(tokenizer, 32, expert_names=["x"], expert_descriptions=["x"])  # adds <image>
    torch.manual_seed(seed)
    model = MovaForConditionalGeneration(tiny_config(len(tokenizer), probe.image_token_id, **overrides)).eval()
    processor = MovaProcessor.for_model(model, tokenizer, chat_template=CHAT_TEMPLATE)
    return (trained_looking_(model, seed) if trained else model), processor


def image(seed: int = 0, side: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
