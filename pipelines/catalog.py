"""What the zoo holds, read from the registries (so every helper's systems show up without edits here):

- systems: the zoo.models packages and the config/model classes they registered with transformers' Auto classes;
- presets: each system's `presets.PRESETS` dict (when the package has one) and the upcycling plans `zoo.PLANS`.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .. import models
from ..upcycling.plan import PLANS


def _registered_models() -> dict[str, list[str]]:
    """{model_type: [model class names]} for every Auto mapping that zoo packages registered into."""
    found: dict[str, list[str]] = {}
    for name in dir(modeling_auto):
        mapping = getattr(modeling_auto, name)
        if not name.startswith("MODEL_") or not hasattr(mapping, "_extra_content"):
            continue
        for config_class, model_class in mapping._extra_content.items():
            classes = found.setdefault(config_class.model_type, [])
            if model_class.__name__ not in classes:
                classes.append(model_class.__name__)
    return found


def systems() -> list[dict]:
    registered = _registered_models()
    rows = []
    for info in pkgutil.iter_modules(models.__path__):
        if not info.ispkg:
            continue
        package = importlib.import_module(f"{models.__name__}.{info.name}")
        model_types = [t for t, c in CONFIG_MAPPING._extra_content.items() if c.__module__.startswith(package.__name__)]
        rows.append({
            "system": info.name,
            "summary": (package.__doc__ or "").strip().splitlines()[0] if package.__doc__ else "",
            "model_types": model_types,
            "classes": sorted({c for t in model_types for c in registered.get(t, [])}),
        })
    return rows


def presets() -> dict[str, list[str]]:
    """{system or "upcycle": preset names}."""
    found = {"upcycle": sorted(PLANS)}
    for info in pkgutil.iter_modules(models.__path__):
        try:
            module = importlib.import_module(f"{models.__name__}.{info.name}.presets")
        except ModuleNotFoundError:
            continue
        if isinstance(getattr(module, "PRESETS", None), Mapping):
            found[info.name] = sorted(module.PRESETS)
    return found


def describe_plan(name: str) -> str:
    plan = PLANS[name]
    router = {"top_k": f"top-{plan.num_experts_per_tok}", "threshold": f"threshold {plan.threshold}",
              "modality": f"modality top-{plan.num_experts_per_tok}"}[plan.router]
    shared = ", + dense FFN always on" if plan.shared_ffn else ""
    return f"{plan.num_experts} experts ({plan.experts}), {router}, layers={plan.layers}{shared}"


__all__ = ["describe_plan", "presets", "systems"]
