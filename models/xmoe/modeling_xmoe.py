"""XMoEForCausalLM: UpcycledMoeForCausalLM under the XMoE name (fine-grained experts, threshold routing)."""
from __future__ import annotations

from ..upcycled.modeling_upcycled_moe import UpcycledMoeForCausalLM
from .configuration_xmoe import XMoEConfig


class XMoEForCausalLM(UpcycledMoeForCausalLM):
    config_class = XMoEConfig


__all__ = ["XMoEForCausalLM"]
