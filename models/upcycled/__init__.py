"""Upcycled dense decoders as Hugging Face models (`model_type="zoo_upcycled_moe"`).

    model = UpcycledMoeForCausalLM.from_dense(dense_model, "top2-of-4")
    model.save_pretrained(path); AutoModelForCausalLM.from_pretrained(path)   # after `import zoo`
"""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_upcycled_moe import UpcycledMoeConfig
from .modeling_upcycled_moe import UpcycledMoeForCausalLM, UpcycledMoePreTrainedModel

AutoConfig.register(UpcycledMoeConfig.model_type, UpcycledMoeConfig, exist_ok=True)
AutoModelForCausalLM.register(UpcycledMoeConfig, UpcycledMoeForCausalLM, exist_ok=True)
AutoModel.register(UpcycledMoeConfig, UpcycledMoeForCausalLM, exist_ok=True)  # the whole model: there is no headless class

__all__ = ["UpcycledMoeConfig", "UpcycledMoeForCausalLM", "UpcycledMoePreTrainedModel"]
