"""Expert kinds beyond the generic banks, and the registry `zoo.upcycling` builds them from.

Importing this room registers every kind: "glu" and "mlp" (generic banks), "lora" (frozen FFN +
per-expert low-rank deltas), "ternary" ({-1, 0, 1} weights, 2-bit packed inference), "bottleneck"
(MoME's adapters W_up GELU(W_down h), zero at init); FiLM experts (one shared FFN, per-expert
modulation) are a layer of their own.
"""
from .bottleneck import BottleneckExperts
from .ffn_weights import FFNWeights
from .film import FeatureModulatedExperts, FiLMExperts
from .lora import LoRAExperts
from .low_rank import lora_pair
from .registry import EXPERT_KINDS, ExpertPlan, register_expert_kind
from .ternary import Int8Linear, PackedTernary, TernaryGLUExperts, quantize_int8_

__all__ = [
    "BottleneckExperts", "EXPERT_KINDS", "ExpertPlan", "FFNWeights", "FeatureModulatedExperts", "FiLMExperts",
    "Int8Linear", "LoRAExperts", "PackedTernary", "TernaryGLUExperts", "lora_pair", "quantize_int8_", "register_expert_kind",
]
