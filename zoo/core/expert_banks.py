"""Expert banks: E experts as stacked [E, out, in] parameters, so one grouped matmul runs them all
and PEFT's `target_parameters` reaches them. A bank's forward takes rows already sorted by expert:

    bank(x [N, H], groups) -> [N, H]      (groups: zoo.core.dispatch.ExpertGroups)

Null experts are not modules: a router with more experts than the bank routes the extra indices to
nothing (zero output), see zoo.core.dispatch.
"""
from __future__ import annotations

import torch
from torch import nn

from .validation import check_bool, check_instance, check_positive_int, field_name


def activation(name: str, owner=None) -> nn.Module:
    from transformers.activations import ACT2FN  # here, not at import: it costs a second and `import zoo.core` stays light

    if not isinstance(name, str) or name not in ACT2FN:
        raise ValueError(f"{field_name(owner, 'act')}: unknown activation {name!r}; known: {sorted(ACT2FN)}")
    return ACT2FN[name]


class ExpertBank(nn.Module):
    """Common fields; subclasses define the parameters and `forward(x, groups)`."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int):
        super().__init__()
        check_positive_int(self, num_experts=num_experts, hidden_size=hidden_size, intermediate_size=intermediate_size)
        self.num_experts = num_experts
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, hidden_size={self.hidden_size}, intermediate_size={self.intermediate_size}"


class GLUExperts(ExpertBank):
    """SwiGLU experts in transformers v5's layout (MixtralExperts):
    gate_up_proj [E, 2I, H] (gate rows first, then up), down_proj [E, H, I].

        y_e(x) = down_e( act(gate_e x) * up_e x )
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, act: str = "silu"):
        super().__init__(num_experts, hidden_size, intermediate_size)
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        self.act_fn = activation(act, self)
        nn.init.normal_(self.gate_up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02)

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:
        gate, up = groups.linear(x, self.gate_up_proj).chunk(2, dim=-1)  # [N, I] each
        return groups.linear(self.act_fn(gate) * up, self.down_proj)  # [N, H]


class MLPExperts(ExpertBank):
    """Plain two-layer experts with biases (GPT-2 / Phi style; also fine-grained split experts):
    up_proj [E, I, H] + up_proj_bias [E, I], down_proj [E, H, I] + down_proj_bias [E, H].

        y_e(x) = down_e( act(up_e x + b_up) ) + b_down
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, act: str = "gelu", bias: bool = True):
        super().__init__(num_experts, hidden_size, intermediate_size)
        check_bool(self, bias=bias)
        self.up_proj = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        self.up_proj_bias = nn.Parameter(torch.zeros(num_experts, intermediate_size)) if bias else None
        self.down_proj_bias = nn.Parameter(torch.zeros(num_experts, hidden_size)) if bias else None
        self.act_fn = activation(act, self)
        nn.init.normal_(self.up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02)

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:
        h = self.act_fn(groups.linear(x, self.up_proj, self.up_proj_bias))  # [N, I]
        return groups.linear(h, self.down_proj, self.down_proj_bias)  # [N, H]


class GatedMLP(nn.Module):
    """A dense SwiGLU FFN with Llama/Qwen key names (gate_proj, up_proj, down_proj)."""

    def __init__(self, hidden_size: int, intermediate_size: int, act: str = "silu"):
        super().__init__()
        check_positive_int(self, hidden_size=hidden_size, intermediate_size=intermediate_size)
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act_fn = activation(act, self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class SharedExperts(nn.Module):
    """Always-on experts (DeepSeekMoE, Qwen2-MoE, a frozen dense FFN kept next to routed experts):
    every token goes through `ffn`; with `gated`, the output is scaled by sigmoid(w·x) (Qwen2-MoE).

    Pass `ffn` to wrap an existing dense FFN (its weights are used as they are)."""

    def __init__(self, hidden_size: int, intermediate_size: int | None = None, act: str = "silu",
                 gated: bool = False, ffn: nn.Module | None = None):
        super().__init__()
        check_positive_int(self, hidden_size=hidden_size)
        check_bool(self, gated=gated)
        check_instance(self, "ffn", ffn, nn.Module, allow_none=True)
        if ffn is None:
            if intermediate_size is None:
                raise ValueError("SharedExperts.intermediate_size is needed when no ffn module is given")
            ffn = GatedMLP(hidden_size, intermediate_size, act)
        self.ffn = ffn
        self.gate = nn.Linear(hidden_size, 1, bias=False) if gated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, H] -> [T, H]
        out = self.ffn(x)
        if self.gate is not None:
            out = torch.sigmoid(self.gate(x)) * out
        return out
