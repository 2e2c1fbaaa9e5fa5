"""Per-call routing inputs and outputs, private to the thread or asyncio task that makes the call.

A decoder layer hands its FFN only the hidden states, so whatever a router needs besides them
(per-token modality ids, an external expert mask, the padding mask for the losses) reaches the MoE
layers through a `RoutingContext` that the model shares with all of its MoE layers. The values live
in a `contextvars.ContextVar`, not in module attributes: one model object serves concurrent calls,
each thread (and each asyncio task) seeing only the inputs it set and the routing results its own
forward produced.

    context.set(modality_ids=ids)           # [B, S]; stays set after the forward, so activation
    model(...)                              # checkpointing recomputes the layers with the same inputs
    context.result(layer)                   # that layer's RoutingResult of this thread's last forward

    with context.use(expert_mask=mask):     # set for a block, then restored
        model(...)
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass

import torch
from torch import nn

from .routing import RoutingResult

_ids = itertools.count()


@dataclass(frozen=True)
class RoutingInputs:
    """What one call routes with."""

    modality_ids: torch.Tensor | None = None  # [B, S] long, zoo.core.modalities ids
    expert_mask: torch.Tensor | None = None  # [E], [B, E] or [B, S, E]: bool allowed, or float bias
    padding_mask: torch.Tensor | None = None  # [B, S] bool, True = real token (losses only)


_NO_INPUTS = RoutingInputs()


class RoutingContext:
    """The routing inputs of one model's MoE layers, stored per thread / asyncio task."""

    def __init__(self):
        number = next(_ids)
        self._inputs: ContextVar[RoutingInputs] = ContextVar(f"zoo_routing_inputs_{number}", default=_NO_INPUTS)
        # results outlive a `use` block (read them after the call), until this thread's next call
        self._results: ContextVar[dict | None] = ContextVar(f"zoo_routing_results_{number}", default=None)

    def current(self) -> RoutingInputs:
        return self._inputs.get()

    def set(self, modality_ids=None, expert_mask=None, padding_mask=None) -> Token:
        """Start a new call; returns the token that `reset` takes to restore the previous inputs."""
        self._results.set({})
        return self._inputs.set(RoutingInputs(modality_ids, expert_mask, padding_mask))

    def reset(self, token: Token) -> None:
        self._inputs.reset(token)

    @contextlib.contextmanager
    def use(self, modality_ids=None, expert_mask=None, padding_mask=None) -> Iterator[RoutingInputs]:
        token = self.set(modality_ids, expert_mask, padding_mask)
        try:
            yield self._inputs.get()
        finally:
            self.reset(token)

    def record(self, layer: nn.Module, result: RoutingResult) -> None:
        # a new dict, never written in place: a context copied from the caller's (asyncio tasks,
        # asyncio.to_thread, anyio worker threads) starts with the caller's dict, shared by every copy
        results = dict(self._results.get() or {})
        results[layer] = result
        self._results.set(results)

    def result(self, layer: nn.Module) -> RoutingResult | None:
        return (self._results.get() or {}).get(layer)

    # a ContextVar cannot be copied or pickled; a copied model gets a context of its own
    def __deepcopy__(self, memo) -> "RoutingContext":
        return RoutingContext()

    def __reduce__(self):
        return (RoutingContext, ())
