"""The MoME module and where it sits in a frozen decoder layer (arXiv 2510.04136, §3).

    h   = the sublayer's input                                  [B, S, H]
    y   = sum_{n <= N_s} E_n(h)  +  sum_{n in TopK} g_n E_n(h)   E(h) = W_up GELU(W_down h)   (zoo.experts.bottleneck)
          g = TopK_k(softmax(W_r h))                             one TopKRouter (zoo.core), fp32
    out = sublayer(h, ...) + y                                   in parallel to MHSA, to the FFN, or to the whole layer

    placement "attention":  layer.self_attn -> MomeParallel(self_attn)   (MoME-MHSA)
              "ffn":        layer.mlp       -> MomeParallel(mlp)         (MoME-FFN)
              "layer":      layers[i]       -> MomeParallel(layers[i])   (MoME-LAYER; h = the layer's input)

One router and one expert set per decoder layer see the tokens of every compression rate: nothing in
the module depends on the rate, so a sequence at rate 4 and one at rate 16 are routed by the same W_r
(the paper's shared-router design, its Table 7). W_up = 0 at init: y = 0 and the frozen LLM's
function is unchanged at step 0.

What the router needs besides the hidden states (the padding mask, for the balance loss) comes from
the model's `RoutingContext` (zoo.core.context) for the current call, and each module records its
`RoutingResult` there, so one model object serves concurrent calls.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.core.context import RoutingContext
from zoo.core.dispatch import dispatch
from zoo.core.routing import RoutingResult, TopKRouter
from zoo.experts.bottleneck import BottleneckExperts
from zoo.upcycling.ffn_adapters import adapter_for

PLACEMENTS = ("attention", "ffn", "layer")
ATTENTION_ATTRIBUTES = {"gpt2": "attn"}  # model_type -> attribute of the attention sublayer; default "self_attn"


class MatryoshkaExperts(nn.Module):
    """N_s always-on plus N_r routed bottleneck experts behind one top-k router.

    forward(h [B, S, H], padding_mask [B, S] | None) -> (y [B, S, H], RoutingResult over the N_r routed experts)"""

    def __init__(self, *, hidden_size: int, num_routed_experts: int, num_shared_experts: int, num_experts_per_tok: int,
                 bottleneck_size: int, normalize: bool = False, dispatch_backend: str = "auto"):
        super().__init__()
        self.hidden_size = hidden_size
        self.router = TopKRouter(hidden_size, num_routed_experts, num_experts_per_tok, normalize=normalize)
        self.routed_experts = BottleneckExperts(num_routed_experts, hidden_size, bottleneck_size)
        self.shared_experts = (BottleneckExperts(num_shared_experts, hidden_size, bottleneck_size)
                               if num_shared_experts else None)
        self.dispatch_backend = dispatch_backend

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, RoutingResult]:
        shape = hidden.shape
        flat = hidden.reshape(-1, self.hidden_size)  # [T, H]
        routing = self.router(flat, padding_mask=None if padding_mask is None else padding_mask.reshape(-1))
        out = dispatch(flat, routing, self.routed_experts, self.dispatch_backend)  # [T, H], sum_k g_k E_k(h)
        if self.shared_experts is not None:
            out = out + self.shared_experts.forward_all(flat).to(out.dtype)
        return out.view(shape), routing


class MomeParallel(nn.Module):
    """A frozen sublayer with a MoME module next to it: sublayer(h, ...) + MoME(h).

    Takes and returns what the sublayer does (a tensor, or a tuple whose first element is the hidden
    states, as attention modules return); attributes it does not have are read from the sublayer
    (`layer_idx`, `attention_type`, ...), so the decoder that calls it sees the module it expects."""

    def __init__(self, sublayer: nn.Module, mome: MatryoshkaExperts, context: RoutingContext):
        super().__init__()
        self.sublayer = sublayer
        self.mome = mome
        self.context = context  # shared with the model's other MoME modules; a plain attribute, not a submodule

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("__") or not modules or "sublayer" not in modules:  # half-built (copy, unpickling)
                raise
            return getattr(modules["sublayer"], name)

    @property
    def last_routing(self) -> RoutingResult | None:
        """This thread's latest routing of this module (zoo.core.context)."""
        return self.context.result(self)

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # [B, S, H]
        out = self.sublayer(*args, **kwargs)
        padding_mask = self.context.current().padding_mask
        if padding_mask is not None and tuple(padding_mask.shape) != tuple(hidden.shape[:-1]):
            raise ValueError(f"routing context padding_mask has shape {tuple(padding_mask.shape)} but this MoME module "
                             f"sees {tuple(hidden.shape[:-1])} tokens: set it for the tokens of this forward")
        delta, routing = self.mome(hidden, padding_mask)
        self.context.record(self, routing)
        if isinstance(out, tuple):
            return (out[0] + delta.to(out[0].dtype), *out[1:])
        return out + delta.to(out.dtype)


def attach_mome(language_model: nn.Module, placement: str, layer_ids: list[int], context: RoutingContext,
                **mome_fields) -> list[MomeParallel]:
    """Put a MoME module next to `placement` in each chosen decoder layer, in place -> the modules, in layer order.

    `language_model` is a transformers causal LM of an architecture zoo.upcycling knows (its decoder
    layers are found the same way); `mome_fields` are MatryoshkaExperts' keyword arguments."""
    if placement not in PLACEMENTS:
        raise ValueError(f"mome_placement must be one of {PLACEMENTS}, got {placement!r}")
    config = language_model.config
    adapter = adapter_for(config)
    layers = adapter.decoder_layers(language_model)
    attribute = {"attention": ATTENTION_ATTRIBUTES.get(config.model_type, "self_attn"),
                 "ffn": adapter.ffn_attribute}.get(placement)
    device = language_model.get_input_embeddings().weight.device
    attached = []
    for index in layer_ids:
        sublayer = layers[index] if attribute is None else getattr(layers[index], attribute)
        if isinstance(sublayer, MomeParallel):
            raise ValueError(f"decoder layer {index} already has a MoME module at {placement!r}")
        mome = MatryoshkaExperts(hidden_size=config.hidden_size, **mome_fields).to(device)
        wrapped = MomeParallel(sublayer, mome, context)
        if attribute is None:
            layers[index] = wrapped
        else:
            setattr(layers[index], attribute, wrapped)
        attached.append(wrapped)
    return attached
