"""moe-zoo: multimodal Mixture-of-Experts models on one routing core.

    router -> dispatch -> experts -> combine      (zoo.core)

The public names below load on first use, so `import zoo` (and `import zoo.core`) pulls in only
what is asked for. `import zoo` also makes every zoo model type known to transformers' Auto
classes (zoo.auto_registration): `AutoModelForCausalLM.from_pretrained(path)` works on a zoo
checkpoint without `trust_remote_code`.

Where things are: zoo.core (routing), zoo.experts (expert kinds), zoo.upcycling (dense -> MoE),
zoo.integrations (PEFT, Hub, checkpoints, packaged weights), zoo.multimodal (processors, towers,
wrapper), zoo.models (one package per system), zoo.pipelines, zoo.apps.
"""
from __future__ import annotations

import importlib

from .auto_registration import register_lazily

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    **{name: "zoo.core" for name in (
        "MODALITY_IDS", "ExpertGroups", "GLUExperts", "GROUPED_LINEAR_BACKENDS", "GatedMLP", "MLPExperts", "MoEBlock",
        "ModalityRouter", "Router", "RoutingResult", "SharedExperts", "ThresholdRouter", "TopKRouter", "dispatch",
        "load_balancing_loss", "register_backend", "router_z_loss")},
    **{name: "zoo.upcycling" for name in ("PLANS", "UpcyclePlan", "routing_context", "upcycle")},
}
# modules reachable as attributes after a bare `import zoo` (zoo.hub.export(...), zoo.lora.lora_config(...))
_MODULES: dict[str, str] = {
    "hub": "zoo.integrations.hub",
    "lora": "zoo.integrations.peft_presets",
    "assets": "zoo.integrations.assets",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | set(_MODULES))


register_lazily()
