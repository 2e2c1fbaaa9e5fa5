"""Checkpoint to checkpoint: upcycle a saved dense decoder, export an upcycled one (zoo upcycle / zoo export).

    upcycle_checkpoint("dense/", "top2-of-4", "moe/")        # a dense save_pretrained folder
    export_checkpoint("moe/", "hub/", native=False)          # Hub folder: remote code + model card (or native MoE)

Inputs are checked before anything heavy is loaded: the plan name, --out not being --base, config.json
(JSON, a known model_type that agrees with its `architectures`, a known activation), complete and well-formed
safetensors files and tensor shapes that match config.json. After loading, every FFN tensor the plan copies
into experts must come from the checkpoint with the model's shape, and no weight may be missing (left at
random initialisation) or unused (a config with fewer layers than the file). Each failure is a ValueError or
FileNotFoundError that names the file and the tensor or field.

Not detectable from the files: a config.json whose hidden_act was changed to another valid, parameter-free
activation; the model then computes with that activation, dense and upcycled alike.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..integrations.checkpoint_files import check_checkpoint_folder, checkpoint_shapes
from ..upcycling.ffn_adapters import adapter_for
from ..integrations.hub import export
from ..models.upcycled import UpcycledMoeForCausalLM
from ..upcycling.plan import UpcyclePlan, get_plan

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} (no float16 on this CPU), got {name!r}")
    return DTYPES[name]


def _model_class_names(model_type: str) -> set[str]:
    """Every model class name transformers (or a zoo package) registered for `model_type`."""
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for attribute in dir(modeling_auto):
        mapping = getattr(modeling_auto, attribute)
        if attribute.endswith("_MAPPING_NAMES") and not attribute.startswith("CONFIG") and isinstance(mapping, dict):
            value = mapping.get(model_type, ())
            names.update([value] if isinstance(value, str) else value)
        elif attribute.startswith("MODEL_") and hasattr(mapping, "_extra_content"):
            names.update(c.__name__ for k, c in mapping._extra_content.items() if k.model_type == model_type)
    return names


def read_config(folder: Path):
    """The config of a save_pretrained folder, after checking config.json is JSON with a known model_type that
    agrees with its `architectures` (a relabelled model_type builds another model around the same weights)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a save_pretrained folder)")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"{path}: unknown model_type {model_type!r} (not a transformers or zoo model type)")
    architectures = raw.get("architectures") or []
    known = _model_class_names(model_type)
    if architectures and not set(architectures) & known:
        raise ValueError(f"{path}: model_type {model_type!r} does not match architectures {architectures} "
                         f"(a relabelled model_type?); {model_type!r} classes are {sorted(known)[:6]}")
    return AutoConfig.from_pretrained(folder)


def _check_activation(adapter, config, path: Path) -> None:
    from transformers.activations import ACT2FN

    act = adapter.activation(config)
    if act not in ACT2FN:
        raise ValueError(f"{path / 'config.json'}: {adapter.act_attribute}={act!r} is not an activation transformers "
                         f"knows; known: {sorted(ACT2FN)}")


def _check_complete_load(base: Path, info: dict) -> None:
    """Every weight of the model from the checkpoint, every checkpoint tensor used: a missing one would be left
    at random initialisation, an unused one means the config describes another model (fewer layers, say)."""
    problems = {"has no tensor for": info.get("missing_keys", []),
                "has tensors the config does not use": info.get("unexpected_keys", []),
                "has tensors of another shape for": [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", [])]}
    for what, keys in problems.items():
        if keys:
            keys = sorted(keys)
            more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
            raise ValueError(f"{base}: the dense checkpoint {what} {keys[:3]}{more}: renamed tensors, or a config.json "
                             "(num_hidden_layers, model_type, ...) that does not describe these weights")


def load_dense(base: str | Path, dtype: torch.dtype = torch.float32, plan: UpcyclePlan | None = None):
    """(model, tokenizer or None) from a save_pretrained folder, validated before the weights load (config.json,
    architecture, activation, safetensors files, shapes) and after (the FFNs `plan` copies, then every weight:
    none missing or left unused)."""
    base = Path(base)
    if not base.exists():
        raise FileNotFoundError(f"base checkpoint {base} does not exist")
    if base.suffix == ".gguf":
        raise ValueError(f"{base}: GGUF files are not read directly; load it with transformers (gguf_file=...) and "
                         "save_pretrained a folder first (zoo.integrations.assets.load_smollm2 keeps such a folder for SmolLM2)")
    config = read_config(base)
    adapter = adapter_for(config)  # unsupported architecture: fail before reading weights
    _check_activation(adapter, config, base)
    check_checkpoint_folder(base)
    model, info = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, output_loading_info=True)
    if plan is not None:
        check_ffn_sources(base, model, plan)  # the most specific message first
    _check_complete_load(base, info)
    return model, _tokenizer(base)


def check_ffn_sources(base: Path, model, plan) -> None:
    """Every FFN tensor the plan copies into experts is a tensor of the dense checkpoint with the model's shape
    (not left at random initialisation because it was renamed or the config has more layers than the file)."""
    adapter = adapter_for(model.config)
    shapes = checkpoint_shapes(base)
    names = {id(p): n for n, p in model.named_parameters()}
    layers = adapter.decoder_layers(model)
    for index in plan.layer_indices(len(layers)):
        for local, param in getattr(layers[index], adapter.ffn_attribute).named_parameters():
            name = names[id(param)]
            if name not in shapes:
                raise ValueError(f"{base}: the dense checkpoint has no tensor {name!r} (layer {index} FFN {local}), "
                                 "so its experts would be copies of random weights (renamed tensor, or config.json "
                                 "with more layers than the checkpoint?)")
            if shapes[name] != tuple(param.shape):
                raise ValueError(f"{base}: tensor {name!r} has shape {shapes[name]}, the model built from config.json "
                                 f"expects {tuple(param.shape)}")


def _check_not_same_folder(base: Path, out: Path) -> None:
    if out.exists() and base.exists() and out.resolve() == base.resolve():
        raise ValueError(f"--out {out} is the dense checkpoint --base {base}: upcycling would overwrite it; "
                         "choose another folder")


def _tokenizer(folder: Path):
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return AutoTokenizer.from_pretrained(folder)
    return None


def upcycle_checkpoint(base: str | Path, plan: str, out: str | Path, dtype: str = "float32") -> dict:
    """Load `base`, upcycle it with the named plan, save an UpcycledMoeForCausalLM to `out`."""
    upcycle_plan = get_plan(plan)  # unknown plan: fail before loading anything
    base, out = Path(base), Path(out)
    _check_not_same_folder(base, out)
    model, tokenizer = load_dense(base, _dtype(dtype), upcycle_plan)
    start = time.perf_counter()
    moe = UpcycledMoeForCausalLM.from_dense(model, upcycle_plan)
    seconds = time.perf_counter() - start
    moe.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return {"out": str(out), "architecture": moe.config.text_config.model_type, "moe_layers": len(moe.moe_layers()),
            "num_experts": upcycle_plan.num_experts, "parameters": sum(p.numel() for p in moe.parameters()),
            "upcycle_seconds": round(seconds, 2)}


def export_checkpoint(source: str | Path, out: str | Path, native: bool = False, base_model: str | None = None,
                      license: str = "apache-2.0") -> Path:
    """Load an upcycled checkpoint folder and write a Hub folder (remote code or native MoE) with a model card."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"upcycled checkpoint folder {source} does not exist")
    read_config(source)  # not JSON, or a relabelled model_type: named here, not deep inside transformers
    check_checkpoint_folder(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    if not isinstance(model, UpcycledMoeForCausalLM):
        raise ValueError(f"{source} holds a {type(model).__name__}, not an upcycled zoo model (run zoo upcycle first)")
    return export(model, out, native=native, base_model=base_model, license=license, tokenizer=_tokenizer(source))


__all__ = ["check_ffn_sources", "export_checkpoint", "load_dense", "read_config", "upcycle_checkpoint"]
