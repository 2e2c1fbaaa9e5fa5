"""transformers' own tensor parallelism (`from_pretrained(..., distributed_config=DistributedConfig(tp_size=N))`)
for the zoo's upcycled MoE layers.

    dense decoder's plan (its config's base_model_tp_plan)   attention q/k/v colwise, o rowwise, lm_head, embeddings
    + per MoE layer `L` (L = model.model.layers.*.mlp):      L.moe.experts.gate_up_proj  packed_colwise  [E, 2I/N, H]
                                                             L.moe.experts.down_proj     rowwise         [E, H, I/N]
                                                             L.moe.experts               moe_tp_experts  all-reduce of the
                                                                                         partial outputs
The router stays replicated, so every rank routes every token alike and the zoo's own dispatch runs unchanged
on the local slices (the GLU bank's `chunk(2)` of gate_up_proj still splits gate from up: packed_colwise
shards the gate rows and the up rows separately). This is Mixtral's TP plan for the same layout.

Expert parallelism (whole experts per rank, `base_model_ep_plan` with `grouped_gemm` + `ep_dispatch_experts`)
does not fit the zoo's layer: transformers' EP replaces the experts' forward by one taking
`(hidden_states, top_k_index, top_k_weights)` (transformers/distributed/expert_parallel.py,
`EpDispatchExpertsParallel.install_forward`), while the zoo's banks are called by zoo.core.dispatch as
`bank(rows sorted by expert, ExpertGroups)`; and `maybe_distribute_model` applies an EP plan only when it
holds the `ep_dispatch_experts` style (transformers/distributed/mixin.py), so no zoo style can stand in.
For expert parallelism, export natively (`zoo export --native`: Mixtral / Qwen3-MoE) and load that.
"""
from __future__ import annotations

from itertools import chain

from torch import nn

from ..core.expert_banks import GLUExperts
from ..upcycling.layer import upcycled_layers


def _wildcard(name: str) -> str:
    from transformers.distributed.parallel_utils import replace_layer_number_by_wildcard

    return replace_layer_number_by_wildcard(name)


def moe_tensor_parallel_plan(model: nn.Module, plan: dict[str, str], layer_plan: dict[str, str]) -> dict[str, str]:
    """`plan` (the decoder's TP plan) with `layer_plan`'s rules added under every MoE layer whose experts are a
    GLU bank (other banks have no rule: they run replicated), and without the rules that name nothing in the
    model (the dense FFN rules of the upcycled layers), so transformers warns of none."""
    added = {}
    for name, ffn in upcycled_layers(model):
        if type(ffn.moe.experts) is GLUExperts:
            added.update({f"{_wildcard(name)}.{key}": style for key, style in layer_plan.items()})
    names = {_wildcard(n) for n, _ in chain(model.named_modules(), model.named_parameters())}
    return {key: style for key, style in {**plan, **added}.items() if key in names}


__all__ = ["moe_tensor_parallel_plan"]
