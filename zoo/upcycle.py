"""Sparse upcycling: turn the FFNs of a dense Hugging Face decoder into MoE layers, in place.

    plan  = zoo.PLANS["top2-of-4"]                 # or zoo.UpcyclePlan(num_experts=8, ...)
    model = zoo.upcycle(model, plan)               # every chosen layer.mlp -> UpcycledFFN(MoEBlock)

For each chosen layer (zoo.ffn_adapters finds it for Llama, Mistral, Qwen2/3, Gemma3, Phi-3, GPT-2):

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

The replaced module `UpcycledFFN` takes and returns [B, S, H] like the dense FFN, reads the
per-forward routing context (`modality_ids`, `expert_mask`, `padding_mask`) shared by all layers of
the model (set it with `routing_context(model, ...)`), and keeps its last `RoutingResult`.

Expert kinds are builders in `EXPERT_KINDS` (`register_expert_kind`): "glu" and "mlp" here, "lora"
in zoo.lora_experts, "ternary" in zoo.ternary (MoTE); other systems register theirs the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .experts import ExpertBank, GLUExperts, MLPExperts, SharedExperts
from .ffn_adapters import ARCHITECTURES, ArchitectureAdapter, FFNWeights, adapter_for
from .moe import MoEBlock
from .routing import MODALITY_IDS, ModalityRouter, Router, RoutingResult, ThresholdRouter, TopKRouter

ROUTER_KINDS = ("top_k", "threshold", "modality")
EXPERT_INITS = ("copy", "split")
LAYER_CHOICES = ("all", "even", "odd")
SHARED_FFN_CHOICES = (None, "dense")
ROUTER_INITS = ("normal", "zeros")


# -- the plan ------------------------------------------------------------------------------------
@dataclass
class UpcyclePlan:
    """How to turn a dense decoder into an MoE. Every field is validated on construction
    (ValueError naming the field); `to_dict` / `from_dict` round-trip through JSON (model configs)."""

    num_experts: int = 4
    num_experts_per_tok: int = 2  # top_k and modality routers
    router: str = "top_k"  # "top_k" | "threshold" | "modality"
    # router options
    normalize: bool = True  # renormalise the top-k weights (Mixtral); False = raw probabilities (Qwen3-MoE/OLMoE)
    jitter: float = 0.0  # multiplicative input jitter in training (Switch)
    gumbel_second: bool = False  # Gumbel-sampled 2nd expert in training (DeepSpeed / MoE-LLaVA)
    threshold: float = 0.9  # threshold router: cumulative probability mass (XMoE)
    max_k: int | None = None  # threshold router: at most this many experts per token
    capacity_factor: float | None = None  # None = dropless
    min_capacity: int = 4
    modality_experts: dict[str, list[int]] | None = None  # modality router: own experts per modality
    shared_experts: list[int] = field(default_factory=list)  # modality router: pool every modality reaches
    router_init: str = "normal"  # "normal" (std router_init_std) | "zeros" (uniform probabilities)
    router_init_std: float = 0.02
    # where and what
    layers: str | int | list[int] = "all"  # "all" | "even" | "odd" | n (every n-th, from 0) | [indices]
    experts: str = "copy"  # "copy" | "split" (partition the hidden units into num_experts parts)
    expert_kind: str | None = None  # None = the dense FFN's own kind ("glu" or "mlp"); see EXPERT_KINDS
    expert_options: dict = field(default_factory=dict)  # passed to the expert builder (e.g. {"rank": 8})
    expert_scale: float | None = None  # output scale of every expert; None = num_experts for split, 1 for copy
    init_noise: float = 0.0  # copy: add N(0, (init_noise * std(W))^2) to each expert weight
    shared_ffn: str | None = None  # None | "dense": keep the dense FFN as an always-on shared expert
    shared_ffn_gate: bool = False  # scale the shared FFN by sigmoid(w.x) (Qwen2-MoE)
    # training
    router_aux_loss_coef: float = 0.001
    router_z_loss_coef: float = 0.0
    dispatch_backend: str = "auto"
    seed: int | None = None  # torch.manual_seed before upcycling (router init and init noise)

    def __post_init__(self):
        def positive_int(name, value):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"UpcyclePlan.{name} must be a positive integer, got {value!r}")

        positive_int("num_experts", self.num_experts)
        positive_int("num_experts_per_tok", self.num_experts_per_tok)
        positive_int("min_capacity", self.min_capacity)
        if self.router not in ROUTER_KINDS:
            raise ValueError(f"UpcyclePlan.router must be one of {ROUTER_KINDS}, got {self.router!r}")
        if self.router != "threshold" and self.num_experts_per_tok > self.num_experts:
            raise ValueError(f"UpcyclePlan.num_experts_per_tok ({self.num_experts_per_tok}) must be <= num_experts ({self.num_experts})")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"UpcyclePlan.threshold must be in (0, 1], got {self.threshold}")
        if self.max_k is not None:
            positive_int("max_k", self.max_k)
            if self.max_k > self.num_experts:
                raise ValueError(f"UpcyclePlan.max_k ({self.max_k}) must be <= num_experts ({self.num_experts})")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"UpcyclePlan.jitter must be in [0, 1), got {self.jitter}")
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ValueError(f"UpcyclePlan.capacity_factor must be > 0 or None (dropless), got {self.capacity_factor}")
        if self.router == "modality":
            if not self.modality_experts:
                raise ValueError("UpcyclePlan.modality_experts is required for router='modality' (e.g. {'text': [0], 'image': [1]})")
            unknown = sorted(set(self.modality_experts) - set(MODALITY_IDS))
            if unknown:
                raise ValueError(f"UpcyclePlan.modality_experts: unknown modalities {unknown}; known: {sorted(MODALITY_IDS)}")
            self.modality_experts = {k: [int(e) for e in v] for k, v in self.modality_experts.items()}
        elif self.modality_experts is not None or self.shared_experts:
            raise ValueError("UpcyclePlan.modality_experts / shared_experts only apply to router='modality'")
        self.shared_experts = [int(e) for e in self.shared_experts]
        if self.router_init not in ROUTER_INITS:
            raise ValueError(f"UpcyclePlan.router_init must be one of {ROUTER_INITS}, got {self.router_init!r}")
        if self.router_init_std < 0:
            raise ValueError(f"UpcyclePlan.router_init_std must be >= 0, got {self.router_init_std}")
        if isinstance(self.layers, (list, tuple)):
            if not self.layers or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self.layers):
                raise ValueError(f"UpcyclePlan.layers as a list must hold non-negative layer indices, got {self.layers!r}")
            self.layers = sorted(set(self.layers))
        elif isinstance(self.layers, bool) or not (self.layers in LAYER_CHOICES or (isinstance(self.layers, int) and self.layers > 0)):
            raise ValueError(f"UpcyclePlan.layers must be one of {LAYER_CHOICES}, a positive int n (every n-th) or a list of indices, got {self.layers!r}")
        if self.experts not in EXPERT_INITS:
            raise ValueError(f"UpcyclePlan.experts must be one of {EXPERT_INITS}, got {self.experts!r}")
        if self.expert_kind is not None and self.expert_kind not in EXPERT_KINDS:
            raise ValueError(f"UpcyclePlan.expert_kind {self.expert_kind!r} is not registered; known: {sorted(EXPERT_KINDS)}")
        if self.expert_scale is not None and self.expert_scale <= 0:
            raise ValueError(f"UpcyclePlan.expert_scale must be > 0, got {self.expert_scale}")
        if self.init_noise < 0:
            raise ValueError(f"UpcyclePlan.init_noise must be >= 0, got {self.init_noise}")
        if self.shared_ffn not in SHARED_FFN_CHOICES:
            raise ValueError(f"UpcyclePlan.shared_ffn must be one of {SHARED_FFN_CHOICES}, got {self.shared_ffn!r}")
        if self.shared_ffn_gate and self.shared_ffn is None:
            raise ValueError("UpcyclePlan.shared_ffn_gate needs shared_ffn='dense'")
        for name in ("router_aux_loss_coef", "router_z_loss_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"UpcyclePlan.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def scale(self) -> float:
        if self.expert_scale is not None:
            return float(self.expert_scale)
        return float(self.num_experts) if self.experts == "split" else 1.0

    def layer_indices(self, num_layers: int) -> list[int]:
        if isinstance(self.layers, list):
            outside = [i for i in self.layers if i >= num_layers]
            if outside:
                raise ValueError(f"UpcyclePlan.layers {outside} are outside the model's {num_layers} layers")
            return list(self.layers)
        if self.layers == "all":
            return list(range(num_layers))
        if self.layers == "even":
            return list(range(0, num_layers, 2))
        if self.layers == "odd":
            return list(range(1, num_layers, 2))
        return list(range(0, num_layers, self.layers))

    def replace(self, **changes) -> "UpcyclePlan":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UpcyclePlan":
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown UpcyclePlan fields {unknown}")
        return cls(**data)


# -- expert builders -----------------------------------------------------------------------------
ExpertBuilder = Callable[[list[FFNWeights], UpcyclePlan], ExpertBank]
EXPERT_KINDS: dict[str, ExpertBuilder] = {}


def register_expert_kind(name: str, builder: ExpertBuilder) -> None:
    """Add an expert kind: `builder(parts, plan) -> ExpertBank`, where `parts` holds one FFNWeights
    per expert (the same object E times for copies) and the bank must apply `plan.scale`."""
    EXPERT_KINDS[name] = builder


def stack_parts(parts: list[FFNWeights], name: str, plan: UpcyclePlan, scale: float = 1.0) -> nn.Parameter:
    """[E, ...] parameter from one tensor per expert; copies are expanded once (one allocation),
    then optionally jittered by `init_noise` x std(W)."""
    tensors = [getattr(p, name) for p in parts]
    if all(t is tensors[0] for t in tensors):
        stacked = tensors[0].unsqueeze(0).expand(len(tensors), *tensors[0].shape).clone()
    else:
        stacked = torch.stack(tensors)
    if scale != 1.0:
        stacked.mul_(scale)
    if plan.init_noise > 0 and stacked.device.type != "meta" and stacked.dim() > 2:
        stacked.add_(torch.randn_like(stacked) * (plan.init_noise * tensors[0].float().std().item()))
    return nn.Parameter(stacked)  # new, trainable weights (the dense ones may have been frozen)


def _empty_bank(cls, *args, **kwargs):
    with torch.device("meta"):  # parameters are replaced right away: skip allocating and initialising them
        return cls(*args, **kwargs)


def build_glu_experts(parts: list[FFNWeights], plan: UpcyclePlan) -> GLUExperts:
    first = parts[0]
    if first.kind != "glu":
        raise ValueError(f"expert kind 'glu' needs a gated (SwiGLU/GeGLU) FFN; this architecture's FFN is {first.kind!r}")
    bank = _empty_bank(GLUExperts, len(parts), first.hidden_size, first.intermediate_size, act=first.act)
    if all(p is first for p in parts):  # copies: fuse gate and up once
        gate_up = [dataclasses.replace(first, up=torch.cat([first.gate, first.up], dim=0))] * len(parts)
    else:
        gate_up = [dataclasses.replace(p, up=torch.cat([p.gate, p.up], dim=0)) for p in parts]
    bank.gate_up_proj = stack_parts(gate_up, "up", plan)  # [E, 2I, H]
    bank.down_proj = stack_parts(parts, "down", plan, plan.scale)  # [E, H, I]
    return bank


def build_mlp_experts(parts: list[FFNWeights], plan: UpcyclePlan) -> MLPExperts:
    first = parts[0]
    if first.kind != "mlp":
        raise ValueError(f"expert kind 'mlp' needs a plain two-layer FFN; this architecture's FFN is {first.kind!r}")
    has_bias = first.up_bias is not None
    bank = _empty_bank(MLPExperts, len(parts), first.hidden_size, first.intermediate_size, act=first.act, bias=has_bias)
    bank.up_proj = stack_parts(parts, "up", plan)  # [E, I, H]
    bank.down_proj = stack_parts(parts, "down", plan, plan.scale)  # [E, H, I]
    if has_bias:
        bank.up_proj_bias = stack_parts(parts, "up_bias", plan)  # [E, I]
        bank.down_proj_bias = stack_parts(parts, "down_bias", plan, plan.scale)  # [E, H]
    return bank


register_expert_kind("glu", build_glu_experts)
register_expert_kind("mlp", build_mlp_experts)


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


# -- the replaced module -------------------------------------------------------------------------
class RoutingContext:
    """Per-forward routing inputs shared by every UpcycledFFN of one model.

    A decoder layer hands its FFN only the hidden states, so whatever the router needs besides them
    (modality ids from the multimodal wrapper, MoVA's expert mask, the padding mask for the losses)
    is set here before the forward and read by each layer."""

    def __init__(self):
        self.modality_ids: torch.Tensor | None = None  # [B, S] long
        self.expert_mask: torch.Tensor | None = None  # [E], [B, E] or [B, S, E]
        self.padding_mask: torch.Tensor | None = None  # [B, S] bool, True = real token

    def set(self, modality_ids=None, expert_mask=None, padding_mask=None) -> None:
        self.modality_ids, self.expert_mask, self.padding_mask = modality_ids, expert_mask, padding_mask


class UpcycledFFN(nn.Module):
    """The MoE that replaced a dense FFN: hidden [B, S, H] -> [B, S, H] (the dense FFN's signature).

    `moe` is the MoEBlock (router -> dispatch -> experts -> combine, + shared FFN); `last_routing`
    holds the RoutingResult of the latest forward (router logits, aux losses, the gallery's heatmap).
    """

    def __init__(self, moe: MoEBlock, context: RoutingContext, dropout: float = 0.0):
        super().__init__()
        self.moe = moe
        self.dropout = nn.Dropout(dropout)
        self.context = context  # shared with the other layers; a plain attribute, not a submodule
        self.last_routing: RoutingResult | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        padding, modality_ids = ctx.padding_mask, ctx.modality_ids
        if padding is not None and padding.shape != hidden.shape[:-1]:
            padding = None  # the loss mask only covers the prompt (e.g. during cached decoding); losses then count every token
        if modality_ids is not None and modality_ids.shape != hidden.shape[:-1]:
            # ids of the whole prompt while cached decoding feeds only new tokens: those are text (as in MoIIE's code)
            modality_ids = torch.full(hidden.shape[:-1], MODALITY_IDS["text"], dtype=torch.long, device=hidden.device)
        out, routing = self.moe(hidden, modality_ids=modality_ids, expert_mask=ctx.expert_mask, padding_mask=padding)
        self.last_routing = routing
        return self.dropout(out)


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
    return model


def upcycled_layers(model: nn.Module) -> list[tuple[str, UpcycledFFN]]:
    """(module name, UpcycledFFN) for every MoE layer of the model, in layer order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, UpcycledFFN)]


@contextlib.contextmanager
def routing_context(model: nn.Module, modality_ids=None, expert_mask=None, padding_mask=None) -> Iterator[RoutingContext]:
    """Set the per-forward routing inputs of an upcycled model for the duration of a `with` block:

        with routing_context(model, modality_ids=ids):   # ids [B, S]: zoo.MODALITY_IDS per token
            out = model(input_ids)
    """
    context = getattr(model, "routing_context", None)
    if context is None:
        raise ValueError(f"{type(model).__name__} has no upcycled layers (call zoo.upcycle first)")
    previous = (context.modality_ids, context.expert_mask, context.padding_mask)
    context.set(modality_ids, expert_mask, padding_mask)
    try:
        yield context
    finally:
        context.set(*previous)


# -- presets -------------------------------------------------------------------------------------
PLANS: dict[str, UpcyclePlan] = {
    # Sparse upcycling as in Mixtral/Komatsuzaki et al.: 4 copies, softmax top-2 renormalised.
    "top2-of-4": UpcyclePlan(num_experts=4, num_experts_per_tok=2),
    "top2-of-8": UpcyclePlan(num_experts=8, num_experts_per_tok=2),
    # XMoE: the dense FFN split into 8 small experts (1/8 of the hidden units each), threshold routing
    # (t = 0.9, raw probabilities, balance loss 0.01 on top-1), zero router => step 0 = dense at t = 1.
    "xmoe": UpcyclePlan(num_experts=8, router="threshold", threshold=0.9, experts="split", router_init="zeros",
                        router_aux_loss_coef=0.01),
    # MoE-LLaVA: 4 copies, top-2, MoE on even layers (moe_mode="sparse"), balance loss 0.01.
    "moe-llava": UpcyclePlan(num_experts=4, num_experts_per_tok=2, layers="even", router_aux_loss_coef=0.01),
    # MoTE-style skeleton: the dense FFN stays on as a shared expert next to top-1 routed copies.
    "shared-dense-top1-of-4": UpcyclePlan(num_experts=4, num_experts_per_tok=1, shared_ffn="dense"),
}


def register_plan(name: str, plan: UpcyclePlan) -> None:
    PLANS[name] = plan


def get_plan(name: str) -> UpcyclePlan:
    if name not in PLANS:
        raise ValueError(f"unknown upcycling plan {name!r}; known plans: {sorted(PLANS)}")
    return PLANS[name]


def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


__all__ = [
    "EXPERT_KINDS", "PLANS", "ArchitectureAdapter", "FFNWeights", "RoutingContext", "UpcycledFFN", "UpcyclePlan",
    "build_router", "get_plan", "register_expert_kind", "register_plan", "routing_context", "supported_architectures",
    "upcycle", "upcycled_layers",
]


from .lora_experts import LoRAExperts  # noqa: E402,F401  (registers expert kind "lora"; imported last: it builds on this module)
