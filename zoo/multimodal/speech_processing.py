"""Speech and text into one token sequence: the processor for speech-language MoEs (MoME, Uni-MoE).

    audio clip (path | bytes | (rate, array) | array + sampling_rate)
        --zoo.multimodal.audio.load_audio--> 16 kHz mono [N] --chunk_waveform--> 30 s chunks
        --WhisperFeatureExtractor--> input_features [n_chunks, 80, 3000], feature_lengths [n_chunks]
    text with "<audio>" --processor--> input_ids [B, L]: the i-th "<audio>" expanded to the number of
        frames the tower + compressor give clip i:
            sum over its chunks of ceil(ceil(ceil(samples / 160) / 2) / rate)
               (mel frames: hop 160; encoder: conv stride 2; Matryoshka: groups of `rate`, last one partial)
    WhisperAudioTower(input_features, feature_lengths) -> [n_chunks, T, C], lengths
    MatryoshkaCompressor(..., rate) -> [n_chunks, T_r, D], lengths_r
    the first lengths_r frames of each chunk, in order -> splice_features(..., modality="audio")

`SpeechLanguageProcessor(feature_extractor, tokenizer, compression_rate=4)` is a transformers processor:
save_pretrained writes processor_config.json (the feature extractor's settings, the rate, the duration
limit) + the tokenizer files, and after `register_speech_processor(ConfigClass)` (done by `import zoo`
for the speech model types) AutoProcessor.from_pretrained(folder) rebuilds it. The rate can also be
chosen per call (`compression_rate=`), as a Matryoshka model serves several.
"""
from __future__ import annotations

import pathlib
from collections.abc import Sequence

import torch
from transformers import BatchFeature, WhisperFeatureExtractor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import PROCESSOR_NAME

from .audio import CHUNK_SAMPLES, DEFAULT_MAX_SECONDS, SAMPLING_RATE, chunk_waveform, load_audio
from .audio_tower import encoder_lengths, mel_frames
from .matryoshka import compressed_lengths

AUDIO_TOKEN = "<audio>"


def num_audio_tokens(num_samples: int, compression_rate: int = 1) -> int:
    """Frames the tower + compressor produce for a 16 kHz clip of `num_samples` (all its 30 s chunks)."""
    if compression_rate < 1:
        raise ValueError(f"compression_rate must be a positive integer, got {compression_rate}")
    total, left = 0, int(num_samples)
    while left > 0:
        chunk = min(left, CHUNK_SAMPLES)
        total += compressed_lengths(encoder_lengths(mel_frames(chunk)), compression_rate)
        left -= chunk
    return total


def _as_clip_list(audio) -> list:
    if audio is None:
        return []
    if isinstance(audio, list):
        return audio
    return [audio]  # one clip: a path, bytes, a (rate, array) tuple, an array or a tensor


class SpeechLanguageProcessor(ProcessorMixin):
    """(text with <audio>, audio clips) -> input_ids, attention_mask, input_features, feature_lengths.

    Also returns `chunks_per_audio` [n_clips]: how many 30 s chunks (rows of input_features) each clip
    became, in order. `compression_rate` is the Matryoshka rate the placeholders are counted for;
    `max_audio_seconds` refuses longer clips (None: no limit).
    """

    audio_token = AUDIO_TOKEN

    def __init__(self, feature_extractor=None, tokenizer=None, compression_rate: int = 1,
                 max_audio_seconds: float | None = DEFAULT_MAX_SECONDS, chat_template: str | None = None, **kwargs):
        if tokenizer is None:
            raise ValueError("SpeechLanguageProcessor needs a tokenizer")
        if feature_extractor is None:
            feature_extractor = WhisperFeatureExtractor()
        if not isinstance(feature_extractor, WhisperFeatureExtractor):
            raise ValueError(f"SpeechLanguageProcessor needs a WhisperFeatureExtractor, got {type(feature_extractor).__name__}")
        if feature_extractor.sampling_rate != SAMPLING_RATE or feature_extractor.hop_length != 160 or \
                feature_extractor.n_samples != CHUNK_SAMPLES:
            raise ValueError("the feature extractor must be Whisper's 16 kHz / hop 160 / 30 s setting "
                             f"(got {feature_extractor.sampling_rate} Hz, hop {feature_extractor.hop_length}, "
                             f"{feature_extractor.n_samples} samples)")
        self._check_rate(compression_rate)
        if max_audio_seconds is not None and not max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be positive or None, got {max_audio_seconds!r}")
        super().__init__(feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)
        if AUDIO_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
        self.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        self.compression_rate = compression_rate
        self.max_audio_seconds = max_audio_seconds

    @staticmethod
    def _check_rate(rate) -> int:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ValueError(f"compression_rate must be a positive integer, got {rate!r}")
        return rate

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        path = pathlib.Path(pretrained_model_name_or_path)
        if path.is_dir() and not (path / PROCESSOR_NAME).is_file():
            raise FileNotFoundError(f"{path / PROCESSOR_NAME} not found: {path} holds no saved SpeechLanguageProcessor "
                                    "(save one with processor.save_pretrained)")
        if not path.exists() and (path.is_absolute() or str(pretrained_model_name_or_path).startswith(".")):
            raise FileNotFoundError(f"{path} does not exist: no saved SpeechLanguageProcessor there")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def num_audio_tokens(self, num_samples: int, compression_rate: int | None = None) -> int:
        rate = self.compression_rate if compression_rate is None else self._check_rate(compression_rate)
        return num_audio_tokens(num_samples, rate)

    def prompt(self, instruction: str, answer: str | None = None) -> str:
        """One user turn with one clip (the chat template's format); the answer (training) follows."""
        messages = [{"role": "user", "content": f"{AUDIO_TOKEN}\n{instruction}"}]
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )
        return text if answer is None else text + answer

    def expand_audio_tokens(self, texts: Sequence[str], token_counts: Sequence[int]) -> list[str]:
        """The i-th AUDIO_TOKEN (in reading order over all texts) -> token_counts[i] placeholders."""
        counts = iter(token_counts)
        expanded = []
        for text in texts:
            pieces = text.split(AUDIO_TOKEN)
            out = [pieces[0]]
            for piece in pieces[1:]:
                out.append(AUDIO_TOKEN * next(counts))
                out.append(piece)
            expanded.append("".join(out))
        return expanded

    def audio_features(self, audio, sampling_rate: int | None = None) -> BatchFeature:
        """Clips -> input_features [n_chunks, 80, 3000], feature_lengths [n_chunks], chunks_per_audio [n_clips],
        audio_samples [n_clips] (16 kHz samples per clip)."""
        clips = _as_clip_list(audio)
        chunks, per_clip, samples = [], [], []
        for clip in clips:
            waveform = load_audio(clip, sampling_rate, max_seconds=self.max_audio_seconds)
            pieces = chunk_waveform(waveform)
            chunks.extend(pieces)
            per_clip.append(len(pieces))
            samples.append(waveform.numel())
        mels = self.feature_extractor.feature_size
        if chunks:
            input_features = self.feature_extractor(
                [c.numpy() for c in chunks], sampling_rate=SAMPLING_RATE, padding="max_length", return_tensors="pt"
            )["input_features"]
        else:
            input_features = torch.zeros(0, mels, self.feature_extractor.nb_max_frames)
        return BatchFeature({
            "input_features": input_features,
            "feature_lengths": torch.tensor([mel_frames(c.numel()) for c in chunks], dtype=torch.long),
            "chunks_per_audio": torch.tensor(per_clip, dtype=torch.long),
            "audio_samples": torch.tensor(samples, dtype=torch.long),
        })

    def __call__(self, text: str | Sequence[str] = "", audio=None, sampling_rate: int | None = None,
                 compression_rate: int | None = None, padding_side: str = "right", **kwargs) -> BatchFeature:
        rate = self.compression_rate if compression_rate is None else self._check_rate(compression_rate)
        texts = [text] if isinstance(text, str) else list(text)
        clips = _as_clip_list(audio)
        placeholders = sum(t.count(AUDIO_TOKEN) for t in texts)
        if placeholders != len(clips):
            raise ValueError(f"{len(clips)} audio clip(s) given but the text has {placeholders} {AUDIO_TOKEN} placeholder(s)")
        audio_inputs = self.audio_features(clips, sampling_rate)
        counts = [num_audio_tokens(int(n), rate) for n in audio_inputs["audio_samples"]]
        expanded = self.expand_audio_tokens(texts, counts)
        self.tokenizer.padding_side = padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        batch = self.tokenizer(expanded, return_tensors="pt", padding=True, add_special_tokens=False, **kwargs)
        for key in ("input_features", "feature_lengths", "chunks_per_audio"):
            batch[key] = audio_inputs[key]
        return batch

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "input_features", "feature_lengths"]


def gather_audio_frames(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[n_chunks, T, D] + lengths [n_chunks] -> [sum(lengths), D]: each chunk's real frames, in order
    (what splice_features writes at the <audio> placeholders)."""
    valid = torch.arange(features.shape[1], device=features.device) < lengths[:, None]  # [n, T]
    return features[valid]


def register_speech_processor(config_class) -> None:
    """Make AutoProcessor / AutoFeatureExtractor build the speech processor for this model type."""
    from transformers import AutoFeatureExtractor, AutoProcessor

    AutoProcessor.register(config_class, SpeechLanguageProcessor, exist_ok=True)
    AutoFeatureExtractor.register(config_class, WhisperFeatureExtractor, exist_ok=True)


__all__ = ["AUDIO_TOKEN", "SpeechLanguageProcessor", "gather_audio_frames", "num_audio_tokens",
           "register_speech_processor"]
