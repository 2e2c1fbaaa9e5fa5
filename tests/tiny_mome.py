"""Tiny MoME pieces for the tests: a word-level tokenizer, a tiny Llama, a tiny random Whisper encoder,
the speech processor around them, and random speech-like clips. Everything builds offline in seconds."""
from __future__ import annotations

import math

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, WhisperFeatureExtractor

from zoo.models.mome import MomeConfig, MomeForSpeechRecognition
from zoo.models.mome.processing_mome import VIDEO_TOKEN, transcription_prompt_ids
from zoo.multimodal.speech_processing import SpeechLanguageProcessor

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ("transcribe the audio user assistant : a an and are as at be by for from has he in is it its of on that "
         "to was were will with yes no one two three four five six seven eight nine ten hello world speech").split()
CHAT_TEMPLATE = ("<s>{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")
# a tiny random Whisper encoder with Whisper's real input format (80 mel bins, 3000 frames = 30 s);
# trim=True runs it on each clip's own frames only (fast), see zoo.multimodal.audio_tower
TOWER = {"kind": "whisper", "trim": True,
         "config": {"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                    "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32, "num_mel_bins": 80,
                    "max_source_positions": 1500}}
RATES = [2, 4, 8]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_processor(compression_rate: int = 4, video: bool = False) -> SpeechLanguageProcessor:
    tokenizer = tiny_tokenizer()
    if video:
        tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]})
    return SpeechLanguageProcessor(WhisperFeatureExtractor(), tokenizer, compression_rate=compression_rate,
                                   chat_template=CHAT_TEMPLATE)


def text_config(vocab_size: int) -> dict:
    # a large init so the logits depend visibly on every layer (near-uniform logits would hide bugs)
    return dict(model_type="llama", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512, initializer_range=0.2,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_config(processor: SpeechLanguageProcessor, placement: str = "attention", **overrides) -> MomeConfig:
    tokenizer = processor.tokenizer
    fields = dict(text_config=text_config(len(tokenizer)), audio_tower=TOWER, audio_token_id=processor.audio_token_id,
                  audio_compression_rates=RATES, inference_compression_rate=4, mome_placement=placement,
                  num_routed_experts=6, num_shared_experts=1, num_experts_per_tok=2, bottleneck_size=4,
                  transcription_prompt_ids=transcription_prompt_ids(processor))
    fields.update(overrides)
    return MomeConfig(**fields)


def trained_looking_(model: MomeForSpeechRecognition, seed: int = 0) -> MomeForSpeechRecognition:
    """Move W_up off zero and sharpen the routers, as training would, so routing mistakes show in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.mome_modules:
            mome = module.mome
            mome.router.weight.copy_(torch.randn(mome.router.weight.shape, generator=generator))
            for bank in (mome.routed_experts, mome.shared_experts):
                if bank is not None:
                    bank.up_proj.copy_(torch.randn(bank.up_proj.shape, generator=generator) * 0.5)
    return model


def tiny_model(processor=None, placement: str = "attention", seed: int = 0, trained: bool = True, **overrides):
    processor = processor or tiny_processor()
    torch.manual_seed(seed)
    model = MomeForSpeechRecognition(tiny_config(processor, placement, **overrides)).eval()
    return trained_looking_(model, seed) if trained else model


def clip(seconds: float, seed: int = 0, rate: int = 16_000) -> np.ndarray:
    """A speech-like clip: a few gliding harmonics under an envelope, plus a little noise (float32 [n])."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 60 * rng.random() + 40 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * math.pi * 3 * t) ** 2)
    return (0.3 * wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
