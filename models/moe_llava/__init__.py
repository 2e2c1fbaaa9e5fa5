"""MoE-LLaVA (models.moe_llava): the baseline MoIIE and MoTE compare against, plus the dense VL baseline."""
from transformers import AutoConfig, AutoModel

from zoo.multimodal.processing import register_processor
from zoo.multimodal.modeling import MultimodalMoeConfig, MultimodalMoeForConditionalGeneration

from .configuration_moe_llava import MoeLlavaConfig
from .modeling_moe_llava import MoeLlavaForConditionalGeneration

for _config, _model in ((MoeLlavaConfig, MoeLlavaForConditionalGeneration),
                        (MultimodalMoeConfig, MultimodalMoeForConditionalGeneration)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    register_processor(_config)  # AutoProcessor + AutoImageProcessor

__all__ = ["MoeLlavaConfig", "MoeLlavaForConditionalGeneration"]
