"""What LoRA adapts in a system whose MoE parts are not upcycled FFNs: a class attribute of the model
(`lora_targets`), read by zoo.lora.lora_config. Kept apart from peft_presets so model files import no PEFT."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoraTargets:
    """What LoRA adapts in a system without upcycled layers (a model class attribute `lora_targets`).

    attention: regex (re.fullmatch over module names) of the attention projections to adapt;
    experts: `target_parameters` suffixes of stacked [E, out, in] expert weights (empty: none);
    modules_to_save: module-name suffixes trained fully (routers, connectors, adapters)."""

    attention: str
    experts: tuple[str, ...] = ()
    modules_to_save: tuple[str, ...] = ()


def language_model_attention(projections: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> str:
    """The regex for the LLM's attention projections only (`language_model.`...), not a tower's or an encoder's."""
    return rf"language_model\..*\.({'|'.join(projections)})"


__all__ = ["LoraTargets", "language_model_attention"]
