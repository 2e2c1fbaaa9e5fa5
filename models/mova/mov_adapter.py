"""The MoV-Adapter (MoVA §3.3, App. A.1; the release's `mova/model/multimodal_projector/builder.py`).

    X = base tokens [B, N, C] + pos_embed                          N = G*G base grid (48 x 48 in the release)
    F_j = expert j's map resized to the base grid [B, N, C_j]      (only experts some sample may use are computed)
    per block (L = 3):
        gate:  logits = W2 GELU(W1 [t ; mean_N(X)])      [B, E]   t = the question's sentence embedding
               P = softmax(logits over the allowed experts)       (zoo.core external expert mask: -inf elsewhere)
               P~ = top-3 of P, renormalised                      (MoVAGate: a zoo.core Router)
        X <- X + b * sum_j P~_j CrossAttn_j(LN1_j(X), LN2_j(F_j))      b = 1 if the sample allows any expert
        X <- X + SelfAttn(LN3(X));  X <- X + SwiGLU(LN4(X))
    out = (X + base tokens) / 2                          [B, N, C]

Every output projection (cross-attentions, self-attention, SwiGLU w3), the gate's last layer and pos_embed start
at zero, so at initialisation every block is the identity and `out` equals the base tokens exactly (the gate
starts uniform over the allowed experts). Attention follows EVA's layout, as the release's keys do: q/k/v
projections, a 2-D rotary embedding over the G x G grid, a LayerNorm on the attention output (`inner_attn_ln`)
before `proj`; SwiGLU is EVA's (w1, w2, `ffn_ln`, w3).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from zoo.core.routing import Router, RoutingResult, top_k_selection


def zero_init(module: nn.Linear) -> nn.Linear:
    """Mark a layer that starts at zero (MovaPreTrainedModel._init_weights keeps it there)."""
    module._zero_init = True
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def rotate_2d(x: torch.Tensor, side: int) -> torch.Tensor:
    """2-D rotary position embedding over a side x side grid (row-major tokens): the first half of each head's
    dims rotates with the row index, the second half with the column. x: [B, h, N, d], d a multiple of 4."""
    d = x.shape[-1] // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))  # [d/2]
    pos = torch.arange(side, device=x.device, dtype=torch.float32)
    rows, cols = pos.repeat_interleave(side), pos.repeat(side)  # [N]

    def rotate(part: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(position, freqs).repeat(1, 2)  # [N, d]
        first, second = part.float().chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return (part.float() * angles.cos() + rotated * angles.sin()).to(part.dtype)

    return torch.cat([rotate(x[..., :d], rows), rotate(x[..., d:], cols)], dim=-1)


class AdapterAttention(nn.Module):
    """Multi-head attention of queries x [B, N, C] over keys / values from `context` [B, N, C_kv] (itself for self-attention)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 4:
            raise ValueError(f"MovaConfig.adapter_num_heads ({num_heads}) must divide the base width {dim} into heads "
                             "whose size is a multiple of 4 (the 2-D rotary embedding)")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(context_dim, dim)
        self.v_proj = nn.Linear(context_dim, dim)
        self.inner_attn_ln = nn.LayerNorm(dim)
        self.proj = zero_init(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor, side: int) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.num_heads, -1).transpose(1, 2)  # [B, h, N, d]

        q = rotate_2d(heads(self.q_proj(x)), side)
        k = rotate_2d(heads(self.k_proj(context)), side)
        out = F.scaled_dot_product_attention(q, k, heads(self.v_proj(context)))  # [B, h, N, d]
        return self.proj(self.inner_attn_ln(out.transpose(1, 2).reshape(b, n, -1)))


class SwiGLU(nn.Module):
    """EVA's SwiGLU: w3(LN(silu(w1 x) * w2 x)), w3 zero-initialised."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1, self.w2 = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
        self.ffn_ln = nn.LayerNorm(hidden)
        self.w3 = zero_init(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class MoVAGate(Router):
    """The fine router: an MLP on [text embedding ; mean-pooled tokens], softmax over the allowed experts
    (the zoo.core external mask), top-k renormalised. One routing decision per sample (T = B). No
    balance loss is used (the release has none); the Router still reports its load metrics."""

    has_shared_gate = False

    def __init__(self, text_size: int, image_size: int, hidden_size: int, num_experts: int, top_k: int):
        super().__init__(text_size + image_size, num_experts)
        self.top_k = top_k
        self.net = nn.Sequential(nn.Linear(text_size + image_size, hidden_size), nn.GELU(),
                                 zero_init(nn.Linear(hidden_size, num_experts)))  # the release's gate.{0,2}

    def router_logits(self, hidden: torch.Tensor, modality_ids=None) -> torch.Tensor:
        first, act, last = self.net
        # fp32 whatever the model's dtype: routing decisions are not made in bf16
        h = act(F.linear(hidden.float(), first.weight.float(), first.bias.float()))
        return F.linear(h, last.weight.float(), last.bias.float())  # [B, E]

    def select(self, probs: torch.Tensor, logits: torch.Tensor):
        return top_k_selection(probs, logits, self.top_k, normalize=True, gumbel_second=False)


class AdapterBlock(nn.Module):
    def __init__(self, dim: int, expert_dims: Sequence[int], num_heads: int, intermediate_size: int,
                 text_size: int, gate_hidden_size: int, top_k: int):
        super().__init__()
        self.cross_attn = nn.ModuleList(AdapterAttention(dim, c, num_heads) for c in expert_dims)
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in expert_dims)  # queries, one per expert
        self.norm2 = nn.ModuleList(nn.LayerNorm(c) for c in expert_dims)  # expert features
        self.gate = MoVAGate(text_size, dim, gate_hidden_size, len(expert_dims), top_k)
        self.norm3, self.self_attn = nn.LayerNorm(dim), AdapterAttention(dim, dim, num_heads)
        self.norm4, self.mlp = nn.LayerNorm(dim), SwiGLU(dim, intermediate_size)

    def route(self, x: torch.Tensor, text: torch.Tensor, expert_mask: torch.Tensor) -> RoutingResult:
        """-> the gate's RoutingResult over the B samples, zero weights for a sample that allows no expert.
        Such a sample's row is routed over every expert only because the core refuses an all-forbidden row;
        its weights are dropped (b = 0) before anything reads them."""
        allows_any = expert_mask.any(dim=-1)  # [B]
        result = self.gate(torch.cat([text.float(), x.float().mean(dim=1)], dim=-1),
                           expert_mask=expert_mask | ~allows_any[:, None])
        keep = result.mask & allows_any[:, None]
        return RoutingResult(result.indices, result.weights * keep, keep, result.logits, result.aux_losses)

    def forward(self, x: torch.Tensor, experts: Sequence[torch.Tensor | None], text: torch.Tensor | None,
                expert_mask: torch.Tensor, side: int) -> tuple[torch.Tensor, RoutingResult | None]:
        """x [B, N, C]; experts: per expert [B, N, C_j], None where no sample allows it; expert_mask [B, E] bool."""
        routing = None
        if expert_mask.any():
            routing = self.route(x, text, expert_mask)
            weights = routing.dense_weights()  # [B, E], 0 for every expert a sample does not use
            fused = torch.zeros_like(x)
            for j in torch.nonzero(weights.sum(dim=0) > 0).flatten().tolist():
                attended = self.cross_attn[j](self.norm1[j](x), self.norm2[j](experts[j].to(x.dtype)), side)
                fused = fused + weights[:, j, None, None].to(x.dtype) * attended
            x = x + fused
        x = x + self.self_attn(self.norm3(x), self.norm3(x), side)
        return x + self.mlp(self.norm4(x)), routing


class MoVAdapter(nn.Module):
    """L AdapterBlocks between a learned position embedding and the average with the base tokens."""

    def __init__(self, *, dim: int, num_tokens: int, expert_dims: Sequence[int], num_blocks: int, num_heads: int,
                 intermediate_size: int, text_size: int, gate_hidden_size: int, top_k: int):
        super().__init__()
        self.side = int(round(num_tokens ** 0.5))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))  # zero: the adapter starts as the identity
        self.blocks = nn.ModuleList(
            AdapterBlock(dim, expert_dims, num_heads, intermediate_size, text_size, gate_hidden_size, top_k)
            for _ in range(num_blocks))

    def forward(self, base: torch.Tensor, experts: Sequence[torch.Tensor | None], text: torch.Tensor | None,
                expert_mask: torch.Tensor) -> tuple[torch.Tensor, list[RoutingResult | None]]:
        """base [B, N, C] -> ([B, N, C], one RoutingResult per block, None where no sample allows any expert)."""
        x = base + self.pos_embed.to(base.dtype)
        routings = []
        for block in self.blocks:
            x, routing = block(x, experts, text, expert_mask, self.side)
            routings.append(routing)
        return (x + base) / 2, routings


__all__ = ["AdapterAttention", "AdapterBlock", "MoVAGate", "MoVAdapter", "SwiGLU", "rotate_2d", "zero_init"]
