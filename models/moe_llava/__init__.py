"""MoE-LLaVA (models.moe_llava): the baseline MoIIE and MoTE compare against, plus the dense VL baseline
(model type and system name "dense_vl"; its trained parts live in models/dense_vl/trained/)."""
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from zoo.multimodal.configuration import LegacyDenseVlConfig
from zoo.multimodal.processing import register_processor
from zoo.multimodal.modeling import MultimodalMoeConfig, MultimodalMoeForConditionalGeneration

from .configuration_moe_llava import MoeLlavaConfig
from .modeling_moe_llava import MoeLlavaForConditionalGeneration

for _config, _model in ((MoeLlavaConfig, MoeLlavaForConditionalGeneration),
                        (MultimodalMoeConfig, MultimodalMoeForConditionalGeneration)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForImageTextToText.register(_config, _model, exist_ok=True)
    register_processor(_config)  # AutoProcessor + AutoImageProcessor
# the dense baseline's old model type "vl_dense": a saved config.json with it loads (FutureWarning) as a MultimodalMoeConfig
AutoConfig.register(LegacyDenseVlConfig.model_type, LegacyDenseVlConfig, exist_ok=True)

__all__ = ["MoeLlavaConfig", "MoeLlavaForConditionalGeneration"]
