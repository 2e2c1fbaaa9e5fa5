"""MoIIE (models.moiie): modality-guided intra/inter-modality experts."""
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from zoo.multimodal.processing import register_processor

from .configuration_moiie import MoiieConfig, expert_groups
from .modeling_moiie import MoiieForConditionalGeneration

AutoConfig.register(MoiieConfig.model_type, MoiieConfig, exist_ok=True)
register_processor(MoiieConfig)  # AutoProcessor + AutoImageProcessor
AutoModel.register(MoiieConfig, MoiieForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(MoiieConfig, MoiieForConditionalGeneration, exist_ok=True)

__all__ = ["MoiieConfig", "MoiieForConditionalGeneration", "expert_groups"]
