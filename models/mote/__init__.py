"""MoTE (models.mote): frozen fp shared FFN + top-1 ternary experts."""
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from zoo.multimodal.processing import register_processor

from .configuration_mote import MoteConfig
from .modeling_mote import MoteForConditionalGeneration

AutoConfig.register(MoteConfig.model_type, MoteConfig, exist_ok=True)
register_processor(MoteConfig)  # AutoProcessor + AutoImageProcessor
AutoModel.register(MoteConfig, MoteForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(MoteConfig, MoteForConditionalGeneration, exist_ok=True)

__all__ = ["MoteConfig", "MoteForConditionalGeneration"]
