"""Bad configuration and bad inputs raise ValueError naming the field at fault."""
from __future__ import annotations

import re

import pytest
import torch

from zoo import GLUExperts, MLPExperts, ModalityRouter, MoEBlock, SharedExperts, ThresholdRouter, TopKRouter

pytestmark = pytest.mark.usefixtures("single_thread")


def block(**kw):
    return MoEBlock(TopKRouter(8, 4, 2), GLUExperts(4, 8, 16), **kw)


BAD_CONFIGS = {
    "top_k > num_experts": (lambda: TopKRouter(8, 4, top_k=5), "top_k"),
    "top_k = 0": (lambda: TopKRouter(8, 4, top_k=0), "top_k"),
    "threshold = 0": (lambda: ThresholdRouter(8, 4, threshold=0.0), "threshold"),
    "threshold > 1": (lambda: ThresholdRouter(8, 4, threshold=1.5), "threshold"),
    "threshold < 0": (lambda: ThresholdRouter(8, 4, threshold=-0.2), "threshold"),
    "max_k = 0": (lambda: ThresholdRouter(8, 4, max_k=0), "max_k"),
    "max_k > num_experts": (lambda: ThresholdRouter(8, 4, max_k=5), "max_k"),
    "capacity_factor = 0": (lambda: TopKRouter(8, 4, 2, capacity_factor=0.0), "capacity_factor"),
    "jitter = 1": (lambda: TopKRouter(8, 4, 2, jitter=1.0), "jitter"),
    "hidden_size = 0": (lambda: TopKRouter(0, 4, 2), "hidden_size"),
    "num_experts < 0": (lambda: ThresholdRouter(8, -1), "num_experts"),
    "experts intermediate_size = 0": (lambda: GLUExperts(4, 8, 0), "intermediate_size"),
    "experts num_experts = 0": (lambda: MLPExperts(0, 8, 16), "num_experts"),
    "experts hidden_size float": (lambda: GLUExperts(4, 8.0, 16), "hidden_size"),
    "unknown activation": (lambda: GLUExperts(4, 8, 16, act="swishy"), "act"),
    "shared hidden_size = 0": (lambda: SharedExperts(0, 16), "hidden_size"),
    "shared without size": (lambda: SharedExperts(8), "intermediate_size"),
    "empty modality subset": (lambda: ModalityRouter(8, 3, {"text": [0, 1], "image": []}, shared_experts=[2]),
                              "modality_experts['image']"),
    "no modalities": (lambda: ModalityRouter(8, 2, {}), "modality_experts"),
    "overlapping subsets": (lambda: ModalityRouter(8, 4, {"text": [0, 1], "image": [1, 2, 3]}), "modality_experts['image']"),
    "subset overlaps shared": (lambda: ModalityRouter(8, 4, {"text": [0, 1], "image": [2]}, shared_experts=[1, 3]),
                               "modality_experts['text']"),
    "unknown modality": (lambda: ModalityRouter(8, 2, {"smell": [0], "text": [1]}), "modality_experts: unknown modality"),
    "expert out of range": (lambda: ModalityRouter(8, 2, {"text": [0], "image": [2]}, top_k=1), "modality_experts['image']"),
    "unreachable expert": (lambda: ModalityRouter(8, 3, {"text": [0], "image": [1]}, top_k=1), "experts [2]"),
    "modality top_k too big": (lambda: ModalityRouter(8, 3, {"text": [0], "image": [1, 2]}, top_k=2), "top_k"),
    "unknown backend": (lambda: block(dispatch_backend="fastest"), "dispatch_backend"),
    "router/bank hidden_size": (lambda: MoEBlock(TopKRouter(8, 4, 2), GLUExperts(4, 6, 16)), "hidden_size"),
    "router smaller than bank": (lambda: MoEBlock(TopKRouter(8, 3, 2), GLUExperts(4, 8, 16)), "num_experts"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_names_the_field(name):
    build, field = BAD_CONFIGS[name]
    with pytest.raises(ValueError, match=re.escape(field)):
        build()


BAD_INPUTS = {
    "hidden size mismatch": (lambda b: b(torch.randn(5, 7)), "hidden states"),
    "4-D hidden": (lambda b: b(torch.randn(1, 2, 3, 8)), "hidden states"),
    "expert_mask wrong E": (lambda b: b(torch.randn(5, 8), expert_mask=torch.ones(3, dtype=torch.bool)), "expert_mask"),
    "expert_mask wrong T": (lambda b: b(torch.randn(5, 8), expert_mask=torch.ones(4, 4, dtype=torch.bool)), "expert_mask"),
    "expert_mask forbids all": (lambda b: b(torch.randn(5, 8), expert_mask=torch.zeros(4, dtype=torch.bool)), "expert_mask"),
    "padding_mask shape": (lambda b: b(torch.randn(2, 3, 8), padding_mask=torch.ones(6, dtype=torch.bool)), "padding_mask"),
    "modality_ids shape": (lambda b: b(torch.randn(2, 3, 8), modality_ids=torch.zeros(2, dtype=torch.long)), "modality_ids"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_names_the_problem(name):
    call, field = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=re.escape(field)):
        call(block())


def test_grouped_backend_rejects_other_dtypes():
    b = block(dispatch_backend="grouped").to(torch.float64)
    with pytest.raises(ValueError, match="dispatch_backend 'grouped'"):
        b(torch.randn(3, 8, dtype=torch.float64))
    b.dispatch_backend = "auto"  # auto falls back to the loop
    assert b(torch.randn(3, 8, dtype=torch.float64))[0].dtype == torch.float64
