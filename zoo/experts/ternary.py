"""Ternary experts (MoTE, BitNet b1.58 quantiser) and int8 weight-only PTQ for the full-precision rest.

Training (quantisation-aware, latent full-precision weights, straight-through estimator):
    W_q = s * clamp(round(W / s), -1, 1),  s = mean|W| per expert (absmean)      W_ste = W + sg(W_q - W)
    x_q = a * clamp(round(x / a), -128, 127), a = max|x| / 127 per token (absmax)  x_ste = x + sg(x_q - x)
Checkpoints: codes + 1 in {0, 1, 2}, four per byte (2 bits/weight) + one fp32 scale per expert matrix.
Inference, two grouped-linear backends (zoo.core.dispatch) over those packed experts:
    `ternary_int8`   the codes unpacked once into resident int8 [E, out, in] (8 bits/weight in memory), each
                     token's activations quantised to int8 by the same absmax rule as in training, and an
                     int8 x int8 -> int32 matmul (`torch._int_mm`, exact) scaled by a * s: MoTE's forward in
                     integers, 3-5x faster than bf16 experts on this CPU (benchmarks.mote)
    `ternary_packed` 2 bits/weight resident, unpacked on the fly for the experts that received tokens
                     (the smallest memory, slower than bf16)
Expert kind "ternary" for zoo.upcycle (`UpcyclePlan(expert_kind="ternary", expert_options={"rank": 8, "packed": False})`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..core.dispatch import eager_grouped_linear, register_backend
from ..core.expert_banks import ExpertBank, activation
from ..core.validation import check_bool, check_number, check_positive_int, check_weight
from .ffn_weights import FFNWeights
from .low_rank import lora_pair
from .registry import ExpertPlan, copy_expert_options, register_expert_kind


# -- quantisers ---------------------------------------------------------------------------------
def ternary_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [E, out, in] -> codes int8 in {-1, 0, 1} [E, out, in], scale fp32 [E] (absmean)."""
    scale = weight.detach().float().abs().mean(dim=(1, 2)).clamp_min(1e-8)  # [E]
    codes = (weight.detach().float() / scale[:, None, None]).round().clamp(-1, 1).to(torch.int8)
    return codes, scale


def ternary_ste(weight: torch.Tensor) -> torch.Tensor:
    """Fake-quantised weights with an identity gradient to the latent weights."""
    codes, scale = ternary_codes(weight)
    quantised = (codes.float() * scale[:, None, None]).to(weight.dtype)
    return weight + (quantised - weight).detach()


def int8_activations_ste(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax int8 fake quantisation of [N, d] activations (identity gradient)."""
    step = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-5) / 127.0
    quantised = (x.detach() / step).round().clamp(-128, 127) * step
    return x + (quantised - x).detach()


def int8_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, d] -> (int8 codes [N, d], step [N, 1] in x's dtype): `int8_activations_ste`'s rule, as integers."""
    x = x.detach()
    step = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True).clamp_min_(1e-5).div_(127.0)  # max |x| / 127
    return (x / step).round_().to(torch.int8), step  # |x / step| <= 127: the STE's clamp never binds


# -- 2-bit packing --------------------------------------------------------------------------------
def pack_ternary(codes: torch.Tensor) -> torch.Tensor:
    """codes int8 [E, out, in] in {-1,0,1} -> uint8 [E, ceil(out*in/4)] (four 2-bit values per byte, low bits first)."""
    flat = (codes.reshape(codes.shape[0], -1) + 1).to(torch.uint8)  # {0, 1, 2}
    pad = (-flat.shape[1]) % 4
    flat = F.pad(flat, (0, pad)).view(flat.shape[0], -1, 4)
    return flat[..., 0] | (flat[..., 1] << 2) | (flat[..., 2] << 4) | (flat[..., 3] << 6)


def unpack_ternary(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """uint8 [n] (one expert) -> int8 codes [out, in]."""
    values = torch.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], dim=-1).reshape(-1)
    return (values[: shape[0] * shape[1]].to(torch.int8) - 1).view(shape)


@dataclass
class PackedTernary:
    """E packed ternary matrices of one shape: what a grouped-linear backend receives as `weight`."""

    packed: torch.Tensor  # [E, ceil(out*in/4)] uint8
    scale: torch.Tensor  # [E] fp32
    shape: tuple[int, int]  # (out, in)

    def dequantize(self, expert: int, dtype=torch.float32) -> torch.Tensor:
        return unpack_ternary(self.packed[expert], self.shape).to(dtype) * self.scale[expert].to(dtype)

    def bits_per_weight(self) -> float:
        bits = self.packed.numel() * 8 + self.scale.numel() * 32
        return bits / (self.packed.shape[0] * self.shape[0] * self.shape[1])


def packed_ternary_linear(x, weight, bias, groups) -> torch.Tensor:
    """Grouped linear over packed ternary weights: unpack only experts with rows; tensors go to eager."""
    if not isinstance(weight, PackedTernary):
        return eager_grouped_linear(x, weight, bias, groups)
    pieces = [F.linear(x[s:t], weight.dequantize(e, x.dtype), None if bias is None else bias[e])
              for e, s, t in groups.ranges()]
    return torch.cat(pieces, dim=0) if pieces else x.new_zeros(x.shape[0], weight.shape[0])


register_backend("ternary_packed", packed_ternary_linear)


@dataclass
class Int8Ternary:
    """E ternary matrices as resident int8 codes: what the `ternary_int8` backend receives as `weight`."""

    codes: torch.Tensor  # [E, out, in] int8 in {-1, 0, 1}
    scale: torch.Tensor  # [E] fp32

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape[1:])


def int8_ternary_linear(x, weight, bias, groups) -> torch.Tensor:
    """Grouped linear over int8 ternary codes: rows quantised to int8 (absmax per row), int8 x int8 -> int32
    per expert (exact), then scaled by row step x expert scale. Plain tensors go to eager."""
    if not isinstance(weight, Int8Ternary):
        return eager_grouped_linear(x, weight, bias, groups)
    rows, step = int8_activations(x)  # [N, in] int8, [N, 1]
    scale = weight.scale.to(x.dtype)
    pieces = []
    for e, s, t in groups.ranges():  # sorted rows: the pieces cover [0, N) in order
        y = torch._int_mm(rows[s:t], weight.codes[e].t()) * (step[s:t] * scale[e])  # int32 [rows, out] -> x.dtype
        pieces.append(y if bias is None else y + bias[e].to(x.dtype))
    if not pieces:
        return x.new_zeros(x.shape[0], weight.shape[0])
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


register_backend("ternary_int8", int8_ternary_linear)
TERNARY_BACKENDS = ("ternary_int8", "ternary_packed")


# -- the expert bank (expert kind "ternary") ---------------------------------------------------------------
class TernaryGLUExperts(ExpertBank):
    """SwiGLU experts with ternary weights and int8 activations (MoTE), upcycled from one dense FFN
    (gate_up [2I, H], down [H, I]). Latent weights for training are either full copies
    (gate_up_proj [E, 2I, H], down_proj [E, H, I]) or, with `lora_rank` r, the frozen dense FFN plus
    per-expert LoRA deltas in zoo.experts.lora' layout (gate_up_proj [2I, H] frozen, gate_up_lora_A
    [E, r, H], gate_up_lora_B [E, 2I, r], ...): W_e = W + (alpha / r) B_e A_e, quantised as a whole,
    so a trained bank ships in a few MB. `pack_()` freezes W_e into 2-bit codes for inference."""

    def __init__(self, num_experts: int, gate_up: torch.Tensor, down: torch.Tensor, act: str = "silu",
                 lora_rank: int | None = None, lora_alpha: float | None = None, packed: bool = False):
        check_weight(self, "gate_up", gate_up, dims=2)
        check_weight(self, "down", down, dims=2)
        (fused, hidden), (down_out, intermediate) = gate_up.shape, down.shape
        if fused != 2 * intermediate or down_out != hidden:
            raise ValueError(f"{type(self).__name__}.gate_up {tuple(gate_up.shape)} [2I, H] and "
                             f"{type(self).__name__}.down {tuple(down.shape)} [H, I] are not one SwiGLU FFN's weights")
        super().__init__(num_experts, hidden, intermediate)
        check_positive_int(self, allow_none=True, lora_rank=lora_rank)
        check_number(self, "lora_alpha", lora_alpha, low=0, low_open=True, allow_none=True)
        check_bool(self, packed=packed)
        self.act_fn = activation(act, self)
        self.lora_rank = lora_rank
        self.scaling = 1.0 if lora_rank is None else (lora_rank if lora_alpha is None else lora_alpha) / lora_rank
        self.shapes = {"gate_up_proj": tuple(gate_up.shape), "down_proj": tuple(down.shape)}
        for name, base in (("gate_up_proj", gate_up), ("down_proj", down)):
            if lora_rank is None:
                setattr(self, name, nn.Parameter(base.detach()[None].repeat(num_experts, 1, 1)))
            else:
                setattr(self, name, nn.Parameter(base.detach().clone(), requires_grad=False))
                lora_a, lora_b = lora_pair(num_experts, lora_rank, *base.shape, device=base.device)
                setattr(self, self._lora_name(name, "A"), lora_a)
                setattr(self, self._lora_name(name, "B"), lora_b)
        self.packed = False
        if packed:
            self.pack_()

    @staticmethod
    def _lora_name(name: str, which: str) -> str:
        return f"{name.removesuffix('_proj')}_lora_{which}"

    def latent(self, name: str) -> torch.Tensor:
        """[E, out, in] latent weights, in the autocast dtype when autocast is on (grouped_mm is not autocast-aware)."""
        weight = getattr(self, name)
        if self.lora_rank is not None:
            delta = torch.bmm(getattr(self, self._lora_name(name, "B")), getattr(self, self._lora_name(name, "A")))
            weight = weight + self.scaling * delta
        if weight.device.type != "meta" and torch.is_autocast_enabled(weight.device.type):
            weight = weight.to(torch.get_autocast_dtype(weight.device.type))
        return weight

    def quantised(self, name: str, backend: str = "ternary_packed"):
        if not self.packed:
            if backend == "ternary_int8" and not torch.is_grad_enabled():
                # evaluation / generation of a model still in training form: quantise once, not every call
                sources = [getattr(self, name)] + ([] if self.lora_rank is None else
                                                   [getattr(self, self._lora_name(name, w)) for w in "AB"])
                return Int8Ternary(*self._cached(name, sources, lambda: ternary_codes(self.latent(name))))
            return ternary_ste(self.latent(name))
        packed, scale = getattr(self, f"{name}_packed"), getattr(self, f"{name}_scale")
        if backend == "ternary_int8":
            codes = self._cached(name, [packed], lambda: torch.stack(
                [unpack_ternary(packed[e], self.shapes[name]) for e in range(packed.shape[0])]))
            return Int8Ternary(codes, scale)
        return PackedTernary(packed, scale, self.shapes[name])

    def _cached(self, name: str, sources: list[torch.Tensor], build):
        """`build()` kept until one of `sources` changes: an optimizer step or a load_state_dict writes into
        them in place (their version counter moves), which rebuilds it."""
        cache = self.__dict__.setdefault("_int8_cache", {})
        key = tuple((t.data_ptr(), t._version, t.device) for t in sources)
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, build())
        return cache[name][1]

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:
        if self.packed and groups.backend not in TERNARY_BACKENDS:
            raise ValueError(f"packed ternary experts need dispatch_backend in {TERNARY_BACKENDS}, got {groups.backend!r}")
        gate_up, down = self.quantised("gate_up_proj", groups.backend), self.quantised("down_proj", groups.backend)
        if isinstance(gate_up, Int8Ternary):  # the kernel quantises each row to int8 itself (the same rule)
            gate, up = groups.linear(x, gate_up).chunk(2, dim=-1)
            return groups.linear(self.act_fn(gate) * up, down)
        if isinstance(gate_up, torch.Tensor):
            x = x.to(gate_up.dtype)
        gate, up = groups.linear(int8_activations_ste(x), gate_up).chunk(2, dim=-1)  # [N, I] each
        return groups.linear(int8_activations_ste(self.act_fn(gate) * up), down)  # [N, H]

    @torch.no_grad()
    def pack_(self) -> "TernaryGLUExperts":
        """Replace the latent weights by 2-bit codes + scales (saved as buffers; irreversible)."""
        for name in ("gate_up_proj", "down_proj"):
            weight = self.latent(name)
            if weight.is_meta:
                packed = torch.empty(weight.shape[0], math.ceil(weight.shape[1] * weight.shape[2] / 4), dtype=torch.uint8, device="meta")
                scale = torch.empty(weight.shape[0], device="meta")
            else:
                codes, scale = ternary_codes(weight)
                packed = pack_ternary(codes)
            delattr(self, name)
            if self.lora_rank is not None:
                delattr(self, self._lora_name(name, "A"))
                delattr(self, self._lora_name(name, "B"))
            self.register_buffer(f"{name}_packed", packed)
            self.register_buffer(f"{name}_scale", scale)
        self.packed = True
        return self

    def bits_per_weight(self) -> float:
        if not self.packed:
            raise ValueError("bits_per_weight is defined for packed experts; call pack_() first")
        bits = sum(b.numel() * b.element_size() * 8 for n, b in self.named_buffers() if n.endswith(("_packed", "_scale")))
        weights = self.num_experts * 3 * self.hidden_size * self.intermediate_size
        return bits / weights


def build_ternary_experts(parts: list[FFNWeights], plan: ExpertPlan) -> TernaryGLUExperts:
    """Expert kind "ternary": `expert_options` rank (None = full latent copies), alpha (default rank), packed."""
    options = copy_expert_options("ternary", parts, plan, ("rank", "alpha", "packed"))
    first = parts[0]
    return TernaryGLUExperts(len(parts), torch.cat([first.gate, first.up], dim=0), first.down, first.act,
                             lora_rank=options.get("rank"), lora_alpha=options.get("alpha"),
                             packed=options.get("packed", False))


register_expert_kind("ternary", build_ternary_experts)


# -- int8 weight-only PTQ ---------------------------------------------------------------------------
class Int8Linear(nn.Module):
    """Weight-only int8 (per output channel absmax); computes in the input's dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(1e-8) / 127.0  # [out]
        self.register_buffer("weight_int8", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_int8.to(x.dtype) * self.weight_scale.to(x.dtype)[:, None]
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))


def quantize_int8_(module: nn.Module, include=lambda name: True) -> list[str]:
    """Swap every nn.Linear whose qualified name passes `include` for an Int8Linear; returns the names."""
    swapped = []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if type(sub) is nn.Linear and include(full):
                setattr(child, attr, Int8Linear(sub))
                swapped.append(full)
    return swapped
