"""Dense vision-language baseline (models.dense_vl): the MoE systems' wrapper with every FFN dense.

Its classes are zoo.multimodal.modeling's MultimodalMoeConfig / MultimodalMoeForConditionalGeneration
(registered by zoo.models.moe_llava); this folder holds its shipped trained parts (trained/)."""
