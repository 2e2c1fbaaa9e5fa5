"""Per-expert low-rank deltas B_e A_e, initialised as PEFT initialises LoRA (B = 0: no change at step 0)."""
from __future__ import annotations

import math

import torch
from torch import nn


def lora_pair(num_experts: int, rank: int, out_features: int, in_features: int, device=None):
    """Per-expert deltas B_e A_e: A [E, r, in] kaiming-uniform, B [E, out, r] zeros (PEFT's LoRA init)."""
    lora_a = nn.Parameter(torch.empty(num_experts, rank, in_features, device=device))
    lora_b = nn.Parameter(torch.zeros(num_experts, out_features, rank, device=device))
    if not lora_a.is_meta:
        for e in range(num_experts):
            nn.init.kaiming_uniform_(lora_a[e], a=math.sqrt(5))
    return lora_a, lora_b
