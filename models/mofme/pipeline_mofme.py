"""`transformers.pipeline("image-restoration", model=folder)`: a MoFME checkpoint restores a photo of any allowed
size through the same overlapping-tile path as `restore_image` (the gallery's and `zoo eval mofme`'s).

    restore = pipeline("image-restoration", model="mofme-folder/")
    out = restore(photo)            # PIL image, path or URL-less file name, or an [H, W, 3] array
    out["image"], out["dominant_expert"], out["uncertainty"]   # PIL image; per-patch maps [H/p, W/p]

Registered under "image-restoration": transformers refuses the task name "image-to-image" for a registered
pipeline (it is a built-in task bound to its own class)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from transformers import AutoModelForImageToImage, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .processing_mofme import restore_image

TASK = "image-restoration"


class MoFMEImageRestorationPipeline(Pipeline):
    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, tiles_per_batch: int | None = None, **kwargs):
        if kwargs:
            raise TypeError(f"{TASK} pipeline: unknown argument(s) {sorted(kwargs)}; it takes tiles_per_batch")
        forward = {} if tiles_per_batch is None else {"tiles_per_batch": tiles_per_batch}
        return {}, forward, {}

    def preprocess(self, image):
        if isinstance(image, str):
            from transformers.image_utils import load_image

            image = load_image(image)
        return {"image": image}

    def _forward(self, inputs, tiles_per_batch: int = 4):
        self.model.eval()
        return {"restoration": restore_image(self.model, self.image_processor, inputs["image"], tiles_per_batch)}

    def postprocess(self, outputs):
        restoration = outputs["restoration"]
        pixels = (restoration.image * 255.0).round().clip(0, 255).astype(np.uint8)
        return {"image": Image.fromarray(pixels), "dominant_expert": restoration.dominant_expert,
                "uncertainty": restoration.uncertainty}


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MoFMEImageRestorationPipeline,
                                    pt_model=AutoModelForImageToImage, type="image")

__all__ = ["MoFMEImageRestorationPipeline", "TASK"]
