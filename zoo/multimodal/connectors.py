"""Connectors: vision-tower tokens -> LLM embedding space, within a token budget.

    features [B, N, C] -> pool to the budget (grid of sqrt(N) -> grid of sqrt(budget)) -> projector -> [B, N', H]

`mlp2x_gelu` is LLaVA's projector (Linear -> GELU -> Linear; keys `0.*`, `2.*` like `mm_projector`).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def pool_to_budget(features: torch.Tensor, budget: int | None) -> torch.Tensor:
    """Average-pool a square token grid [B, N, C] down to at most `budget` tokens (also a square)."""
    num_tokens = features.shape[1]
    if budget is None or num_tokens <= budget:
        return features
    side, target = math.isqrt(num_tokens), math.isqrt(budget)
    if side * side != num_tokens or target * target != budget:
        raise ValueError(f"token budget pooling needs square grids: {num_tokens} tokens -> budget {budget}")
    grid = features.transpose(1, 2).reshape(features.shape[0], -1, side, side)  # [B, C, s, s]
    return F.adaptive_avg_pool2d(grid, target).flatten(2).transpose(1, 2)  # [B, budget, C]


def build_projector(kind: str, in_features: int, out_features: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, out_features)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))
    raise ValueError(f"projector kind must be 'mlp2x_gelu' or 'linear', got {kind!r}")


class Connector(nn.Module):
    def __init__(self, kind: str, in_features: int, out_features: int, token_budget: int | None = None):
        super().__init__()
        if token_budget is not None and token_budget <= 0:
            raise ValueError(f"token_budget must be a positive integer or None, got {token_budget}")
        self.token_budget = token_budget
        self.in_features = in_features
        self.projector = build_projector(kind, in_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, C] -> [B, N', H]
        if features.shape[-1] != self.in_features:
            raise ValueError(f"connector expects {self.in_features}-d tower features, got {features.shape[-1]}")
        return self.projector(pool_to_budget(features, self.token_budget))
