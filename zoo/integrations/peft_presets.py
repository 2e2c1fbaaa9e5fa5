"""LoRA via PEFT for upcycled models: which parameters to adapt, in one call.

    config = zoo.lora.lora_config(model, "attention+experts", r=8)
    model  = peft.get_peft_model(model, config)          # routers fully trained, the rest low-rank

Expert banks hold stacked [E, out, in] parameters, not nn.Linear modules, so they are reached with
PEFT's `target_parameters` (one rank-r adapter per expert, e.g. "mlp.moe.experts.gate_up_proj");
attention projections are ordinary `target_modules`; the routers are new, small and decisive, so
they train fully (`modules_to_save`). Adapters save/load with PeftModel and merge with
`merge_and_unload()` like any other LoRA.

The Uni-MoE alternative (a frozen shared FFN + per-expert LoRA deltas *inside* the MoE layer) is the
expert kind "lora" (zoo.experts.lora), chosen at upcycling time instead.

Systems whose MoE parts are not upcycled FFNs (MoME's parallel bottleneck experts, MoVA's adapter, MoFME's
restoration transformer) say what to adapt with a class attribute, `lora_targets` (LoraTargets): the
attention projections as a regex over module names (so frozen towers and encoders stay out), the stacked
expert parameters, and the new parts trained fully (`modules_to_save`).
"""
from __future__ import annotations

from peft import LoraConfig
from torch import nn

from ..upcycling.ffn_adapters import ARCHITECTURES, adapter_for
from ..upcycling.layer import upcycled_layers
from .lora_targets import LoraTargets, language_model_attention

LORA_PRESETS = {
    "attention": ("attention",),
    "experts": ("experts",),
    "attention+experts": ("attention", "experts"),
    "all": ("attention", "experts", "dense_ffn"),  # MoE-LLaVA v1: every decoder linear + the experts
}


def _decoder_config(model: nn.Module):
    """The dense decoder's config: the model's own, or its text_config (UpcycledMoeForCausalLM)."""
    config = model.config
    return config if config.model_type in ARCHITECTURES else getattr(config, "text_config", config)


def expert_parameter_targets(model: nn.Module) -> list[str]:
    """`target_parameters` suffixes of the stacked expert weights, e.g. ["mlp.moe.experts.gate_up_proj", ...]."""
    targets: list[str] = []
    for name, ffn in upcycled_layers(model):
        attribute = name.rsplit(".", 1)[-1]
        for param_name, param in ffn.moe.experts.named_parameters(recurse=False):
            if param.dim() == 3 and param.requires_grad:  # stacked [E, out, in]; frozen shared weights stay frozen
                target = f"{attribute}.moe.experts.{param_name}"
                if target not in targets:
                    targets.append(target)
    return targets


def lora_config(model: nn.Module, preset: str = "attention+experts", r: int = 8, lora_alpha: int = 16,
                **kwargs) -> LoraConfig:
    """A `peft.LoraConfig` for an upcycled model (a `zoo.upcycle`d decoder or UpcycledMoeForCausalLM).

    Presets: "attention" | "experts" | "attention+experts" | "all" (see LORA_PRESETS). Routers go to
    `modules_to_save`. Extra keyword arguments go to LoraConfig (e.g. `task_type="CAUSAL_LM"`)."""
    if preset not in LORA_PRESETS:
        raise ValueError(f"unknown LoRA preset {preset!r}; known: {sorted(LORA_PRESETS)}")
    if kwargs.get("lora_dropout", 0.0):
        raise ValueError("lora_dropout must be 0: PEFT's LoRA on stacked expert parameters has no dropout")
    if not upcycled_layers(model):
        targets = getattr(model, "lora_targets", None)
        if targets is None:
            raise ValueError(f"{type(model).__name__} has no upcycled MoE layers: call zoo.upcycle first")
        return _system_lora_config(targets, LORA_PRESETS[preset], preset, r, lora_alpha, **kwargs)
    adapter = adapter_for(_decoder_config(model))
    parts = LORA_PRESETS[preset]
    if adapter.conv1d and "experts" in parts and len(parts) > 1:
        raise ValueError(
            f"{adapter.name}: its Conv1D layers need LoRA's fan_in_fan_out=True, which PEFT's target_parameters "
            "(the stacked experts) rejects; use preset 'attention' or 'experts' (one adapter each)"
        )
    target_modules: list[str] = []
    if "attention" in parts:
        target_modules += list(adapter.attention_projections)
    if "dense_ffn" in parts:
        target_modules += list(adapter.dense_ffn_projections)
    target_parameters = expert_parameter_targets(model) if "experts" in parts else []
    if "experts" in parts and not target_parameters:
        raise ValueError("the model's expert banks have no trainable stacked [E, out, in] parameters to adapt")
    return LoraConfig(
        r=r, lora_alpha=lora_alpha, lora_dropout=0.0,
        target_modules=target_modules, target_parameters=target_parameters or None,
        modules_to_save=kwargs.pop("modules_to_save", ["router"]),
        **kwargs,
    )


def _system_lora_config(targets: LoraTargets, parts: tuple[str, ...], preset: str, r: int, lora_alpha: int,
                        **kwargs) -> LoraConfig:
    if "dense_ffn" in parts:
        raise ValueError(f"preset {preset!r} adapts the dense FFNs of an upcycled decoder; this system has its "
                         "own MoE parts: use 'attention', 'experts' or 'attention+experts'")
    experts = list(targets.experts) if "experts" in parts else []
    if parts == ("experts",) and not experts:
        raise ValueError("this system's experts are new and trained fully (modules_to_save), not low-rank: "
                         "use preset 'attention' or 'attention+experts'")
    return LoraConfig(
        r=r, lora_alpha=lora_alpha, lora_dropout=0.0,
        target_modules=targets.attention if "attention" in parts else None, target_parameters=experts or None,
        modules_to_save=kwargs.pop("modules_to_save", list(targets.modules_to_save)), **kwargs,
    )


__all__ = ["LORA_PRESETS", "LoraTargets", "expert_parameter_targets", "language_model_attention", "lora_config"]
