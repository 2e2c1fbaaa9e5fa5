"""Where each supported dense architecture keeps its FFNs, and how to read their weights.

Upcycling needs three facts per architecture: the list of decoder layers, the attribute of the FFN
in a layer, and the FFN's weights in one common form (`FFNWeights`, the [out, in] layout of
nn.Linear). Everything else (experts, router, dispatch) is architecture-free.

    architecture            FFN                                        expert kind
    llama/mistral/qwen2/3   mlp.{gate,up,down}_proj  (SwiGLU)          glu
    gemma3_text             mlp.{gate,up,down}_proj  (GeGLU)           glu
    phi3                    mlp.gate_up_proj (fused, gate rows first)  glu
    phi (Phi-2)             mlp.fc1 / mlp.fc2 (nn.Linear, biases)      mlp (with biases)
    gpt2                    mlp.c_fc / mlp.c_proj (Conv1D: [in, out])  mlp (with biases)
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..experts.ffn_weights import FFNWeights


def _linear_weight(module: nn.Module, name: str) -> nn.Linear:
    linear = getattr(module, name, None)
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected {type(module).__name__}.{name} to be an nn.Linear, got {type(linear).__name__}")
    return linear


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Locates the FFNs of one architecture family and reads/builds them."""

    name: str
    layers_paths: tuple[str, ...]  # where the decoder layers live, tried in order from the task model
    act_attribute: str  # config attribute naming the FFN activation
    fused_gate_up: bool = False  # Phi-3
    conv1d: bool = False  # GPT-2
    fc_names: tuple[str, str] | None = None  # plain nn.Linear MLP with biases (Phi-2: fc1, fc2)
    ffn_attribute: str = "mlp"
    attention_projections: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # LoRA targets
    dense_ffn_projections: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        for path in self.layers_paths:
            module = model
            for part in path.split("."):
                module = getattr(module, part, None)
                if module is None:
                    break
            if isinstance(module, nn.ModuleList):
                return module
        raise ValueError(f"{type(model).__name__}: no decoder layers found at {list(self.layers_paths)}")

    def activation(self, config) -> str:
        return getattr(config, self.act_attribute)

    def intermediate_size(self, config) -> int:
        if self.conv1d:
            return config.n_inner or 4 * config.hidden_size
        return config.intermediate_size

    def read(self, ffn: nn.Module, config, layer: int) -> FFNWeights:
        """The layer's dense FFN as FFNWeights (views of its parameters, no copy), shape-checked
        against the config so a mismatched checkpoint fails here with the layer named."""
        hidden, inter = config.hidden_size, self.intermediate_size(config)
        if self.conv1d:  # Conv1D stores [in, out]
            c_fc, c_proj = getattr(ffn, "c_fc"), getattr(ffn, "c_proj")
            weights = FFNWeights(up=c_fc.weight.t(), down=c_proj.weight.t(), act=self.activation(config),
                                 up_bias=c_fc.bias, down_bias=c_proj.bias,
                                 dropout=getattr(config, "resid_pdrop", 0.0))
        elif self.fc_names:
            up, down = (_linear_weight(ffn, n) for n in self.fc_names)
            weights = FFNWeights(up=up.weight, down=down.weight, act=self.activation(config), up_bias=up.bias,
                                 down_bias=down.bias)
        elif self.fused_gate_up:
            gate_up = _linear_weight(ffn, "gate_up_proj").weight  # [2I, H], gate rows first
            gate, up = gate_up[: gate_up.shape[0] // 2], gate_up[gate_up.shape[0] // 2:]
            weights = FFNWeights(up=up, gate=gate, down=_linear_weight(ffn, "down_proj").weight,
                                 act=self.activation(config))
        else:
            gate, up, down = (_linear_weight(ffn, n) for n in ("gate_proj", "up_proj", "down_proj"))
            if any(m.bias is not None for m in (gate, up, down)):
                raise ValueError(f"{self.name}: FFNs with biases (mlp_bias=True) are not supported by the glu experts")
            weights = FFNWeights(up=up.weight, gate=gate.weight, down=down.weight, act=self.activation(config))
        expected = {"up": (inter, hidden), "down": (hidden, inter)}
        if weights.gate is not None:
            expected["gate"] = (inter, hidden)
        for name, shape in expected.items():
            actual = tuple(getattr(weights, name).shape)
            if actual != shape:
                raise ValueError(
                    f"layer {layer} FFN {name} weight has shape {actual} but the config (hidden_size={hidden}, "
                    f"intermediate_size={inter}) implies {shape}: the checkpoint does not match its config"
                )
        return weights


_LLAMA_LAYERS = ("model.layers", "layers")
ARCHITECTURES: dict[str, ArchitectureAdapter] = {
    "llama": ArchitectureAdapter("llama", _LLAMA_LAYERS, "hidden_act"),
    "mistral": ArchitectureAdapter("mistral", _LLAMA_LAYERS, "hidden_act"),
    "qwen2": ArchitectureAdapter("qwen2", _LLAMA_LAYERS, "hidden_act"),
    "qwen3": ArchitectureAdapter("qwen3", _LLAMA_LAYERS, "hidden_act"),
    "gemma3_text": ArchitectureAdapter("gemma3_text", _LLAMA_LAYERS, "hidden_activation"),
    "phi3": ArchitectureAdapter("phi3", _LLAMA_LAYERS, "hidden_act", fused_gate_up=True,
                                attention_projections=("qkv_proj", "o_proj"), dense_ffn_projections=("gate_up_proj", "down_proj")),
    "phi": ArchitectureAdapter("phi", _LLAMA_LAYERS, "hidden_act", fc_names=("fc1", "fc2"),
                               attention_projections=("q_proj", "k_proj", "v_proj", "dense"), dense_ffn_projections=("fc1", "fc2")),
    "gpt2": ArchitectureAdapter("gpt2", ("transformer.h", "h"), "activation_function", conv1d=True,
                                attention_projections=("attn.c_attn", "attn.c_proj"), dense_ffn_projections=("mlp.c_fc", "mlp.c_proj")),
}


def adapter_for(config) -> ArchitectureAdapter:
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"cannot upcycle architecture {model_type!r}: supported architectures are {sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[model_type]
