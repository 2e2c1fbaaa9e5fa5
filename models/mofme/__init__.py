"""MoFME (arXiv 2312.16610): all-weather image restoration with feature-modulated experts and the
uncertainty-aware router. Importing this registers `mofme` with AutoConfig, AutoModelForImageToImage,
AutoModel and AutoImageProcessor, and `pipeline("image-restoration")`."""
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageToImage

from .configuration_mofme import MoFMEConfig
from .modeling_mofme import MoFMEForImageRestoration, MoFMEImageRestorationOutput, MoFMEPreTrainedModel
from .processing_mofme import MoFMEImageProcessor, restore_image
from .pipeline_mofme import MoFMEImageRestorationPipeline  # registers pipeline("image-restoration")

AutoConfig.register(MoFMEConfig.model_type, MoFMEConfig, exist_ok=True)
AutoModelForImageToImage.register(MoFMEConfig, MoFMEForImageRestoration, exist_ok=True)
AutoModel.register(MoFMEConfig, MoFMEForImageRestoration, exist_ok=True)
AutoImageProcessor.register(MoFMEConfig, image_processor_classes={"pil": MoFMEImageProcessor}, exist_ok=True)

__all__ = ["MoFMEConfig", "MoFMEForImageRestoration", "MoFMEImageProcessor", "MoFMEImageRestorationOutput",
           "MoFMEImageRestorationPipeline", "MoFMEPreTrainedModel", "restore_image"]
