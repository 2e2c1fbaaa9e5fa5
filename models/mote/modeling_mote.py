"""MoTE: Mixture of Ternary Experts.

    y = FFN_fp(x)                       frozen dense FFN, always on (shared expert)
      + g_i(x) * E_i^tern(x)            i = argmax softmax(W_r x) (top-1), g_i its probability
    E_i^tern: SwiGLU with weights in {-1, 0, +1} x absmean scale, int8 per-token activations,
              initialised from the same dense FFN, trained with a straight-through estimator and
              packed to 2 bits per weight for inference (dispatch backend `ternary_packed`).
"""
from __future__ import annotations

from zoo.moe import MoEBlock
from zoo.multimodal_model import MultimodalMoeForConditionalGeneration, dense_ffn_weights
from zoo.routing import TopKRouter
from zoo.ternary import TernaryGLUExperts

from .configuration_mote import MoteConfig


class MoteForConditionalGeneration(MultimodalMoeForConditionalGeneration):
    config_class = MoteConfig

    def build_moe_block(self, layer_index, dense_mlp) -> MoEBlock:
        config = self.config
        weights = dense_ffn_weights(dense_mlp)
        if weights["kind"] != "glu":
            raise ValueError(f"MoTE's ternary experts are SwiGLU; layer {layer_index} has an fc1/fc2 MLP")
        dense_mlp.requires_grad_(False)
        # top-1 without renormalisation: the gate value g_i must stay a probability or the router gets no gradient
        router = TopKRouter(config.text_config.hidden_size, config.num_experts, config.num_experts_per_tok, normalize=False)
        experts = TernaryGLUExperts(config.num_experts, weights["gate_up"], weights["down"], config.text_config.hidden_act,
                                    config.expert_lora_rank, packed=config.ternary_packed)
        return MoEBlock(router, experts, shared_experts=dense_mlp, dispatch_backend="ternary_packed")

    def pack_experts_(self) -> "MoteForConditionalGeneration":
        """Freeze every ternary bank into 2-bit codes; the saved config then says ternary_packed=True."""
        for ffn in self.moe_feed_forwards():
            ffn.block.experts.pack_()
        self.config.ternary_packed = True
        return self
