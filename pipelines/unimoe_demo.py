"""What the Uni-MoE gallery tab computes: load the shipped tiny Uni-MoE once, answer a question about any of an
image, a video (an animated GIF or frames) and a clip of speech or sound, and show which experts each
modality's tokens chose (the experts are named after their stage-2 source: base, image, speech, video_audio).
Test-split samples of every modality (never trained on) are written to files so the tab can offer them."""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from zoo.core.modalities import MODALITY_IDS
from zoo.core.precision import autocast

from . import unimoe_data as data
from .vl_demo import MAX_QUESTION_CHARS, greedy_answer, routing_tables

MAX_AUDIO_SECONDS = 30.0  # one Whisper window: the recipe trained on one chunk per clip
MAX_VIDEO_FRAMES = 600
MAX_NEW_TOKENS = 8  # answers are one to four words
MEDIA_ORDER = ("image", "video", "audio")  # placeholders in the prompt, as the recipe orders them
_system: dict = {}
_samples: list = []
_lock = threading.Lock()


def get_unimoe():
    """(model, processor, shipped results) of models/unimoe/trained/, loaded on first use."""
    from .train_unimoe import load_shipped

    with _lock:
        if not _system:
            model, processor, results = load_shipped()
            processor.max_video_frames = MAX_VIDEO_FRAMES
            _system.update(model=model, processor=processor, results=results)
        return _system["model"], _system["processor"], _system["results"]


def expert_names() -> list[str]:
    from .train_unimoe import SOURCES

    return [f"{source} expert" for source in SOURCES]


def default_prompt(has_image: bool) -> str:
    """The instruction the recipe trained with when the question itself is spoken."""
    return data.SPOKEN_IMAGE_PROMPT if has_image else data.ARITHMETIC_PROMPT


def _write_sample(example, folder: Path, index: int) -> dict:
    import soundfile as sf
    from PIL import Image

    files = {}
    if example.image is not None:
        files["image"] = folder / f"{index}-image.png"
        Image.fromarray(example.image).save(files["image"])
    if example.video is not None:
        files["video"] = folder / f"{index}-video.gif"
        frames = [Image.fromarray(f) for f in example.video]
        frames[0].save(files["video"], save_all=True, append_images=frames[1:], duration=int(1000 / example.fps), loop=0)
    if example.audio is not None:
        files["audio"] = folder / f"{index}-audio.wav"
        sf.write(files["audio"], example.audio, data.SAMPLING_RATE)
    return {k: str(v) for k, v in files.items()}


def samples(per_modality: int = 2) -> list[dict]:
    """Test-split examples as files: [{"label", "modality", "question" (the prompt), "answer", "image"/"video"/"audio"}]."""
    with _lock:
        if not _samples:
            folder = Path(tempfile.mkdtemp(prefix="zoo-unimoe-samples-"))
            for i, example in enumerate(data.mixed_examples("test", per_modality, seed=0)):
                spoken = f" [spoken: {example.question}]" if example.prompt != example.question else ""
                _samples.append({"label": f"{i}: {example.modality}: {example.prompt}{spoken} ({example.answer})",
                                 "modality": example.modality, "question": example.prompt, "answer": example.answer,
                                 **_write_sample(example, folder, i)})
        return list(_samples)


def _media(image, video, audio) -> dict:
    """The uploads as processor inputs, each checked: {"image": PIL, "video": GIF path or frames, "audio": 16 kHz array}."""
    from zoo.multimodal.audio import load_audio
    from zoo.multimodal.processing import load_image

    media = {}
    if image is not None:
        media["image"] = load_image(image)
    if video is not None:
        if isinstance(video, (str, Path)):  # a file: an animated GIF (no video decoder is installed here)
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(video) as clip:
                    clip.verify()
            except (UnidentifiedImageError, OSError) as error:
                raise ValueError(f"video {Path(video).name}: not a readable animated GIF ({error})") from None
        media["video"] = video
    if audio is not None:
        waveform = load_audio(audio, max_seconds=MAX_AUDIO_SECONDS)
        if waveform.abs().max() == 0:
            raise ValueError("the audio clip is silent (every sample is 0)")
        media["audio"] = waveform.numpy().astype(np.float32)
    return media


def _question(question: str | None, media: dict) -> str:
    from zoo.models.unimoe.processing_unimoe import MEDIA_TOKENS

    question = (question or "").strip()
    if not question:
        if "audio" not in media:
            raise ValueError("the question is empty (leave it empty only when the question is spoken in the audio)")
        question = default_prompt("image" in media)
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    for token in MEDIA_TOKENS.values():
        if token in question:
            raise ValueError(f"the question may not contain {token}: the app attaches each upload once")
    return question


def answer(question: str | None, image=None, video=None, audio=None) -> dict:
    """-> {"answer", "question" (as asked), "media" (the modalities given), "headers", "rows" (layer, token modality,
    tokens, share per expert), "shares" (all layers)}. ValueError (or FileNotFoundError) on a bad upload."""
    media = _media(image, video, audio)
    question = _question(question, media)
    model, processor, _ = get_unimoe()
    given = tuple(m for m in MEDIA_ORDER if m in media)
    batch = processor(text=processor.prompt(question, media=given), images=[media["image"]] if "image" in media else None,
                      videos=[media["video"]] if "video" in media else None,
                      audio=[media["audio"]] if "audio" in media else None, sampling_rate=data.SAMPLING_RATE)
    inputs = {k: batch[k] for k in ("pixel_values_videos", "input_features", "feature_lengths", "chunks_per_audio")}
    with torch.no_grad(), autocast():
        new_ids, routing = greedy_answer(model, batch["input_ids"], batch["pixel_values"],
                                         {processor.tokenizer.eos_token_id}, MAX_NEW_TOKENS, **inputs)
    modalities = [m for m in MODALITY_IDS if m == "text" or m in media]
    rows, shares = routing_tables(list(zip(model.moe_layer_ids, routing)), model.config.num_experts, modalities)
    return {"answer": processor.tokenizer.decode(new_ids, skip_special_tokens=True).strip(), "question": question,
            "media": list(given), "headers": ["layer", "tokens of", "tokens"] + expert_names(), "rows": rows,
            "shares": shares}


__all__ = ["MAX_AUDIO_SECONDS", "answer", "default_prompt", "expert_names", "get_unimoe", "samples"]
