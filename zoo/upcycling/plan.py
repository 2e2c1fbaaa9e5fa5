"""UpcyclePlan: how a dense decoder becomes an MoE (which layers, which router, what an expert is),
and the named plans (`PLANS`) that the CLI, the configs and the model cards use."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..core.dispatch import check_backend
from ..core.modalities import MODALITY_IDS
from ..core.presets import Presets
from ..core.validation import (FieldTypeError, check_bool, check_choice, check_indices, check_non_negative,
                               check_number, check_positive_int)
from ..experts.registry import EXPERT_KINDS

ROUTER_KINDS = ("top_k", "threshold", "modality")
EXPERT_INITS = ("copy", "split")
LAYER_CHOICES = ("all", "even", "odd")
SHARED_FFN_CHOICES = (None, "dense")
ROUTER_INITS = ("normal", "zeros")


def expert_indices(owner, name: str, experts) -> list[int]:
    """A list (or tuple) of expert indices, each an int >= 0 -> a list of ints."""
    return check_indices(owner, name, experts)


# -- the plan ------------------------------------------------------------------------------------
@dataclass
class UpcyclePlan:
    """How to turn a dense decoder into an MoE. Every field is validated on construction with the
    zoo's field checks (zoo.core.validation: ValueError naming `UpcyclePlan.<field>`, FieldTypeError
    for a value of the wrong type); `to_dict` / `from_dict` round-trip through JSON (model configs)."""

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
        check_positive_int(self, num_experts=self.num_experts, num_experts_per_tok=self.num_experts_per_tok,
                           min_capacity=self.min_capacity)
        check_choice(self, "router", self.router, ROUTER_KINDS)
        check_bool(self, normalize=self.normalize, gumbel_second=self.gumbel_second, shared_ffn_gate=self.shared_ffn_gate)
        if self.router != "threshold" and self.num_experts_per_tok > self.num_experts:
            raise ValueError(f"UpcyclePlan.num_experts_per_tok ({self.num_experts_per_tok}) must be <= num_experts ({self.num_experts})")
        check_number(self, "threshold", self.threshold, low=0, high=1, low_open=True)
        check_positive_int(self, allow_none=True, max_k=self.max_k)
        if self.max_k is not None and self.max_k > self.num_experts:
            raise ValueError(f"UpcyclePlan.max_k ({self.max_k}) must be <= num_experts ({self.num_experts})")
        check_number(self, "jitter", self.jitter, low=0, high=1, high_open=True)
        check_number(self, "capacity_factor", self.capacity_factor, low=0, low_open=True, allow_none=True,
                     note="(None = dropless)")
        if self.router == "modality":
            if not self.modality_experts:
                raise ValueError("UpcyclePlan.modality_experts is required for router='modality' (e.g. {'text': [0], 'image': [1]})")
            if not isinstance(self.modality_experts, dict):
                raise FieldTypeError(f"UpcyclePlan.modality_experts must be a dict of expert lists, got {self.modality_experts!r}")
            unknown = sorted(set(self.modality_experts) - set(MODALITY_IDS))
            if unknown:
                raise ValueError(f"UpcyclePlan.modality_experts: unknown modalities {unknown}; known: {sorted(MODALITY_IDS)}")
            self.modality_experts = {k: expert_indices(self, f"modality_experts[{k!r}]", v) for k, v in self.modality_experts.items()}
        elif self.modality_experts is not None or self.shared_experts:
            raise ValueError("UpcyclePlan.modality_experts / shared_experts only apply to router='modality'")
        self.shared_experts = expert_indices(self, "shared_experts", self.shared_experts)
        check_choice(self, "router_init", self.router_init, ROUTER_INITS)
        check_non_negative(self, router_init_std=self.router_init_std)
        if isinstance(self.layers, (list, tuple)):
            if not self.layers or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self.layers):
                raise ValueError(f"UpcyclePlan.layers as a list must hold non-negative layer indices, got {self.layers!r}")
            self.layers = sorted(set(self.layers))
        elif isinstance(self.layers, bool) or not (self.layers in LAYER_CHOICES or (isinstance(self.layers, int) and self.layers > 0)):
            raise ValueError(f"UpcyclePlan.layers must be one of {LAYER_CHOICES}, a positive int n (every n-th) or a list of indices, got {self.layers!r}")
        check_choice(self, "experts", self.experts, EXPERT_INITS)
        check_choice(self, "expert_kind", self.expert_kind, (None, *sorted(EXPERT_KINDS)))
        if not isinstance(self.expert_options, dict):
            raise FieldTypeError(f"UpcyclePlan.expert_options must be a dict, got {self.expert_options!r}")
        check_number(self, "expert_scale", self.expert_scale, low=0, low_open=True, allow_none=True)
        check_non_negative(self, init_noise=self.init_noise)
        check_choice(self, "shared_ffn", self.shared_ffn, SHARED_FFN_CHOICES)
        if self.shared_ffn_gate and self.shared_ffn is None:
            raise ValueError("UpcyclePlan.shared_ffn_gate needs shared_ffn='dense'")
        check_non_negative(self, router_aux_loss_coef=self.router_aux_loss_coef, router_z_loss_coef=self.router_z_loss_coef)
        check_backend(self, self.dispatch_backend)
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise FieldTypeError(f"UpcyclePlan.seed must be an int or None, got {self.seed!r}")

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


# -- presets -------------------------------------------------------------------------------------
# Read-only; a lookup is a copy (a caller's edits never reach the shared preset). The MoE-LLaVA plan
# is spelled like its system and model_type, "moe_llava"; the old "moe-llava" still works, with a FutureWarning.
PLANS: Presets[UpcyclePlan] = Presets("upcycling plan", {
    # Sparse upcycling as in Mixtral/Komatsuzaki et al.: 4 copies, softmax top-2 renormalised.
    "top2-of-4": UpcyclePlan(num_experts=4, num_experts_per_tok=2),
    "top2-of-8": UpcyclePlan(num_experts=8, num_experts_per_tok=2),
    # XMoE: the dense FFN split into 8 small experts (1/8 of the hidden units each), threshold routing
    # (t = 0.9, raw probabilities, balance loss 0.01 on top-1), zero router => step 0 = dense at t = 1.
    "xmoe": UpcyclePlan(num_experts=8, router="threshold", threshold=0.9, experts="split", router_init="zeros",
                        router_aux_loss_coef=0.01),
    # MoE-LLaVA: 4 copies, top-2, MoE on even layers (moe_mode="sparse"), balance loss 0.01.
    "moe_llava": UpcyclePlan(num_experts=4, num_experts_per_tok=2, layers="even", router_aux_loss_coef=0.01),
    # MoTE-style skeleton: the dense FFN stays on as a shared expert next to top-1 routed copies.
    "shared-dense-top1-of-4": UpcyclePlan(num_experts=4, num_experts_per_tok=1, shared_ffn="dense"),
}, renames={"moe-llava": "moe_llava"})


def register_plan(name: str, plan: UpcyclePlan) -> None:
    if not isinstance(plan, UpcyclePlan):
        raise FieldTypeError(f"register_plan({name!r}, ...) takes an UpcyclePlan, got {type(plan).__name__}")
    PLANS.register(name, plan)


def get_plan(name: str) -> UpcyclePlan:
    if name not in PLANS:
        raise ValueError(f"unknown upcycling plan {name!r}; known plans: {sorted(PLANS)}")
    return PLANS[name]  # a copy: a caller's edits never reach the shared preset
