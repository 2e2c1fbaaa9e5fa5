"""What the MoME gallery tab computes: load the shipped speech system once, transcribe a clip at the
compression rate the user picks, and show how many audio tokens the LLM saw and which experts the
audio tokens chose at every rate (one router and one expert set serve all rates: the histograms
should look alike)."""
from __future__ import annotations

import threading

import torch

from zoo.core.precision import autocast

MAX_SECONDS = 60.0  # the tab's limit: two Whisper windows; longer uploads get a message, not a truncation
MAX_NEW_TOKENS = 96
_system: dict = {}
_lock = threading.Lock()


def get_mome():
    """(model, processor, metadata) of models/mome/trained/speech-tiny.safetensors, loaded on first use."""
    from .train_mome import TINY, build_mome, load_bases, load_trained
    from zoo.models import trained_dir

    with _lock:
        if "model" not in _system:  # Whisper may have been loaded first: it shares the dict
            lm, processor = load_bases()
            model = build_mome(lm, processor, dict(TINY))
            metadata = load_trained(model, trained_dir("mome") / "speech-tiny.safetensors")
            model.eval()
            processor.max_audio_seconds = MAX_SECONDS
            _system.update(model=model, processor=processor, metadata=metadata)
        return _system["model"], _system["processor"], _system["metadata"]


def get_whisper():
    """(Whisper tiny.en, its processor): the reference a user would pick instead, shown beside MoME."""
    from zoo.integrations.whisper_weights import load_whisper

    with _lock:
        if "whisper" not in _system:
            _system["whisper"] = load_whisper("tiny.en", progress=False)
        return _system["whisper"]


@torch.no_grad()
def whisper_transcript(waveform: torch.Tensor) -> str:
    """Whisper tiny.en's own decoder on the clip (30 s windows, greedy), numbers spelled out like MoME's
    training text so the two read alike."""
    from zoo.multimodal.audio import SAMPLING_RATE, chunk_waveform

    from .speech_data import spoken_text

    whisper, processor = get_whisper()
    texts = []
    for chunk in chunk_waveform(waveform):
        features = processor(chunk.numpy(), sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
        ids = whisper.generate(features, max_new_tokens=MAX_NEW_TOKENS)
        texts.append(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
    return spoken_text(" ".join(texts))


def rates() -> list[int]:
    from .train_mome import TINY

    return list(TINY["rates"])


def _check_rate(rate) -> int:
    try:
        rate = int(rate)
    except (TypeError, ValueError):
        raise ValueError(f"compression rate must be one of {rates()}, got {rate!r}") from None
    if rate not in rates():
        raise ValueError(f"compression rate must be one of {rates()}, got {rate}")
    return rate


def _prompt_batch(processor, waveform: torch.Tensor, rate: int):
    from .train_mome import INSTRUCTION
    from zoo.multimodal.audio import SAMPLING_RATE

    return processor(text=processor.prompt(INSTRUCTION), audio=[waveform.numpy()], sampling_rate=SAMPLING_RATE,
                     compression_rate=rate, padding_side="left")


@torch.no_grad()
def expert_shares(model, processor, waveform: torch.Tensor, rate: int) -> tuple[int, list[float]]:
    """(audio tokens the LLM sees at `rate`, share of the audio tokens' routed slots per expert, all MoME layers)."""
    batch = _prompt_batch(processor, waveform, rate)
    with autocast():
        out = model(**batch, compression_rate=rate, logits_to_keep=1)
    counts = model.routing_histograms(out.modality_ids, "audio").sum(0).float()  # [N_r]
    tokens = int((batch["input_ids"] == processor.audio_token_id).sum())
    return tokens, (counts / counts.sum().clamp(min=1)).tolist()


@torch.no_grad()
def transcribe(audio, rate) -> dict:
    """Any audio load_audio accepts (a path, bytes, gradio's (rate, array)) -> {"transcript", "reply_ids" (the generated ids), "whisper_transcript", "rate",
    "audio_tokens", "seconds", "headers", "rows"}: one row per compression rate (rate, audio tokens, share
    per routed expert). ValueError on bad audio or an unknown rate."""
    from zoo.multimodal.audio import SAMPLING_RATE, load_audio

    rate = _check_rate(rate)
    if audio is None:
        raise ValueError("no audio: record or upload a clip first")
    model, processor, _ = get_mome()
    waveform = load_audio(audio, max_seconds=MAX_SECONDS)
    if waveform.abs().max() == 0:
        raise ValueError("the clip is silent (every sample is 0): nothing to transcribe")
    batch = _prompt_batch(processor, waveform, rate)
    tokenizer = processor.tokenizer
    with autocast():
        generated = model.generate(**batch, compression_rate=rate, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                   num_beams=1, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)
    reply = generated[0, batch["input_ids"].shape[1]:].tolist()
    text = tokenizer.decode(reply, skip_special_tokens=True)
    rows, tokens_at_rate = [], None
    for r in rates():
        tokens, shares = expert_shares(model, processor, waveform, r)
        rows.append([r, tokens] + [round(s, 3) for s in shares])
        if r == rate:
            tokens_at_rate = tokens
    experts = model.config.num_routed_experts
    return {"transcript": text.strip(), "reply_ids": reply, "whisper_transcript": whisper_transcript(waveform), "rate": rate, "audio_tokens": tokens_at_rate,
            "seconds": round(waveform.numel() / SAMPLING_RATE, 2),
            "headers": ["rate", "audio tokens"] + [f"expert {e}" for e in range(experts)], "rows": rows}


__all__ = ["MAX_SECONDS", "expert_shares", "get_mome", "get_whisper", "rates", "transcribe", "whisper_transcript"]
