"""UpcyclePlan: how a dense decoder becomes an MoE (which layers, which router, what an expert is),
and the named plans (`PLANS`) that the CLI, the configs and the model cards use."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from ..core.modalities import MODALITY_IDS
from ..experts.registry import EXPERT_KINDS

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
    return copy.deepcopy(PLANS[name])  # a copy: a caller's edits never reach the shared preset
