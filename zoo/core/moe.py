"""MoEBlock = router -> dispatch -> experts -> combine (+ always-on shared experts).

    hidden [B, S, H] or [T, H]
      routing = router(hidden)                      RoutingResult over E experts (E >= bank size: the rest are null experts)
      out     = dispatch(hidden, routing, experts)  sparse, dropless unless the router has a capacity
      out    += shared_experts(hidden)              optional
    -> (out, routing)
"""
from __future__ import annotations

import torch
from torch import nn

from .dispatch import check_backend, dispatch
from .expert_banks import ExpertBank, SharedExperts
from .routing import Router, RoutingResult, check_expert_mask
from .validation import check_instance


class MoEBlock(nn.Module):
    def __init__(
        self,
        router: Router,
        experts: ExpertBank,
        shared_experts: SharedExperts | None = None,
        dispatch_backend: str = "auto",
    ):
        super().__init__()
        check_instance(self, "router", router, Router)
        check_instance(self, "experts", experts, ExpertBank)
        check_instance(self, "shared_experts", shared_experts, nn.Module, allow_none=True)
        if router.hidden_size != experts.hidden_size:
            raise ValueError(f"router hidden_size ({router.hidden_size}) != experts hidden_size ({experts.hidden_size})")
        if router.num_experts < experts.num_experts:
            raise ValueError(
                f"router num_experts ({router.num_experts}) < experts num_experts ({experts.num_experts}); "
                "a router may only have more (the extra ones are null experts)"
            )
        check_backend(self, dispatch_backend)
        self.router = router
        self.experts = experts
        self.shared_experts = shared_experts
        self.dispatch_backend = dispatch_backend

    @property
    def hidden_size(self) -> int:
        return self.router.hidden_size

    @property
    def num_null_experts(self) -> int:
        return self.router.num_experts - self.experts.num_experts

    def forward(
        self,
        hidden: torch.Tensor,  # [B, S, H] or [T, H]
        modality_ids: torch.Tensor | None = None,  # [B, S] or [T]
        expert_mask: torch.Tensor | None = None,  # [E], [T, E], [B, E] (per sample) or [B, S, E]
        padding_mask: torch.Tensor | None = None,  # [B, S] or [T], True = real token
    ) -> tuple[torch.Tensor, RoutingResult]:
        shape = hidden.shape
        if hidden.dim() not in (2, 3) or shape[-1] != self.hidden_size:
            raise ValueError(f"MoEBlock expects hidden states [B, S, {self.hidden_size}] or [T, {self.hidden_size}], got {tuple(shape)}")
        tokens = shape[:-1]
        flat = hidden.reshape(-1, self.hidden_size)  # [T, H]
        routing = self.router(
            flat,
            expert_mask=self._flat_expert_mask(expert_mask, tokens),
            modality_ids=self._flat_per_token("modality_ids", modality_ids, tokens),
            padding_mask=self._flat_per_token("padding_mask", padding_mask, tokens),
        )
        out = dispatch(flat, routing, self.experts, self.dispatch_backend)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        return out.view(shape), routing

    @staticmethod
    def _flat_per_token(name: str, value: torch.Tensor | None, tokens: torch.Size) -> torch.Tensor | None:
        if value is None:
            return None
        if value.shape != tokens:
            raise ValueError(f"{name} must have shape {tuple(tokens)} (one entry per token), got {tuple(value.shape)}")
        return value.reshape(-1)

    def _flat_expert_mask(self, mask: torch.Tensor | None, tokens: torch.Size) -> torch.Tensor | None:
        if mask is None:
            return None
        check_expert_mask(mask)
        if mask.dim() == 1:
            return mask
        num_experts = self.router.num_experts
        if len(tokens) == 2 and mask.shape == (tokens[0], num_experts):  # one choice per sample (experts picked per request)
            mask = mask[:, None, :].expand(*tokens, num_experts)
        if mask.shape[:-1] != tokens and mask.shape[:-1] != (tokens.numel(),):
            raise ValueError(
                f"expert_mask must have shape ({num_experts},), (batch, {num_experts}) or {tuple(tokens) + (num_experts,)}, "
                f"got {tuple(mask.shape)}"
            )
        return mask.reshape(-1, mask.shape[-1])
