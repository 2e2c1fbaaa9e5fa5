"""Export an upcycled model to a transformers-native MoE format, loadable with no zoo code at all.

A plain upcycled model (top-k softmax router, GLU experts, no shared FFN, dropless) is exactly a
Mixtral or Qwen3-MoE: the zoo's stacked experts already use their layout (gate_up_proj [E, 2I, H],
down_proj [E, H, I]) and the router weight is their `mlp.gate.weight` [E, H].

    llama / mistral decoder, every layer MoE, renormalised top-k     -> MixtralForCausalLM
    qwen3 decoder, any layers (the rest stay dense: mlp_only_layers)  -> Qwen3MoeForCausalLM (norm_topk_prob = normalize)

Anything else has no native equivalent and gets an error saying which part (the zoo format with
`zoo.hub.export` still works for it).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedModel, Qwen3MoeConfig, Qwen3MoeForCausalLM

from ..core.expert_banks import GLUExperts
from ..upcycling.layer import upcycled_layers
from ..upcycling.plan import UpcyclePlan

NATIVE_FORMATS = ("mixtral", "qwen3_moe")
_SHARED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "head_dim", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
                  "tie_word_embeddings", "rope_parameters", "attention_dropout", "bos_token_id", "eos_token_id",
                  "pad_token_id", "sliding_window")


def decoder_and_plan(model: nn.Module) -> tuple[PreTrainedModel, UpcyclePlan]:
    """The upcycled decoder inside `model` and the plan it was upcycled with."""
    if hasattr(model.config, "upcycle_plan"):  # UpcycledMoeForCausalLM
        return model.model, model.config.upcycle_plan
    plan = getattr(model, "upcycle_plan", None)
    if plan is None:
        raise ValueError(f"{type(model).__name__} is not an upcycled model (no upcycle plan found)")
    return model, plan


def native_format_for(model: nn.Module) -> str:
    decoder, _ = decoder_and_plan(model)
    return "qwen3_moe" if decoder.config.model_type == "qwen3" else "mixtral"


def _check_plain_top_k(decoder: PreTrainedModel, plan: UpcyclePlan) -> None:
    problems = []
    if plan.router != "top_k":
        problems.append(f"router={plan.router!r} (native MoEs route with softmax top-k)")
    if plan.shared_ffn is not None:
        problems.append("shared_ffn (no always-on expert in Mixtral/Qwen3-MoE)")
    if plan.capacity_factor is not None:
        problems.append("capacity_factor (native MoEs are dropless)")
    banks = [ffn.moe.experts for _, ffn in upcycled_layers(decoder)]
    if any(type(bank) is not GLUExperts for bank in banks):
        kinds = sorted({type(bank).__name__ for bank in banks})
        problems.append(f"expert banks {kinds} (native MoEs hold plain GLU experts)")
    if any(ffn.moe.num_null_experts for _, ffn in upcycled_layers(decoder)):
        problems.append("null experts")
    if problems:
        raise ValueError("cannot export to a native transformers MoE: " + "; ".join(problems))


def native_config(model: nn.Module, format: str | None = None):
    decoder, plan = decoder_and_plan(model)
    _check_plain_top_k(decoder, plan)
    base = decoder.config
    format = format or native_format_for(model)
    if format not in NATIVE_FORMATS:
        raise ValueError(f"unknown native format {format!r}; known: {NATIVE_FORMATS}")
    layers = [int(name.split(".")[-2]) for name, _ in upcycled_layers(decoder)]
    expert_size = upcycled_layers(decoder)[0][1].moe.experts.intermediate_size
    common = {f: getattr(base, f) for f in _SHARED_FIELDS if hasattr(base, f)}
    moe = dict(num_experts_per_tok=plan.num_experts_per_tok, router_aux_loss_coef=plan.router_aux_loss_coef)
    if format == "mixtral":
        if base.model_type not in ("llama", "mistral"):
            raise ValueError(f"Mixtral export needs a llama or mistral decoder, got {base.model_type!r} (qwen3 -> qwen3_moe)")
        if getattr(base, "attention_bias", False) or getattr(base, "mlp_bias", False):
            raise ValueError("Mixtral export: the decoder has attention/MLP biases, which Mixtral does not")
        if not plan.normalize:
            raise ValueError("Mixtral export needs normalize=True (Mixtral always renormalises the top-k weights)")
        if layers != list(range(base.num_hidden_layers)):
            raise ValueError(f"Mixtral export needs every layer upcycled (layers='all'); MoE layers here: {layers}")
        if common.get("head_dim") is None:
            common["head_dim"] = base.hidden_size // base.num_attention_heads
        return MixtralConfig(**common, intermediate_size=expert_size, num_local_experts=plan.num_experts,
                             router_jitter_noise=plan.jitter, **moe)
    if base.model_type != "qwen3":
        raise ValueError(f"Qwen3-MoE export needs a qwen3 decoder (its attention has q/k norms), got {base.model_type!r}")
    dense_layers = [i for i in range(base.num_hidden_layers) if i not in layers]
    return Qwen3MoeConfig(**common, attention_bias=base.attention_bias, intermediate_size=base.intermediate_size,
                          moe_intermediate_size=expert_size, num_experts=plan.num_experts, norm_topk_prob=plan.normalize,
                          decoder_sparse_step=1, mlp_only_layers=dense_layers, use_sliding_window=base.use_sliding_window,
                          max_window_layers=base.max_window_layers, **moe)


def _native_key(key: str) -> str:
    return key.replace(".mlp.moe.router.weight", ".mlp.gate.weight").replace(".mlp.moe.experts.", ".mlp.experts.")


@torch.no_grad()
def to_native(model: nn.Module, format: str | None = None) -> PreTrainedModel:
    """A MixtralForCausalLM / Qwen3MoeForCausalLM holding the upcycled model's weights (copied)."""
    config = native_config(model, format)
    decoder, _ = decoder_and_plan(model)
    config.dtype = decoder.dtype
    cls = MixtralForCausalLM if config.model_type == "mixtral" else Qwen3MoeForCausalLM
    with torch.device("meta"):
        native = cls(config)
    # the zoo keeps its routers in fp32; Mixtral / Qwen3-MoE run theirs in the model's dtype
    state = {_native_key(k): v.to(decoder.dtype) if v.is_floating_point() else v for k, v in decoder.state_dict().items()}
    missing, unexpected = native.load_state_dict(state, strict=False, assign=True)
    tied = set(native.all_tied_weights_keys) if config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied and not k.endswith("inv_freq")]
    if missing or unexpected:
        raise ValueError(f"native export: weights do not line up (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for name, buffer in list(native.named_buffers()):  # rotary buffers are derived, not saved: recompute them
        if buffer.device.type == "meta":
            module_name, _, buffer_name = name.rpartition(".")
            module = native.get_submodule(module_name)
            fresh = type(module)(config=config)
            module.register_buffer(buffer_name, getattr(fresh, buffer_name), persistent=False)
    native.tie_weights()
    return native.eval()


def export_native(model: nn.Module, folder: str | Path, format: str | None = None, **save_kwargs) -> Path:
    """Write `folder` as a native transformers checkpoint (config.json + safetensors)."""
    folder = Path(folder)
    to_native(model, format).save_pretrained(folder, **save_kwargs)
    return folder


__all__ = ["NATIVE_FORMATS", "decoder_and_plan", "export_native", "native_config", "native_format_for", "to_native"]
