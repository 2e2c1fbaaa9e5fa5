"""Matryoshka compression of audio-tower frames: one model, many token rates (Llama-MTSK style).

    features [B, T, C], lengths [B]  --compress at rate r-->  [B, ceil(T / r), C or r*C], ceil(lengths / r)
        --projector for rate r: Linear(C_in, I) -> ReLU -> Linear(I, D) -> LayerNorm(D)-->  [B, T_r, D]

Two ways to merge r consecutive frames (Cappellazzo et al., "Adaptive Audio-Visual Speech Recognition
via Matryoshka-Based Multimodal LLMs", 2025: average pooling and stacking):
    "avg"    the mean of the group's real frames                       C_in = C
    "stack"  the group's frames concatenated in time order, [f0|f1|..] C_in = r * C
A clip's last group may be partial (its length is not a multiple of r): "avg" averages only the frames
it has, "stack" fills the missing slots with zeros. Groups never reach past a clip's own length, so a
clip compresses the same alone or in a padded batch; outputs beyond the new lengths are zero.

`MatryoshkaCompressor(rates=(1, 2, 4), mode=..., in_features=C, out_features=D)` holds one projector
per rate in a ModuleDict keyed by the rate ("1", "2", "4"); `forward(features, lengths, rate)` picks one,
so training can sample a rate per step and inference chooses the token budget.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MODES = ("avg", "stack")


def compressed_lengths(lengths: torch.Tensor | int, rate: int):
    """ceil(lengths / rate): the last partial group counts."""
    if isinstance(lengths, torch.Tensor):
        return (lengths + rate - 1) // rate
    return -(-int(lengths) // rate)


def _check_rate(rate) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(f"compression rate must be a positive integer, got {rate!r}")
    return rate


def _grouped(features: torch.Tensor, lengths: torch.Tensor, rate: int):
    """-> (frames zeroed past each length, grouped [B, G, r, C]; real frames per group [B, G])."""
    batch, frames, channels = features.shape
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have one entry per clip ({batch}), got shape {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > frames):
        raise ValueError(f"lengths must lie in [0, {frames}] (the frames given), got {lengths.tolist()}")
    groups = compressed_lengths(frames, rate)
    valid = torch.arange(frames, device=features.device) < lengths[:, None]  # [B, T]
    x = features * valid[..., None].to(features.dtype)
    x = nn.functional.pad(x, (0, 0, 0, groups * rate - frames))  # [B, G*r, C]
    start = torch.arange(groups, device=features.device) * rate  # [G]
    counts = (lengths[:, None] - start).clamp(min=0, max=rate)  # [B, G]
    return x.reshape(batch, groups, rate, channels), counts


def average_pool(features: torch.Tensor, lengths: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, C] -> [B, ceil(T / r), C]: mean of each group's real frames; lengths -> ceil(lengths / r)."""
    rate = _check_rate(rate)
    grouped, counts = _grouped(features, lengths.long(), rate)
    pooled = grouped.sum(dim=2) / counts.clamp(min=1)[..., None].to(features.dtype)  # [B, G, C]
    return pooled, compressed_lengths(lengths.long(), rate)


def stack_frames(features: torch.Tensor, lengths: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, C] -> [B, ceil(T / r), r*C]: each group's frames side by side, missing ones zero."""
    rate = _check_rate(rate)
    grouped, _ = _grouped(features, lengths.long(), rate)
    batch, groups, _, channels = grouped.shape
    return grouped.reshape(batch, groups, rate * channels), compressed_lengths(lengths.long(), rate)


COMPRESSORS = {"avg": average_pool, "stack": stack_frames}


class MatryoshkaCompressor(nn.Module):
    """Compress at a chosen rate, then that rate's projector; frames past the new lengths are zero."""

    def __init__(self, *, in_features: int, out_features: int, rates: Sequence[int] = (1, 2, 4, 8),
                 mode: str = "avg", intermediate_size: int | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"matryoshka mode must be one of {MODES}, got {mode!r}")
        rates = [_check_rate(r) for r in rates]
        if not rates or len(set(rates)) != len(rates):
            raise ValueError(f"matryoshka rates must be a non-empty list of distinct positive integers, got {rates}")
        for name, value in (("in_features", in_features), ("out_features", out_features),
                            ("intermediate_size", intermediate_size if intermediate_size is not None else 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MatryoshkaCompressor.{name} must be a positive integer, got {value!r}")
        self.mode = mode
        self.rates = tuple(sorted(rates))
        self.in_features, self.out_features = in_features, out_features
        hidden = intermediate_size or out_features
        self.projectors = nn.ModuleDict()
        for rate in self.rates:
            width = in_features * (rate if mode == "stack" else 1)
            self.projectors[str(rate)] = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out_features), nn.LayerNorm(out_features)
            )

    def compress(self, features: torch.Tensor, lengths: torch.Tensor, rate: int):
        """The merge alone (no projector): -> ([B, T_r, C_in], lengths_r)."""
        if features.dim() != 3 or features.shape[-1] != self.in_features:
            raise ValueError(f"matryoshka compressor expects [batch, frames, {self.in_features}] features, "
                             f"got {tuple(features.shape)}")
        if rate not in self.rates:
            raise ValueError(f"compression rate {rate!r} has no projector; this compressor has rates {list(self.rates)}")
        return COMPRESSORS[self.mode](features, lengths, rate)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        merged, new_lengths = self.compress(features, lengths, rate)
        projector = self.projectors[str(rate)]
        out = projector(merged.to(projector[0].weight.dtype))  # [B, T_r, D]
        valid = torch.arange(out.shape[1], device=out.device) < new_lengths[:, None]
        return out * valid[..., None].to(out.dtype), new_lengths
