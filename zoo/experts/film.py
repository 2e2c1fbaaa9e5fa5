"""Feature-Modulated Experts (FME, MoFME, arXiv 2312.16610): one shared FFN, per-expert FiLM.

A conventional MoE layer holds E full FFNs. FME holds ONE shared FFN split in two halves and puts a
cheap per-expert feature-wise linear modulation between them, so adding an expert costs a FiLM
(two D x D maps), not an FFN:

    u = LN(x)                                           [T, D]
    h = GELU(W_a u) * (W_b u)                           [T, D]   shared "basenet" (first half)
    FiLM_i(h) = gamma_i(h) * h + beta_i(h)              [T, D]   per expert, input-dependent
    y = sum_i r_i(x) FiLM_i(h)                          [T, D]   sparse: only the k routed experts run
    out = Adaptor(y) = W_2 Dropout(GELU(W_1 y))         [T, D]   shared (second half, D -> 4D -> D)

The FiLM bank is an ordinary zoo expert bank (stacked [E, 2D, D] parameters run through
`groups.linear`), so the routing core's sorted, dropless dispatch applies: a token computes only
the FiLMs of the experts it was routed to. The released code computes all E FiLMs and multiplies
most by zero; the sum is the same.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.dispatch import check_backend, dispatch
from ..core.expert_banks import ExpertBank
from ..core.routing import Router, RoutingResult
from ..core.validation import check_instance, check_number, check_positive_int


class FiLMExperts(ExpertBank):
    """E FiLM modulations FiLM_i(h) = gamma_i(h) * h + beta_i(h), gamma_i / beta_i linear D -> D.

    film_proj [E, 2D, D] (gamma rows first, then beta) + film_proj_bias [E, 2D]. gamma starts at
    the identity modulation (gamma = 1, beta = 0) so a fresh layer passes h through, and experts
    differ only by what training puts in film_proj.
    """

    def __init__(self, num_experts: int, hidden_size: int):
        super().__init__(num_experts, hidden_size, hidden_size)
        self.film_proj = nn.Parameter(torch.empty(num_experts, 2 * hidden_size, hidden_size))
        self.film_proj_bias = nn.Parameter(torch.empty(num_experts, 2 * hidden_size))
        nn.init.normal_(self.film_proj, std=0.02)
        with torch.no_grad():
            self.film_proj_bias.zero_()
            self.film_proj_bias[:, :hidden_size] = 1.0  # gamma(h) ~ 1 at init

    def forward(self, h: torch.Tensor, groups) -> torch.Tensor:  # h [N, D], rows sorted by expert
        gamma, beta = groups.linear(h, self.film_proj, self.film_proj_bias).chunk(2, dim=-1)  # [N, D] each
        return gamma * h + beta


class FeatureModulatedExperts(nn.Module):
    """The FME layer: LN -> shared basenet -> routed FiLM experts -> shared adaptor.

    `forward(x [B, S, D] | [T, D]) -> (out, RoutingResult)`, the MoEBlock signature. The router reads
    the layer input x (as r_i(x) in the paper), the FiLMs modulate the basenet features h.
    """

    def __init__(self, router: Router, hidden_size: int, adaptor_ratio: int = 4, dropout: float = 0.0,
                 dispatch_backend: str = "auto"):
        super().__init__()
        check_positive_int(self, hidden_size=hidden_size, adaptor_ratio=adaptor_ratio)
        check_number(self, "dropout", dropout, low=0, high=1, high_open=True)
        check_instance(self, "router", router, Router)
        check_backend(self, dispatch_backend)
        if router.hidden_size != hidden_size:
            raise ValueError(f"router hidden_size ({router.hidden_size}) != FME hidden_size ({hidden_size})")
        self.hidden_size = hidden_size
        self.norm = nn.LayerNorm(hidden_size)
        self.basenet_gate = nn.Linear(hidden_size, hidden_size)  # W_a
        self.basenet_value = nn.Linear(hidden_size, hidden_size)  # W_b
        self.router = router
        self.experts = FiLMExperts(router.num_experts, hidden_size)
        self.adaptor = nn.Sequential(
            nn.Linear(hidden_size, adaptor_ratio * hidden_size), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(adaptor_ratio * hidden_size, hidden_size),
        )
        self.dispatch_backend = dispatch_backend

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RoutingResult]:
        shape = x.shape
        if x.dim() not in (2, 3) or shape[-1] != self.hidden_size:
            raise ValueError(f"FeatureModulatedExperts expects [B, S, {self.hidden_size}] or [T, {self.hidden_size}], got {tuple(shape)}")
        flat = x.reshape(-1, self.hidden_size)  # [T, D]
        u = self.norm(flat)
        h = nn.functional.gelu(self.basenet_gate(u)) * self.basenet_value(u)  # [T, D]
        routing = self.router(flat)
        y = dispatch(h, routing, self.experts, self.dispatch_backend)  # [T, D] = sum_i r_i FiLM_i(h)
        return self.adaptor(y).view(shape), routing
