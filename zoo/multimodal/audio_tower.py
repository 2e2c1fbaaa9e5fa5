"""The Whisper encoder as a frozen audio tower: log-mel frames in, 50 feature frames per second out.

    tower(input_features [B, 80, F], feature_lengths [B]) -> features [B, T, C], lengths [B]
        lengths = ceil(feature_lengths / 2) (conv2 has stride 2)   T = max(lengths)   C = tower.hidden_size
        frames beyond a clip's length are zero

    input_features --conv1 (k3, s1) + GELU--> --conv2 (k3, s2) + GELU--> + embed_positions[:T']
                   --encoder layers--> final LayerNorm

Built from a spec dict like the vision towers (it lives in a model config):
    {"kind": "whisper", "name": "tiny.en", "weights": "packaged"}   real weights (zoo.integrations.whisper_weights)
    {"kind": "whisper", "name": "base"}                             that architecture, random init (meta device ok)
    {"kind": "whisper", "config": {...WhisperConfig kwargs...}}      a random (tiny) encoder for tests
    optional "trim": bool                                           the encoder length, below

Encoder length ("trim"). Whisper always encodes a 30 s window (3000 mel frames -> 1500 positions),
short clips padded with silence, and transformers' WhisperEncoder refuses anything else. With
trim=True the tower runs the same modules on the clip's own frames only (embed_positions[:T']):
each clip is computed as if alone at its own length, also inside a padded batch (frames past its end
are zeroed before each convolution, as the convolution's zero padding would be, and masked as
attention keys). trim=False (the default) reproduces Whisper exactly: input must be 3000 frames.
benchmarks/audio_encoder.py measured both on 16 real Asterisk prompts with tiny.en: trimming is 26x /
13x / 3.6x faster on 1 / 3 / 10 s clips, but on clips under 2 s the trimmed features drift far from
the padded ones (relative L2 error 0.30-0.66) and Whisper's own decoder then mis-transcribes 3 of 5 of
them (WER over all 16: 0.043 padded, 0.053 trimmed); from about 3 s on the error is 0.10-0.26 and the
transcripts hold. So padding stays the default (trim=False); trim=True is an opt-in for systems that
train their connector on trimmed features and want the speed.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from .audio import SAMPLING_RATE

HOP_LENGTH = 160  # WhisperFeatureExtractor: 10 ms per mel frame
CONV_STRIDE = 2  # conv2
DEFAULT_TRIM = False  # measured: see the module docstring


def mel_frames(num_samples: torch.Tensor | int, max_frames: int = 3000):
    """Mel frames a 16 kHz clip of `num_samples` fills in WhisperFeatureExtractor's output (its frame-level
    attention mask): ceil(num_samples / 160), at most one window."""
    if isinstance(num_samples, torch.Tensor):
        return torch.clamp((num_samples + HOP_LENGTH - 1) // HOP_LENGTH, max=max_frames)
    return min(-(-int(num_samples) // HOP_LENGTH), max_frames)


def encoder_lengths(feature_lengths: torch.Tensor | int):
    """Encoder positions for `feature_lengths` mel frames: conv2 (kernel 3, stride 2, padding 1) -> ceil(L / 2)."""
    if isinstance(feature_lengths, torch.Tensor):
        return (feature_lengths + CONV_STRIDE - 1) // CONV_STRIDE
    return -(-int(feature_lengths) // CONV_STRIDE)


class WhisperAudioTower(nn.Module):
    """transformers' WhisperEncoder, frozen (parameters without grad, always in eval mode)."""

    frames_per_second = SAMPLING_RATE // HOP_LENGTH // CONV_STRIDE  # 50

    def __init__(self, encoder: nn.Module, *, trim: bool = DEFAULT_TRIM, name: str | None = None):
        super().__init__()
        if not isinstance(trim, bool):
            raise ValueError(f"audio tower 'trim' must be true or false, got {trim!r}")
        self.encoder = encoder
        self.trim = trim
        self.name = name
        config = encoder.config
        self.hidden_size = config.d_model
        self.num_mel_bins = config.num_mel_bins
        self.max_positions = config.max_source_positions  # 1500
        self.max_frames = self.max_positions * CONV_STRIDE  # 3000 = 30 s
        self.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):  # frozen: dropout/layerdrop stay off
        super().train(mode)
        self.encoder.eval()
        return self

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        return encoder_lengths(feature_lengths)

    def _check(self, input_features: torch.Tensor, feature_lengths: torch.Tensor | None) -> torch.Tensor:
        if input_features.dim() != 3 or input_features.shape[1] != self.num_mel_bins:
            raise ValueError(f"input_features must be [batch, {self.num_mel_bins} mel bins, frames], "
                             f"got {tuple(input_features.shape)}")
        batch, _, frames = input_features.shape
        if frames > self.max_frames:
            raise ValueError(f"input_features has {frames} frames, more than one Whisper window ({self.max_frames}); "
                             "split longer audio into 30 s chunks (zoo.multimodal.audio.chunk_waveform)")
        if not self.trim and frames != self.max_frames:
            raise ValueError(f"the padded Whisper encoder (trim=False) needs {self.max_frames} mel frames (30 s, "
                             f"WhisperFeatureExtractor's default padding), got {frames}")
        if feature_lengths is None:
            return torch.full((batch,), frames, dtype=torch.long, device=input_features.device)
        lengths = torch.as_tensor(feature_lengths, device=input_features.device).long()
        if lengths.shape != (batch,):
            raise ValueError(f"feature_lengths must have one entry per clip ({batch}), got shape {tuple(lengths.shape)}")
        if batch and (int(lengths.min()) < 1 or int(lengths.max()) > frames):
            raise ValueError(f"feature_lengths must lie in [1, {frames}] (the frames given), got {lengths.tolist()}")
        return lengths

    def forward(self, input_features: torch.Tensor, feature_lengths: torch.Tensor | None = None):
        lengths = self._check(input_features, feature_lengths)
        out_lengths = encoder_lengths(lengths)  # [B]
        dtype = self.encoder.conv1.weight.dtype
        if self.trim:
            hidden = self._encode_trimmed(input_features.to(dtype), lengths)
        else:
            hidden = self.encoder(input_features.to(dtype)).last_hidden_state  # [B, 1500, C]
        keep = int(out_lengths.max()) if out_lengths.numel() else 0
        hidden = hidden[:, :keep]
        valid = torch.arange(keep, device=hidden.device) < out_lengths[:, None]  # [B, T]
        return hidden * valid[..., None].to(hidden.dtype), out_lengths

    def _encode_trimmed(self, input_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """WhisperEncoder's modules on the first max(lengths) frames; each clip as if run alone."""
        encoder = self.encoder
        frames = int(lengths.max())
        x = input_features[:, :, :frames]
        ragged = bool((lengths != frames).any())
        if ragged:  # beyond a clip's end its solo run sees conv1's zero padding
            x = x * (torch.arange(frames, device=x.device) < lengths[:, None])[:, None, :].to(x.dtype)
        h = F.gelu(encoder.conv1(x))  # [B, C, frames]
        if ragged:  # ... and conv2's zero padding
            h = h * (torch.arange(frames, device=h.device) < lengths[:, None])[:, None, :].to(h.dtype)
        h = F.gelu(encoder.conv2(h)).transpose(1, 2)  # [B, T, C]
        positions = h.shape[1]
        h = h + encoder.embed_positions.weight[:positions]
        mask = None
        if ragged:  # padded positions are never attended to: [B, 1, 1, T] additive
            keys_valid = torch.arange(positions, device=h.device) < encoder_lengths(lengths)[:, None]
            mask = torch.zeros(keys_valid.shape, dtype=h.dtype, device=h.device)
            mask = mask.masked_fill(~keys_valid, torch.finfo(h.dtype).min)[:, None, None, :]
        for layer in encoder.layers:
            h = layer(h, mask)
        return encoder.layer_norm(h)


def _encoder_from_config(config) -> nn.Module:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(config).eval()


def build_audio_tower(spec: Mapping, load_weights: bool = True) -> WhisperAudioTower:
    """A WhisperAudioTower from its spec (see the module docstring). `load_weights=False` builds the
    architecture only (from_pretrained fills in the weights; also usable on the meta device)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind != "whisper":
        raise ValueError(f"audio_tower kind must be 'whisper', got {kind!r}")
    trim = spec.pop("trim", DEFAULT_TRIM)
    name, weights, config = spec.pop("name", None), spec.pop("weights", None), spec.pop("config", None)
    if spec:
        raise ValueError(f"audio_tower spec has unknown keys {sorted(spec)}; known: kind, name, weights, config, trim")
    if (name is None) == (config is None):
        raise ValueError("audio_tower spec needs exactly one of 'name' (a packaged Whisper) or 'config' "
                         "(a WhisperConfig dict)")
    if weights not in (None, "packaged"):
        raise ValueError(f"audio_tower weights must be 'packaged' or absent, got {weights!r}")
    if config is not None:
        from transformers import WhisperConfig

        if weights is not None:
            raise ValueError("audio_tower 'weights': 'packaged' needs a 'name', not a 'config'")
        config = dict(config)
        config.pop("model_type", None)
        return WhisperAudioTower(_encoder_from_config(WhisperConfig(**config)), trim=trim)
    from ..integrations.whisper_weights import load_whisper, packaged_whisper

    packaged = packaged_whisper(name)  # an unknown name is an error naming the packaged ones
    on_meta = torch.empty(0).device.type == "meta"  # inside `with torch.device("meta")`
    if weights == "packaged" and load_weights and not on_meta:
        model, _ = load_whisper(name, progress=False)
        return WhisperAudioTower(model.model.encoder, trim=trim, name=name)
    return WhisperAudioTower(_encoder_from_config(packaged.config()), trim=trim, name=name)
