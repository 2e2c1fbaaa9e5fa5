"""Checkpoint to checkpoint: upcycle a saved dense decoder, export an upcycled one (zoo upcycle / zoo export).

    upcycle_checkpoint("dense/", "top2-of-4", "moe/")        # a dense save_pretrained folder
    export_checkpoint("moe/", "hub/", native=False)          # Hub folder: remote code + model card (or native MoE)

Inputs are checked before anything heavy is loaded: the plan name, the architecture, complete
safetensors files and tensor shapes that match config.json, each failing with a ValueError or
FileNotFoundError that names the problem.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..integrations.checkpoint_files import check_checkpoint_folder
from ..upcycling.ffn_adapters import adapter_for
from ..integrations.hub import export
from ..models.upcycled import UpcycledMoeForCausalLM
from ..upcycling.plan import get_plan

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} (no float16 on this CPU), got {name!r}")
    return DTYPES[name]


def load_dense(base: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer or None) from a save_pretrained folder, validated before the weights load."""
    base = Path(base)
    if not base.exists():
        raise FileNotFoundError(f"base checkpoint {base} does not exist")
    if base.suffix == ".gguf":
        raise ValueError(f"{base}: GGUF files are not read directly; load it with transformers (gguf_file=...) and "
                         "save_pretrained a folder first (zoo.integrations.assets.load_smollm2 keeps such a folder for SmolLM2)")
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base}: no config.json (expected a save_pretrained folder)")
    adapter_for(AutoConfig.from_pretrained(base))  # unsupported architecture: fail before reading weights
    check_checkpoint_folder(base)
    return AutoModelForCausalLM.from_pretrained(base, dtype=dtype), _tokenizer(base)


def _tokenizer(folder: Path):
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return AutoTokenizer.from_pretrained(folder)
    return None


def upcycle_checkpoint(base: str | Path, plan: str, out: str | Path, dtype: str = "float32") -> dict:
    """Load `base`, upcycle it with the named plan, save an UpcycledMoeForCausalLM to `out`."""
    upcycle_plan = get_plan(plan)  # unknown plan: fail before loading anything
    model, tokenizer = load_dense(base, _dtype(dtype))
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
    check_checkpoint_folder(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    if not isinstance(model, UpcycledMoeForCausalLM):
        raise ValueError(f"{source} holds a {type(model).__name__}, not an upcycled zoo model (run zoo upcycle first)")
    return export(model, out, native=native, base_model=base_model, license=license, tokenizer=_tokenizer(source))


__all__ = ["export_checkpoint", "load_dense", "upcycle_checkpoint"]
