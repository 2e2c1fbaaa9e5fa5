"""Dropless dispatch: sort token-slots by expert, run each expert on its contiguous slice, combine.

    slots   = (token, expert, weight) for every used slot          N = number of used slots
    sorted  = slots ordered by expert (stable)                       groups: counts [E], offsets [E]
    y       = experts(hidden[sorted.token], groups)                  [N, H]   (no expert sees a token it was not given)
    out     = index_add(sorted.token, y * sorted.weight)             [T, H]

Under autograd the whole sorted batch goes through the bank at once, so each expert weight gets one
gradient. Without autograd (inference) the sorted rows are fed to the bank a few experts at a time
(`INFERENCE_CHUNK_ROWS` rows or more per chunk), so the [rows, 2I] activations stay in cache instead
of streaming [N, 2I] tensors through memory (a few % at E=64, k=8 in benchmarks.moe_layer).

Expert banks only ever call `groups.linear(x, weight [E, out, in], bias [E, out])`; how that grouped
matmul runs is a backend picked by name from `GROUPED_LINEAR_BACKENDS` (like transformers'
`experts_implementation`): `eager` is the obviously-right loop over non-empty experts, `grouped`
is one `torch.nn.functional.grouped_mm` call (rows it cannot take, not 16-byte aligned, go
through the loop). `auto` takes `grouped` for fp32/bf16 and `eager` otherwise. Every backend is
parity-tested against `eager`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .routing import RoutingResult
from .validation import check_choice


@dataclass
class ExpertGroups:
    """Rows of a [N, ·] tensor sorted by expert: expert e owns rows offsets[e-1]:offsets[e]."""

    counts: torch.Tensor  # [E] long
    offsets: torch.Tensor  # [E] int32, cumulative ends (grouped_mm's `offs`)
    row_experts: torch.Tensor  # [N] long, expert of each row
    backend: str = "auto"

    @classmethod
    def from_sorted_experts(cls, row_experts: torch.Tensor, num_experts: int, backend: str = "auto") -> "ExpertGroups":
        counts = torch.bincount(row_experts, minlength=num_experts)
        return cls(counts, torch.cumsum(counts, 0).to(torch.int32), row_experts, backend)

    @property
    def num_experts(self) -> int:
        return self.counts.shape[0]

    def chunks(self, min_rows: int) -> list[tuple[int, int, "ExpertGroups"]]:
        """Split into runs of whole experts with at least `min_rows` rows each (the last may have
        fewer): (start row, end row, groups of that run, rows renumbered from 0). One host sync."""
        total = self.row_experts.shape[0]
        if total <= min_rows:  # one run (decoding, small batches): no sync, nothing rebuilt
            return [(0, total, self)] if total else []
        counts = self.counts.tolist()
        pieces, first, start, rows = [], 0, 0, 0
        for e, c in enumerate(counts):
            rows += c
            if rows >= min_rows or e == len(counts) - 1:
                if rows:
                    part = torch.zeros_like(self.counts)
                    part[first : e + 1] = self.counts[first : e + 1]
                    row_experts = self.row_experts[start : start + rows]
                    pieces.append((start, start + rows, ExpertGroups(part, torch.cumsum(part, 0).to(torch.int32), row_experts, self.backend)))
                first, start, rows = e + 1, start + rows, 0
        return pieces

    def ranges(self) -> list[tuple[int, int, int]]:
        """(expert, start, end) for every expert that received rows (one host sync)."""
        ends = self.offsets.tolist()
        starts = [0] + ends[:-1]
        return [(e, s, t) for e, (s, t) in enumerate(zip(starts, ends)) if t > s]

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, in] @ weight[e]^T (+ bias[e]) per row group -> [N, out]. weight: [E, out, in]."""
        return resolve_backend(self.backend, x.dtype)(x, weight, bias, self)


GroupedLinear = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", ExpertGroups], torch.Tensor]


def eager_grouped_linear(x, weight, bias, groups: ExpertGroups) -> torch.Tensor:
    """Reference: one F.linear per expert that has rows; empty experts cost nothing."""
    x = x.to(weight.dtype)
    pieces = [F.linear(x[s:t], weight[e], None if bias is None else bias[e]) for e, s, t in groups.ranges()]
    if not pieces:
        return x.new_zeros(x.shape[0], weight.shape[1])
    return torch.cat(pieces, dim=0)


def _contiguous_grad(grad: torch.Tensor) -> torch.Tensor:
    return grad.contiguous()


def _grouped_mm_aligned(*tensors: torch.Tensor) -> bool:
    """grouped_mm's CPU kernel needs 16-byte aligned data and strides (else: "strides should be
    multiple of 16 bytes"), e.g. bf16 with a hidden size that is not a multiple of 8."""
    return all(
        t.data_ptr() % 16 == 0 and all((s * t.element_size()) % 16 == 0 for s in t.stride() if s != 1)
        for t in tensors
    )


def grouped_mm_linear(x, weight, bias, groups: ExpertGroups) -> torch.Tensor:
    """One grouped GEMM over all experts (torch.nn.functional.grouped_mm, fp32/bf16 on CPU).
    Shapes the kernel cannot take (unaligned rows) run through the eager loop: same numbers."""
    x = x.to(weight.dtype)
    if not _grouped_mm_aligned(x, weight):
        return eager_grouped_linear(x, weight, bias, groups)
    out = F.grouped_mm(x, weight.transpose(-2, -1), offs=groups.offsets)  # [N, out]
    if out.requires_grad:
        # grouped_mm's backward fails on zero-stride gradients (e.g. from y.sum())
        out.register_hook(_contiguous_grad)
    if bias is not None:
        out = out + bias[groups.row_experts]
    return out


GROUPED_LINEAR_BACKENDS: dict[str, GroupedLinear] = {
    "eager": eager_grouped_linear,
    "grouped": grouped_mm_linear,
}
GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16)


def register_backend(name: str, fn: GroupedLinear) -> None:
    """Add a grouped-linear backend (e.g. a packed-ternary kernel); it must match `eager`."""
    GROUPED_LINEAR_BACKENDS[name] = fn


def check_backend(owner, name) -> None:
    """A config / module field naming a backend: 'auto' or a registered one (checked where it is set,
    not at the first forward)."""
    check_choice(owner, "dispatch_backend", name, ("auto", *GROUPED_LINEAR_BACKENDS))


def resolve_backend(name: str, dtype: torch.dtype) -> GroupedLinear:
    if name == "auto":
        grouped_ok = hasattr(F, "grouped_mm") and dtype in GROUPED_MM_DTYPES
        return GROUPED_LINEAR_BACKENDS["grouped" if grouped_ok else "eager"]
    if name not in GROUPED_LINEAR_BACKENDS:
        raise ValueError(f"dispatch_backend: unknown backend {name!r}; known: {['auto', *GROUPED_LINEAR_BACKENDS]}")
    if name == "grouped" and dtype not in GROUPED_MM_DTYPES:
        raise ValueError(f"dispatch_backend 'grouped' runs in float32/bfloat16 only, got {dtype}; use 'eager' or 'auto'")
    return GROUPED_LINEAR_BACKENDS[name]


INFERENCE_CHUNK_ROWS = 1024  # rows per bank call without autograd (512-2048 measured alike)


def _records_grad(hidden: torch.Tensor, routing: RoutingResult, experts) -> bool:
    if not torch.is_grad_enabled():
        return False
    return hidden.requires_grad or routing.weights.requires_grad or any(p.requires_grad for p in experts.parameters())


def dispatch(hidden: torch.Tensor, routing: RoutingResult, experts, backend: str = "auto") -> torch.Tensor:
    """hidden [T, H] -> sum over used slots of weight * expert(token), [T, H].

    Slots routed to an index >= experts.num_experts are null experts: they add nothing."""
    num_tokens, hidden_size = hidden.shape
    used = routing.mask
    if routing.num_experts > experts.num_experts:  # null experts: their slots add nothing
        used = used & (routing.indices < experts.num_experts)  # [T, k]
    token_ids, slot_ids = used.nonzero(as_tuple=True)  # [N], token-major
    slot_experts = routing.indices[token_ids, slot_ids]
    order = torch.argsort(slot_experts, stable=True)
    token_ids, slot_ids, slot_experts = token_ids[order], slot_ids[order], slot_experts[order]
    groups = ExpertGroups.from_sorted_experts(slot_experts, experts.num_experts, backend)
    weights = routing.weights[token_ids, slot_ids][:, None]  # [N, 1] fp32
    out = hidden.new_zeros(num_tokens, hidden_size)
    if _records_grad(hidden, routing, experts):
        chunks = [(0, token_ids.shape[0], groups)]
    else:
        chunks = groups.chunks(INFERENCE_CHUNK_ROWS)
    for start, end, part in chunks:
        rows = token_ids[start:end]
        expert_out = experts(hidden[rows], part)  # [n, H]
        out.index_add_(0, rows, (expert_out * weights[start:end].to(expert_out.dtype)).to(hidden.dtype))
    return out
