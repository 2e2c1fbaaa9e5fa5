"""MoME's inputs: the speech processor (zoo.multimodal.speech_processing.SpeechLanguageProcessor, registered for
AutoProcessor), plus what MoME adds around it: the ASR prompt the model builds by itself for
transformers' ASR pipeline, and `<video>` placeholders for the optional video stream.

    processor(text=processor.prompt(INSTRUCTION), audio=clip, compression_rate=r)   one rate per call
    transcription_prompt_ids(processor)   -> config.transcription_prompt_ids (the same prompt, one <audio> left in)
    expand_video_tokens(texts, frames, r) -> each "<video>" repeated ceil(frames_i / r) times

The video features (AV-HuBERT-Large, [B, T_v, 1024] at 25 fps) are computed outside the zoo: no lip
videos or AV-HuBERT weights exist here, so they go straight to the model as `video_features`.
"""
from __future__ import annotations

from collections.abc import Sequence

from zoo.multimodal.matryoshka import compressed_lengths
from zoo.multimodal.speech_processing import AUDIO_TOKEN, SpeechLanguageProcessor

VIDEO_TOKEN = "<video>"
DEFAULT_INSTRUCTION = "transcribe the audio"


def transcription_prompt_ids(processor: SpeechLanguageProcessor, instruction: str = DEFAULT_INSTRUCTION) -> list[int]:
    """The token ids of `processor.prompt(instruction)` with its one AUDIO_TOKEN unexpanded: what
    `MomeForSpeechRecognition.generate(input_features=...)` expands per clip when no input_ids are given."""
    text = processor.prompt(instruction)
    if text.count(AUDIO_TOKEN) != 1:
        raise ValueError(f"the transcription prompt must hold exactly one {AUDIO_TOKEN}, got {text!r}")
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def num_video_tokens(num_frames: int, compression_rate: int) -> int:
    """Video tokens of a clip of `num_frames` feature frames at `compression_rate` (groups of rate, last partial)."""
    return compressed_lengths(int(num_frames), compression_rate)


def expand_video_tokens(texts: Sequence[str], num_frames: Sequence[int], compression_rate: int) -> list[str]:
    """The i-th VIDEO_TOKEN (reading order over all texts) -> num_video_tokens(num_frames[i], rate) placeholders."""
    frames = list(num_frames)
    given = sum(t.count(VIDEO_TOKEN) for t in texts)
    if given != len(frames):
        raise ValueError(f"{len(frames)} video clip(s) given but the text has {given} {VIDEO_TOKEN} placeholder(s)")
    counts = iter(frames)
    out = []
    for text in texts:
        pieces = text.split(VIDEO_TOKEN)
        expanded = [pieces[0]]
        for piece in pieces[1:]:
            expanded += [VIDEO_TOKEN * num_video_tokens(next(counts), compression_rate), piece]
        out.append("".join(expanded))
    return out


__all__ = ["DEFAULT_INSTRUCTION", "VIDEO_TOKEN", "expand_video_tokens", "num_video_tokens", "transcription_prompt_ids"]
