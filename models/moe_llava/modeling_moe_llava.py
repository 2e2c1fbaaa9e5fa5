"""MoE-LLaVA: every even decoder FFN -> top-2 of 4 copies of itself (Phi-2: fc1/fc2 experts with biases).

    router: p = softmax(W_g x); expert 1 = argmax p; expert 2 = argmax(logits + Gumbel) over the rest (training)
            weights renormalised; tokens over capacity ceil(k * T / E * cf) are dropped (residual only)
    loss = CE + 0.01 * sum over MoE layers of E * sum_e f_e P_e
"""
from __future__ import annotations

from zoo.experts import MLPExperts
from zoo.moe import MoEBlock
from zoo.multimodal_model import MultimodalMoeForConditionalGeneration, dense_ffn_weights
from zoo.routing import TopKRouter
from zoo.ternary import UpcycledGLUExperts

from .configuration_moe_llava import MoeLlavaConfig


class MoeLlavaTopKRouter(TopKRouter):
    """TopKRouter with DeepSpeed's separate train / eval capacity factors."""

    def __init__(self, hidden_size, num_experts, top_k, capacity_factor, eval_capacity_factor, min_capacity):
        super().__init__(hidden_size, num_experts, top_k, normalize=True, gumbel_second=True,
                         capacity_factor=capacity_factor, min_capacity=min_capacity)
        self.train_capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor

    def train(self, mode: bool = True):
        super().train(mode)
        self.capacity_factor = self.train_capacity_factor if mode else self.eval_capacity_factor
        return self


def copied_experts(num_experts: int, dense_mlp, act: str, lora_rank: int | None):
    """The dense FFN copied into E experts: SwiGLU (Llama, Phi-3) or fc1/fc2 with biases (Phi-2)."""
    weights = dense_ffn_weights(dense_mlp)
    if weights["kind"] == "glu":
        return UpcycledGLUExperts(num_experts, weights["gate_up"], weights["down"], act, lora_rank)
    if lora_rank is not None:
        raise ValueError("expert_lora_rank is supported for SwiGLU FFNs only; Phi-2 experts are copied in full")
    up, down = weights["up"], weights["down"]
    experts = MLPExperts(num_experts, up.shape[1], up.shape[0], act=act, bias=weights["up_bias"] is not None)
    experts.to(up.device)
    with __import__("torch").no_grad():
        experts.up_proj.copy_(up.expand(num_experts, -1, -1))
        experts.down_proj.copy_(down.expand(num_experts, -1, -1))
        if weights["up_bias"] is not None:
            experts.up_proj_bias.copy_(weights["up_bias"].expand(num_experts, -1))
            experts.down_proj_bias.copy_(weights["down_bias"].expand(num_experts, -1))
    return experts


class MoeLlavaForConditionalGeneration(MultimodalMoeForConditionalGeneration):
    config_class = MoeLlavaConfig

    def build_moe_block(self, layer_index, dense_mlp) -> MoEBlock:
        config = self.config
        router = MoeLlavaTopKRouter(config.text_config.hidden_size, config.num_experts, config.num_experts_per_tok,
                                    config.capacity_factor, config.eval_capacity_factor, config.min_capacity)
        experts = copied_experts(config.num_experts, dense_mlp, config.text_config.hidden_act, config.expert_lora_rank)
        return MoEBlock(router, experts)
