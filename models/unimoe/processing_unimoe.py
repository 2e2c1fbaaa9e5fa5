"""UniMoeProcessor: text with <image> / <video> / <audio> placeholders, images, videos and speech -> model inputs.

    images  --VisionLanguageImageProcessor-->                        pixel_values [n_img, 3, S, S]
    videos  --zoo.multimodal.video.sample_frames (F evenly spread, limits checked) + the same preprocessing-->
                                                                      pixel_values_videos [n_vid, F, 3, S, S]
    audio   --load_audio + 30 s chunks + WhisperFeatureExtractor (SpeechLanguageProcessor.audio_features)-->
                                                                      input_features [n_chunks, 80, 3000], feature_lengths,
                                                                      chunks_per_audio [n_clips]
    text    each <image> -> num_image_tokens ids, each <video> -> num_image_tokens ids (the frames are pooled
            into one image's tokens), the i-th <audio> -> num_audio_query_tokens x (chunks of clip i)

    processor(text=processor.prompt("what is said?", media=("audio",)), audio=clip, sampling_rate=16000)

The speech part is zoo.multimodal.speech_processing's (this class extends it); after `import zoo`,
`AutoProcessor.from_pretrained(folder)` rebuilds it from processor_config.json + the tokenizer files.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import BatchFeature

from zoo.multimodal.audio import DEFAULT_MAX_SECONDS, num_chunks
from zoo.multimodal.processing import IMAGE_TOKEN, VisionLanguageImageProcessor, preprocess_images, tokenizer_call_kwargs
from zoo.multimodal.speech_processing import AUDIO_TOKEN, SpeechLanguageProcessor
from zoo.multimodal.video import DEFAULT_MAX_FRAMES, DEFAULT_NUM_FRAMES, VIDEO_TOKEN, sample_frames

MEDIA_TOKENS = {"image": IMAGE_TOKEN, "video": VIDEO_TOKEN, "audio": AUDIO_TOKEN}


def _as_list(items) -> list:
    if items is None:
        return []
    return list(items) if isinstance(items, (list, tuple)) else [items]


class UniMoeProcessor(SpeechLanguageProcessor):
    """(text, images, videos, audio) -> input_ids, attention_mask, pixel_values, pixel_values_videos,
    input_features, feature_lengths, chunks_per_audio. See the module docstring.

    Args:
        image_processor: a VisionLanguageImageProcessor (the tower's size and normalisation), or None (224 px, ImageNet).
        feature_extractor, tokenizer: as SpeechLanguageProcessor (Whisper's 16 kHz / 30 s feature extractor).
        num_image_tokens (`int`): LLM tokens per image (and per video): the model's `num_image_tokens()`.
        num_audio_query_tokens (`int`, 50): LLM tokens per 30 s of audio (the model's Q-Former queries).
        num_video_frames (`int`, 8): frames sampled per video.
        max_video_frames (`int`), max_video_seconds (`float`): longer input videos are refused (seconds need fps).
        max_audio_seconds (`float`): longer clips are refused.
    """

    def __init__(self, image_processor=None, feature_extractor=None, tokenizer=None, num_image_tokens: int = 1,
                 num_audio_query_tokens: int = 50, num_video_frames: int = DEFAULT_NUM_FRAMES,
                 max_video_frames: int | None = DEFAULT_MAX_FRAMES, max_video_seconds: float | None = DEFAULT_MAX_SECONDS,
                 max_audio_seconds: float | None = DEFAULT_MAX_SECONDS, chat_template: str | None = None, **kwargs):
        for name, value in (("num_image_tokens", num_image_tokens), ("num_audio_query_tokens", num_audio_query_tokens),
                            ("num_video_frames", num_video_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UniMoeProcessor.{name} must be a positive integer, got {value!r}")
        if image_processor is None:
            image_processor = VisionLanguageImageProcessor()
        super().__init__(feature_extractor, tokenizer, compression_rate=1, max_audio_seconds=max_audio_seconds,
                         chat_template=chat_template, image_processor=image_processor, **kwargs)
        for token in (IMAGE_TOKEN, VIDEO_TOKEN):
            if token not in tokenizer.get_vocab():
                tokenizer.add_special_tokens({"additional_special_tokens": [token]})
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        self.num_image_tokens = num_image_tokens
        self.num_audio_query_tokens = num_audio_query_tokens
        self.num_video_frames = num_video_frames
        self.max_video_frames = max_video_frames
        self.max_video_seconds = max_video_seconds

    def prompt(self, instruction: str, answer: str | None = None, media: Sequence[str] = ("audio",)) -> str:
        """One user turn: the placeholders of `media` (in order), then the instruction; the answer (training) follows."""
        unknown = sorted(set(media) - set(MEDIA_TOKENS))
        if unknown:
            raise ValueError(f"prompt media {unknown} unknown; known: {sorted(MEDIA_TOKENS)}")
        content = "".join(MEDIA_TOKENS[m] for m in media) + "\n" + instruction
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=self.chat_template,
                                                  add_generation_prompt=True, tokenize=False)
        return text if answer is None else text + answer

    def num_audio_tokens(self, num_samples: int, compression_rate: int | None = None) -> int:
        """LLM tokens of a 16 kHz clip of `num_samples`: Q per started 30 s chunk."""
        return self.num_audio_query_tokens * num_chunks(int(num_samples))

    def video_pixels(self, videos, video_fps=None) -> torch.Tensor:
        """Videos -> pixel_values_videos [n, F, 3, S, S] (F = num_video_frames), the limits checked per video."""
        videos = _as_list(videos) if not hasattr(videos, "ndim") else [videos]
        rates = video_fps if isinstance(video_fps, (list, tuple)) else [video_fps] * len(videos)
        if len(rates) != len(videos):
            raise ValueError(f"video_fps gives {len(rates)} rates for {len(videos)} videos")
        size = self.image_processor.image_size
        clips = []
        for i, (video, fps) in enumerate(zip(videos, rates)):
            frames = sample_frames(video, self.num_video_frames, fps=fps, max_frames=self.max_video_frames,
                                   max_seconds=self.max_video_seconds, what=f"video {i}")
            clips.append(preprocess_images(frames, size, self.image_processor.image_mean, self.image_processor.image_std))
        if not clips:
            return torch.empty(0, self.num_video_frames, 3, size, size)
        return torch.stack(clips)

    def __call__(self, text: str | Sequence[str] = "", images=None, videos=None, audio=None,
                 sampling_rate: int | None = None, video_fps=None, padding_side: str = "right", **kwargs) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text)
        given = {"image": _as_list(images), "video": [videos] if hasattr(videos, "ndim") else _as_list(videos),
                 "audio": audio if isinstance(audio, list) else _as_list(None if audio is None else [audio])}
        for modality, token in MEDIA_TOKENS.items():
            placeholders = sum(t.count(token) for t in texts)
            if placeholders != len(given[modality]):
                raise ValueError(f"{len(given[modality])} {modality} input(s) given but the text has {placeholders} "
                                 f"{token} placeholder(s)")
        pixel_values = self.image_processor(given["image"])["pixel_values"]
        pixel_values_videos = self.video_pixels(given["video"], video_fps)
        audio_inputs = self.audio_features(given["audio"], sampling_rate)
        expanded = [t.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.num_image_tokens)
                    .replace(VIDEO_TOKEN, VIDEO_TOKEN * self.num_image_tokens) for t in texts]
        expanded = self.expand_audio_tokens(expanded, [self.num_audio_tokens(int(n)) for n in audio_inputs["audio_samples"]])
        self.tokenizer.padding_side = padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        batch = self.tokenizer(expanded, return_tensors="pt", padding=True, add_special_tokens=False,
                               **tokenizer_call_kwargs(kwargs, type(self).__name__))
        batch["pixel_values"] = pixel_values
        batch["pixel_values_videos"] = pixel_values_videos
        for key in ("input_features", "feature_lengths", "chunks_per_audio"):
            batch[key] = audio_inputs[key]
        return BatchFeature(data=dict(batch))  # .to(dtype=...) casts the float inputs only, as pipelines expect

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values", "pixel_values_videos", "input_features",
                "feature_lengths", "chunks_per_audio"]


def register_unimoe_processor(config_class) -> None:
    """AutoProcessor -> UniMoeProcessor; AutoImageProcessor / AutoFeatureExtractor -> its two sub-processors."""
    from transformers import AutoImageProcessor, AutoProcessor

    from zoo.multimodal.speech_processing import register_speech_processor

    register_speech_processor(config_class)  # AutoFeatureExtractor -> WhisperFeatureExtractor
    backends = {"pil": VisionLanguageImageProcessor, "torchvision": VisionLanguageImageProcessor}
    AutoImageProcessor.register(config_class, image_processor_classes=backends, exist_ok=True)
    AutoProcessor.register(config_class, UniMoeProcessor, exist_ok=True)


__all__ = ["MEDIA_TOKENS", "UniMoeProcessor", "register_unimoe_processor"]
