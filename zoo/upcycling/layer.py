"""UpcycledFFN: the MoE layer that took a dense FFN's place, with the dense FFN's signature."""
from __future__ import annotations

import torch
from torch import nn

from ..core.context import RoutingContext
from ..core.moe import MoEBlock
from ..core.routing import RoutingResult


class UpcycledFFN(nn.Module):
    """hidden [B, S, H] -> [B, S, H], like the dense FFN it replaced.

    `moe` is the MoEBlock (router -> dispatch -> experts -> combine, + shared FFN). What the router
    needs besides the hidden states (modality ids, expert mask, padding mask) comes from the
    model's `RoutingContext` for the current call; the RoutingResult goes back into it, so
    `last_routing` is the result of this thread's latest forward (router logits, aux losses, the
    gallery's heatmap), never another request's.
    """

    def __init__(self, moe: MoEBlock, context: RoutingContext, dropout: float = 0.0):
        super().__init__()
        self.moe = moe
        self.dropout = nn.Dropout(dropout)
        self.context = context  # shared with the other layers; a plain attribute, not a submodule

    @property
    def last_routing(self) -> RoutingResult | None:
        return self.context.result(self)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        inputs = self.context.current()
        tokens = tuple(hidden.shape[:-1])
        for name in ("modality_ids", "padding_mask"):
            value = getattr(inputs, name)
            if value is not None and tuple(value.shape) != tokens:
                raise ValueError(f"routing context {name} has shape {tuple(value.shape)} but this MoE layer sees "
                                 f"{tokens} tokens: set it for the tokens of this forward (with a KV cache, the new ones)")
        out, routing = self.moe(hidden, modality_ids=inputs.modality_ids, expert_mask=inputs.expert_mask,
                                padding_mask=inputs.padding_mask)
        self.context.record(self, routing)
        return self.dropout(out)


def upcycled_layers(model: nn.Module) -> list[tuple[str, UpcycledFFN]]:
    """(module name, UpcycledFFN) for every MoE layer of the model, in layer order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, UpcycledFFN)]
