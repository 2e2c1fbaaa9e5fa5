"""MoE-LLaVA: every even decoder FFN -> top-2 of 4 copies of itself (Phi-2: fc1/fc2 experts with biases).

    router: p = softmax(W_g x); expert 1 = argmax p; expert 2 = argmax(logits + Gumbel) over the rest (training)
            weights renormalised; tokens over capacity ceil(k * T / E * cf) are dropped (residual only)
    loss = CE + 0.01 * sum over MoE layers of E * sum_e f_e P_e
"""
from __future__ import annotations

from zoo.multimodal.modeling import MultimodalMoeForConditionalGeneration
from zoo.core.routing import TopKRouter
from zoo.core.validation import check_number
from zoo.upcycling.plan import UpcyclePlan

from .configuration_moe_llava import MoeLlavaConfig


class MoeLlavaTopKRouter(TopKRouter):
    """TopKRouter with DeepSpeed's separate train / eval capacity factors."""

    def __init__(self, hidden_size, num_experts, top_k, capacity_factor, eval_capacity_factor, min_capacity):
        super().__init__(hidden_size, num_experts, top_k, normalize=True, gumbel_second=True,
                         capacity_factor=capacity_factor, min_capacity=min_capacity)
        check_number(self, "eval_capacity_factor", eval_capacity_factor, low=0, low_open=True, allow_none=True,
                     note="(None = dropless)")
        self.train_capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor

    def train(self, mode: bool = True):
        super().train(mode)
        self.capacity_factor = self.train_capacity_factor if mode else self.eval_capacity_factor
        return self


class MoeLlavaForConditionalGeneration(MultimodalMoeForConditionalGeneration):
    config_class = MoeLlavaConfig

    def __init__(self, config: MoeLlavaConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        # The plan's router has one capacity factor; DeepSpeed's gate switches to another in eval.
        # That switch is MoE-LLaVA's alone, so its router subclass replaces the plan's (same weights).
        for ffn in self.moe_feed_forwards():
            plain = ffn.moe.router
            router = MoeLlavaTopKRouter(plain.hidden_size, plain.num_experts, plain.top_k, config.capacity_factor,
                                        config.eval_capacity_factor, config.min_capacity)
            router.load_state_dict(plain.state_dict())
            ffn.moe.router = router.to(plain.weight.device).train(plain.training)

    def upcycle_plan(self) -> UpcyclePlan:
        config = self.config
        return UpcyclePlan(num_experts=config.num_experts, num_experts_per_tok=config.num_experts_per_tok,
                           gumbel_second=True, capacity_factor=config.capacity_factor,
                           min_capacity=config.min_capacity, **self.expert_plan_fields())
