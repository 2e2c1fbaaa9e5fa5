"""XMoE (arXiv 2403.18926): fine-grained experts split from a dense FFN, threshold routing (`model_type="xmoe"`)."""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_xmoe import XMoEConfig
from .modeling_xmoe import XMoEForCausalLM

AutoConfig.register(XMoEConfig.model_type, XMoEConfig, exist_ok=True)
AutoModelForCausalLM.register(XMoEConfig, XMoEForCausalLM, exist_ok=True)
AutoModel.register(XMoEConfig, XMoEForCausalLM, exist_ok=True)  # the whole model: there is no headless class

__all__ = ["XMoEConfig", "XMoEForCausalLM"]
