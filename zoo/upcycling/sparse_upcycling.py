"""Sparse upcycling: turn the FFNs of a dense Hugging Face decoder into MoE layers, in place.

    plan  = zoo.PLANS["top2-of-4"]                 # or zoo.UpcyclePlan(num_experts=8, ...)
    model = zoo.upcycle(model, plan)               # every chosen layer.mlp -> UpcycledFFN(MoEBlock)

For each chosen layer (zoo.upcycling.ffn_adapters finds it for Llama, Mistral, Qwen2/3, Gemma3, Phi-3, GPT-2):

    dense FFN  --copy-->   E experts, each the dense FFN (+ optional init noise)       (sparse upcycling)
               --split-->  E experts, expert e = hidden units [e*I/E, (e+1)*I/E)         (fine-grained, XMoE)
    router     = a fresh gate (normal std 0.02, or zeros = uniform probabilities)
    shared_ffn = optionally the dense FFN itself, always on (MoTE, DeepSeekMoE)

Function preservation at step 0 (tested on every architecture):
- copy + top-k with renormalised weights: the weights sum to 1 over identical experts, so the layer
  computes the dense FFN exactly, whatever the router says.
- split: the dense FFN is the *sum* of its parts, but a router weights each part by p_e. The split
  experts are therefore scaled by E (`expert_scale`, default E for split) and the router starts at
  zeros, so p_e = 1/E and sum_e p_e * E * part_e(x) = FFN(x) when every expert is selected
  (ThresholdRouter with threshold 1.0). Training then moves the router away from uniform and a
  threshold < 1 makes the layer sparse; the scale is an ordinary weight scale, so nothing special
  survives in the checkpoint.

The replaced module `UpcycledFFN` (zoo.upcycling.layer) takes and returns [B, S, H] like the dense
FFN and reads the per-call routing context (`modality_ids`, `expert_mask`, `padding_mask`) shared by
all layers of the model (set it with `routing_context(model, ...)`; zoo.core.context keeps it per
thread).

Expert kinds are builders in `zoo.experts.registry.EXPERT_KINDS`: "glu" and "mlp" for the generic
banks, "lora", "ternary" and the others from their modules in zoo.experts.
"""
from __future__ import annotations

import contextlib
import importlib
import types
from collections.abc import Iterator

import torch
from torch import nn

from ..core.context import RoutingContext, RoutingInputs
from ..core.expert_banks import SharedExperts
from ..core.modality_router import ModalityRouter
from ..core.moe import MoEBlock
from ..core.routing import Router, ThresholdRouter, TopKRouter
from ..experts.ffn_weights import FFNWeights
from ..experts.registry import EXPERT_KINDS
from .ffn_adapters import ARCHITECTURES, adapter_for
from .layer import UpcycledFFN
from .plan import UpcyclePlan, get_plan


# -- routers -------------------------------------------------------------------------------------
def build_router(plan: UpcyclePlan, hidden_size: int) -> Router:
    common = dict(capacity_factor=plan.capacity_factor, min_capacity=plan.min_capacity, jitter=plan.jitter)
    if plan.router == "top_k":
        router = TopKRouter(hidden_size, plan.num_experts, plan.num_experts_per_tok, normalize=plan.normalize,
                            gumbel_second=plan.gumbel_second, **common)
    elif plan.router == "threshold":
        router = ThresholdRouter(hidden_size, plan.num_experts, threshold=plan.threshold, max_k=plan.max_k, **common)
    else:
        router = ModalityRouter(hidden_size, plan.num_experts, plan.modality_experts, plan.shared_experts,
                                top_k=plan.num_experts_per_tok, normalize=plan.normalize, **common)
    with torch.no_grad():
        for weight in router.parameters():
            if weight.device.type == "meta":
                continue
            if plan.router_init == "zeros":
                weight.zero_()
            else:
                weight.normal_(0.0, plan.router_init_std)
    return router


# -- upcycle -------------------------------------------------------------------------------------
def _ffn_parts(weights: FFNWeights, plan: UpcyclePlan, layer: int) -> list[FFNWeights]:
    if plan.experts == "copy":
        return [weights] * plan.num_experts
    if weights.intermediate_size % plan.num_experts:
        raise ValueError(
            f"layer {layer}: experts='split' needs intermediate_size ({weights.intermediate_size}) divisible by "
            f"num_experts ({plan.num_experts})"
        )
    return [weights.part(e, plan.num_experts) for e in range(plan.num_experts)]


def _check_every_weight_is_copied(dense: nn.Module, weights: FFNWeights, layer: int) -> None:
    """The experts are built from `weights` alone: a dense FFN parameter outside them (the learnable slope
    of hidden_act="prelu", say) would silently be left out of every expert."""
    copied = {t.untyped_storage().data_ptr() for t in (weights.up, weights.down, weights.gate, weights.up_bias,
                                                       weights.down_bias) if t is not None}
    left_out = [name for name, p in dense.named_parameters() if p.untyped_storage().data_ptr() not in copied]
    if left_out:
        raise ValueError(f"layer {layer}: the dense FFN ({type(dense).__name__}) has parameters the experts would not "
                         f"copy: {left_out} (a learnable activation, act={weights.act!r}?); upcycling supports FFNs "
                         "whose only parameters are their projections")


def _routing_context(model: nn.Module) -> RoutingContext:
    context = getattr(model, "routing_context", None)
    if context is None:
        context = RoutingContext()
        model.routing_context = context
    return context


@torch.no_grad()
def upcycle(model: nn.Module, plan: UpcyclePlan | str) -> nn.Module:
    """Replace the FFN of every layer chosen by `plan.layers` with an `UpcycledFFN`, in place.

    `model` is a dense transformers model of a supported architecture (task model such as
    LlamaForCausalLM, or the bare LlamaModel). The dense FFN's weights are copied (or split) into
    the expert bank one layer at a time and the dense module is dropped, so peak memory stays near
    the upcycled model's size. Returns the same model object."""
    if isinstance(plan, str):
        plan = get_plan(plan)
    adapter = adapter_for(getattr(model, "config", None))
    config = model.config
    layers = adapter.decoder_layers(model)
    context = _routing_context(model)
    kind = plan.expert_kind
    if plan.seed is not None:
        torch.manual_seed(plan.seed)  # router init and init noise draw from torch's global generator
    for index in plan.layer_indices(len(layers)):
        layer = layers[index]
        dense = getattr(layer, adapter.ffn_attribute)
        if isinstance(dense, UpcycledFFN):
            raise ValueError(f"layer {index} is already upcycled")
        weights = adapter.read(dense, config, index)
        _check_every_weight_is_copied(dense, weights, index)
        builder = EXPERT_KINDS[kind or weights.kind]
        experts = builder(_ffn_parts(weights, plan, index), plan)
        router = build_router(plan, weights.hidden_size).to(weights.up.device)
        shared = None
        if plan.shared_ffn == "dense":
            shared = SharedExperts(weights.hidden_size, gated=plan.shared_ffn_gate, ffn=dense)
            if shared.gate is not None:
                shared.gate.to(device=weights.up.device, dtype=weights.up.dtype)
        moe = MoEBlock(router, experts, shared, dispatch_backend=plan.dispatch_backend)
        upcycled = UpcycledFFN(moe, context, dropout=weights.dropout).train(dense.training)  # eval stays eval
        setattr(layer, adapter.ffn_attribute, upcycled)
        del dense, weights  # the dense FFN goes now (unless kept as the shared FFN), before the next layer's copies
    model.upcycle_plan = plan
    _save_with_experts(model)
    return model


# `save_pretrained` of a transformers model upcycled in place; the model class lives above zoo (zoo.models), so it
# is found by name when a save happens, the way zoo.auto_registration finds the model packages
IN_PLACE_SAVER = ("zoo.models.upcycled.modeling_upcycled_moe", "save_in_place_upcycled")


def _save_in_place_upcycled(self, save_directory, *args, **kwargs):
    module, name = IN_PLACE_SAVER
    return getattr(importlib.import_module(module), name)(self, save_directory, *args, **kwargs)


def _save_with_experts(model: nn.Module) -> None:
    """A transformers model keeps its dense config after `upcycle`: its own `save_pretrained` would write a folder
    that reloads without the experts (transformers only warns about the unexpected keys). Bound to the instance
    (`types.MethodType`, so copies rebind it) so that it saves as the zoo's upcycled class, or refuses."""
    if isinstance(getattr(model, "save_pretrained", None), types.MethodType) and hasattr(model, "config"):
        model.save_pretrained = types.MethodType(_save_in_place_upcycled, model)


@contextlib.contextmanager
def routing_context(model: nn.Module, modality_ids=None, expert_mask=None, padding_mask=None) -> Iterator[RoutingInputs]:
    """Set the per-forward routing inputs of an upcycled model for the duration of a `with` block:

        with routing_context(model, modality_ids=ids):   # ids [B, S]: zoo.MODALITY_IDS per token
            out = model(input_ids)
    """
    context = getattr(model, "routing_context", None)
    if context is None:
        raise ValueError(f"{type(model).__name__} has no upcycled layers (call zoo.upcycle first)")
    with context.use(modality_ids, expert_mask, padding_mask) as inputs:
        yield inputs


def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)
