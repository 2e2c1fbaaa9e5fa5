"""Routers: hidden states in, a `RoutingResult` out.

Every router follows the same four steps, all in fp32:

    logits  = router_logits(hidden)            [T, E]   (a linear gate, or one gate per modality)
    logits += external mask / bias             [T, E]   (experts chosen elsewhere, e.g. by the LLM; -inf = forbidden)
    probs   = softmax(logits)                  [T, E]
    indices, weights, mask = select(probs)     [T, k]   (top-k, or cumulative threshold: variable k)
    mask   &= capacity(rank priority)          [T, k]   (optional; dropped slots are counted)

and owns its auxiliary losses (`load_balance`, `z_loss`) and metrics (per-expert load, dropped
share, experts per token). Ties between equal probabilities go to the lower expert index.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .losses import load_balancing_loss, router_z_loss
from .validation import FieldTypeError, check_bool, check_instance, check_number, check_positive_int

class LazyLosses(Mapping):
    """A router's auxiliary losses, computed on first access (in the grad mode of the forward that made them,
    in fp32): an inference pass that never reads them skips that work."""

    def __init__(self, compute, device_type: str = "cpu"):
        self._compute, self._losses = compute, None
        self._grad, self._device_type = torch.is_grad_enabled(), device_type

    def _values(self) -> dict[str, torch.Tensor]:
        if self._losses is None:
            with torch.set_grad_enabled(self._grad), torch.autocast(self._device_type, enabled=False):
                self._losses, self._compute = self._compute(), None
        return self._losses

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._values()[name]

    def __iter__(self):
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())

    def __repr__(self) -> str:
        return f"LazyLosses({'not computed' if self._losses is None else self._losses})"


@dataclass
class RoutingResult:
    """What a router decided for T tokens over E experts (k slots per token, some possibly unused)."""

    indices: torch.Tensor  # [T, k] long, expert of each slot
    weights: torch.Tensor  # [T, k] fp32, combine weight of each slot (0 where mask is False)
    mask: torch.Tensor  # [T, k] bool, slot in use (variable k; False also for capacity drops)
    logits: torch.Tensor  # [T, E] fp32, router logits after the external mask (-inf = forbidden)
    aux_losses: Mapping[str, torch.Tensor] = field(default_factory=dict)  # a dict or LazyLosses
    num_dropped: int = 0  # slots the router chose but capacity dropped

    @property
    def num_tokens(self) -> int:
        return self.logits.shape[0]

    @property
    def num_experts(self) -> int:
        return self.logits.shape[1]

    def expert_counts(self) -> torch.Tensor:
        """[E] long: how many token-slots each expert receives."""
        return torch.bincount(self.indices[self.mask], minlength=self.num_experts)

    def dense_weights(self) -> torch.Tensor:
        """[T, E] fp32 combine weights, zero for experts a token does not use (for plots and tests)."""
        dense = torch.zeros_like(self.logits, dtype=torch.float32)
        return dense.scatter_add_(1, self.indices, self.weights * self.mask)

    def metrics(self) -> dict[str, object]:
        """Per-expert load (share of routed slots), dropped share, mean experts per token, imbalance."""
        counts = self.expert_counts().float()
        routed = counts.sum().item()
        load = counts / max(routed, 1.0)
        return {
            "expert_load": load.tolist(),
            "dropped_fraction": self.num_dropped / max(routed + self.num_dropped, 1.0),
            "experts_per_token": routed / max(self.num_tokens, 1),
            "load_imbalance": (load.max() / load.mean()).item() if routed else 0.0,
        }


def check_expert_mask(expert_mask: torch.Tensor) -> None:
    """Only a bool mask or a float bias: an integer 0/1 mask added as a bias would barely move the
    logits (every expert stays allowed), and a NaN bias makes every probability NaN, so every slot is
    dropped and every token's output is zero. -inf (forbidden) is a valid bias, +inf is not."""
    check_instance(None, "expert_mask", expert_mask, torch.Tensor)
    if expert_mask.dtype == torch.bool:
        return
    if not expert_mask.is_floating_point():
        raise FieldTypeError(f"expert_mask must be a bool tensor (True = allowed) or a floating-point bias, got dtype "
                             f"{expert_mask.dtype}; for a 0/1 mask of allowed experts pass mask.bool()")
    if bool(torch.isnan(expert_mask).any() | torch.isposinf(expert_mask).any()):
        raise ValueError("expert_mask (a float bias) holds NaN or +inf; use -inf to forbid an expert")


def apply_expert_mask(logits: torch.Tensor, expert_mask: torch.Tensor | None) -> torch.Tensor:
    """Bool mask (True = allowed) sets forbidden experts to -inf; a float mask is added as a bias
    (-inf = forbidden). Shape [E] or [T, E]."""
    if expert_mask is None:
        return logits
    check_expert_mask(expert_mask)
    num_tokens, num_experts = logits.shape
    if expert_mask.shape not in ((num_experts,), (num_tokens, num_experts)):
        raise ValueError(
            f"expert_mask must have shape ({num_experts},) or ({num_tokens}, {num_experts}), "
            f"got {tuple(expert_mask.shape)}"
        )
    expert_mask = expert_mask.to(logits.device)
    if expert_mask.dtype == torch.bool:
        logits = logits.masked_fill(~expert_mask.expand_as(logits), float("-inf"))
    else:
        logits = logits + expert_mask.float()
    if num_tokens and torch.isneginf(logits).all(dim=-1).any():
        raise ValueError("expert_mask forbids every expert for at least one token")
    return logits


def top_k_selection(
    probs: torch.Tensor,  # [T, E]
    logits: torch.Tensor,  # [T, E]
    top_k: int,
    normalize: bool,
    gumbel_second: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax top-k. With `gumbel_second` (DeepSpeed's top-2 gate) the 1st expert is the argmax
    and the others are the top of (logits + Gumbel noise) among the rest; weights stay the clean
    probabilities either way."""
    ranking = probs
    if gumbel_second and top_k > 1:
        # Gumbel(0, 1) = -log(Exp(1)); the clamp keeps a rare 0 draw from giving +inf
        noise = -torch.log(torch.empty_like(logits).exponential_().clamp_min(torch.finfo(logits.dtype).tiny))
        first = probs.argmax(dim=-1, keepdim=True)  # [T, 1]
        ranking = (logits + noise).scatter(1, first, float("inf"))
    indices = torch.sort(ranking, dim=-1, descending=True, stable=True).indices[:, :top_k]  # [T, k]
    weights = probs.gather(1, indices)  # [T, k]
    mask = weights > 0  # a forbidden expert (prob 0) is never used, even if k exceeds the allowed set
    weights = weights * mask
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    return indices, weights, mask


def apply_capacity(
    indices: torch.Tensor,  # [T, k]
    mask: torch.Tensor,  # [T, k]
    probs: torch.Tensor,  # [T, k] probability of each slot's expert
    num_experts: int,
    capacity: int,
) -> torch.Tensor:
    """Keep at most `capacity` slots per expert by rank priority: every token's 1st choice before any
    2nd choice, then higher probability, then lower token index. Returns the new [T, k] mask.

    Three stable sorts (least significant key first) instead of one combined score, so no
    probability precision is lost to the rank."""
    num_slots = mask.shape[1]
    flat_mask = mask.reshape(-1)
    candidates = flat_mask.nonzero().squeeze(1)  # slot ids, token-major: ties keep the lower token
    candidates = candidates[torch.sort(probs.reshape(-1)[candidates], descending=True, stable=True).indices]
    candidates = candidates[torch.sort(candidates % num_slots, stable=True).indices]  # rank: slot position
    experts = indices.reshape(-1)[candidates]
    by_expert = torch.sort(experts, stable=True).indices
    candidates, experts = candidates[by_expert], experts[by_expert]
    counts = torch.bincount(experts, minlength=num_experts)
    group_start = torch.cumsum(counts, 0) - counts  # [E]
    position = torch.arange(len(candidates), device=mask.device) - group_start[experts]
    kept = torch.zeros_like(flat_mask)
    kept[candidates[position < capacity]] = True
    return kept.view_as(mask)


class Router(nn.Module):
    """Shared machinery: fp32 logits, external mask, softmax, selection, capacity, losses.

    Subclasses implement `select` and, if they do not use one linear gate for all tokens,
    `router_logits` (with `has_shared_gate = False`).
    """

    has_shared_gate = True

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        jitter: float = 0.0,
        capacity_factor: float | None = None,
        min_capacity: int = 4,
    ):
        super().__init__()
        check_positive_int(self, hidden_size=hidden_size, num_experts=num_experts, min_capacity=min_capacity)
        check_number(self, "jitter", jitter, low=0, high=1, high_open=True)
        check_number(self, "capacity_factor", capacity_factor, low=0, low_open=True, allow_none=True, note="(None = dropless)")
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.jitter = jitter
        self.capacity_factor = capacity_factor
        self.min_capacity = min_capacity
        if self.has_shared_gate:
            # [E, H], the layout of transformers' MixtralTopKRouter.weight
            self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
            nn.init.normal_(self.weight, std=0.02)

    # -- the four steps -------------------------------------------------------------------------
    def router_logits(self, hidden: torch.Tensor, modality_ids: torch.Tensor | None) -> torch.Tensor:
        return F.linear(hidden.float(), self.weight.float())  # [T, E]

    def select(self, probs: torch.Tensor, logits: torch.Tensor):
        """-> indices [T, k], weights [T, k], mask [T, k]."""
        raise NotImplementedError

    def capacity(self, num_tokens: int) -> int:
        return max(self.min_capacity, math.ceil(self.capacity_factor * num_tokens * self.slots_per_token / self.num_experts))

    slots_per_token = 1  # expected k, for the capacity formula

    def aux_losses(self, probs, logits, indices, mask, modality_ids, padding_mask) -> dict[str, torch.Tensor]:
        return {
            "load_balance": load_balancing_loss(probs, indices, mask, padding_mask),
            "z_loss": router_z_loss(logits, padding_mask),
        }

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        hidden: torch.Tensor,  # [T, H]
        expert_mask: torch.Tensor | None = None,  # [E] or [T, E]: bool allowed, or float bias
        modality_ids: torch.Tensor | None = None,  # [T] long
        padding_mask: torch.Tensor | None = None,  # [T] bool, True = real token (losses only)
    ) -> RoutingResult:
        check_instance(self, "hidden states", hidden, torch.Tensor)
        if hidden.dim() != 2 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"router expects hidden states [T, {self.hidden_size}], got {tuple(hidden.shape)}")
        if not hidden.is_floating_point():  # an integer tensor would come back from the experts as zeros
            raise FieldTypeError(f"{type(self).__name__}: hidden states must be a floating-point tensor, got dtype {hidden.dtype}")
        if self.training and self.jitter > 0:
            hidden = hidden * torch.empty_like(hidden).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        # autocast would run the gate in bf16 even from fp32 inputs: routing decisions stay fp32
        with torch.autocast(hidden.device.type, enabled=False):
            return self._route(hidden, expert_mask, modality_ids, padding_mask)

    def _route(self, hidden, expert_mask, modality_ids, padding_mask) -> RoutingResult:
        logits = apply_expert_mask(self.router_logits(hidden, modality_ids), expert_mask)  # [T, E]
        probs = torch.softmax(logits, dim=-1)
        indices, weights, mask = self.select(probs, logits)
        selected = (indices, mask)  # the losses count the choices before capacity
        losses = LazyLosses(lambda: self.aux_losses(probs, logits, *selected, modality_ids, padding_mask), hidden.device.type)
        num_dropped = 0
        if self.capacity_factor is not None and hidden.shape[0] > 0:
            kept = apply_capacity(indices, mask, probs.gather(1, indices), self.num_experts, self.capacity(hidden.shape[0]))
            num_dropped = int((mask & ~kept).sum())
            mask = kept
            weights = weights * mask
        return RoutingResult(indices, weights, mask, logits, losses, num_dropped)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_experts={self.num_experts}"


class TopKRouter(Router):
    """softmax -> top-k -> optional renormalisation (Mixtral, DeepSpeed-MoE and most upcycled MoEs).
    `normalize=False` keeps the raw probabilities (Qwen3-MoE with norm_topk_prob=False, OLMoE)."""

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        normalize: bool = True,
        jitter: float = 0.0,
        gumbel_second: bool = False,
        capacity_factor: float | None = None,
        min_capacity: int = 4,
    ):
        super().__init__(hidden_size, num_experts, jitter, capacity_factor, min_capacity)
        check_positive_int(self, top_k=top_k)
        check_bool(self, normalize=normalize, gumbel_second=gumbel_second)
        if top_k > num_experts:
            raise ValueError(f"{type(self).__name__}.top_k ({top_k}) must be <= num_experts ({num_experts})")
        self.top_k = top_k
        self.normalize = normalize
        self.gumbel_second = gumbel_second
        self.slots_per_token = top_k

    def select(self, probs, logits):
        return top_k_selection(probs, logits, self.top_k, self.normalize, self.gumbel_second and self.training)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", top_k={self.top_k}, normalize={self.normalize}"


class ThresholdRouter(Router):
    """Threshold routing (arXiv 2403.18926): sort the probabilities; take the j-th expert iff the mass of the
    experts ranked before it is < threshold (so at least one; k varies per token). Weights are the
    raw probabilities (no renormalisation). Capacity (factor 8 for LMs in that paper) drops by rank priority.
    The balance loss counts each token's top-1 choice, as that paper does."""

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        threshold: float = 0.9,
        max_k: int | None = None,
        capacity_factor: float | None = None,
        min_capacity: int = 4,
        jitter: float = 0.0,
    ):
        super().__init__(hidden_size, num_experts, jitter, capacity_factor, min_capacity)
        check_number(self, "threshold", threshold, low=0, high=1, low_open=True)
        check_positive_int(self, allow_none=True, max_k=max_k)
        if max_k is not None and max_k > num_experts:
            raise ValueError(f"{type(self).__name__}.max_k ({max_k}) must be <= num_experts ({num_experts})")
        self.threshold = threshold
        self.max_k = max_k

    def select(self, probs, logits):
        sorted_probs, indices = torch.sort(probs, dim=-1, descending=True, stable=True)  # [T, E]
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        mask = (mass_before < self.threshold) & (sorted_probs > 0)
        mask[:, 0] = True  # at least one expert, whatever rounding does
        keep = self.max_k or self.num_experts
        indices, sorted_probs, mask = indices[:, :keep], sorted_probs[:, :keep], mask[:, :keep]
        return indices, sorted_probs * mask, mask

    def aux_losses(self, probs, logits, indices, mask, modality_ids, padding_mask):
        return super().aux_losses(probs, logits, indices[:, :1], mask[:, :1], modality_ids, padding_mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", threshold={self.threshold}, max_k={self.max_k}"
