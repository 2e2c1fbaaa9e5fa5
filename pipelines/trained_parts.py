"""Trained parts as shipped: the trainable tensors of a model (frozen bases left out) in one bf16
safetensors file with JSON metadata, and their way back into a freshly built model."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def save_parts(model, path: Path, names: Iterable[str], metadata: dict | None = None) -> None:
    wanted = set(names)
    state = {n: p.detach().to(torch.bfloat16).contiguous() for n, p in model.named_parameters() if n in wanted}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})


@torch.no_grad()
def round_as_shipped_(model, names: Iterable[str]) -> None:
    """The named parameters rounded to bf16 (kept in their dtype), as `save_parts` ships them: a report computed
    after this is the shipped parts' report."""
    wanted = set(names)
    for name, param in model.named_parameters():
        if name in wanted:
            param.copy_(param.to(torch.bfloat16))


def load_parts(model, path: Path, prefixes: tuple[str, ...] = ("",), required: Iterable[str] = (),
               hint: str = "zoo train <system> --recipe tiny") -> dict:
    """Copy the file's tensors (those under `prefixes`) into `model`; -> the file's metadata. A tensor the
    model lacks, or a `required` one the file lacks, is an error naming them."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: train it with `{hint}`")
    state = {k: v for k, v in load_file(str(path)).items() if k.startswith(prefixes)}
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} tensors do not fit this model, e.g. {unknown[:3]}")
    missing = sorted(set(required) - set(state))
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} trained tensors of this model, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))
    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
