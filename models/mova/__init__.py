"""MoVA (models.mova): coarse-to-fine mixture of vision experts (arXiv 2404.13046, NeurIPS 2024).

Registered with transformers: AutoConfig ("mova"), AutoModel and AutoModelForImageTextToText
(MovaForConditionalGeneration), AutoProcessor (MovaProcessor) with its image processor.
"""
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .coarse_routing import parse_routing_answer, routing_labels, routing_mask
from .configuration_mova import MovaConfig
from .modeling_mova import MovaForConditionalGeneration, MovaGenerateOutput, MovaOutput
from .processing_mova import MovaProcessor, register_mova_processor

AutoConfig.register(MovaConfig.model_type, MovaConfig, exist_ok=True)
AutoModel.register(MovaConfig, MovaForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(MovaConfig, MovaForConditionalGeneration, exist_ok=True)
register_mova_processor(MovaConfig)

__all__ = ["MovaConfig", "MovaForConditionalGeneration", "MovaGenerateOutput", "MovaOutput", "MovaProcessor",
           "parse_routing_answer", "routing_labels", "routing_mask"]
