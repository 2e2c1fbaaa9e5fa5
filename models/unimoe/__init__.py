"""Uni-MoE (models.unimoe): one LLM with LoRA experts from different dense sources, reading text, images,
videos and speech (arXiv 2405.11273; the v1 4E and 8e releases).

Registered with transformers: AutoConfig ("unimoe"), AutoModel and AutoModelForImageTextToText (a
multimodal-in, text-out generator, as LLaVA is), AutoProcessor (UniMoeProcessor) with its image
processor and Whisper feature extractor.
"""
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_unimoe import UniMoeConfig
from .modeling_unimoe import UniMoeForConditionalGeneration, UniMoeOutput
from .processing_unimoe import UniMoeProcessor, register_unimoe_processor

AutoConfig.register(UniMoeConfig.model_type, UniMoeConfig, exist_ok=True)
AutoModel.register(UniMoeConfig, UniMoeForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(UniMoeConfig, UniMoeForConditionalGeneration, exist_ok=True)
register_unimoe_processor(UniMoeConfig)

__all__ = ["UniMoeConfig", "UniMoeForConditionalGeneration", "UniMoeOutput", "UniMoeProcessor"]
