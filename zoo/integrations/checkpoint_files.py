"""Check a saved checkpoint folder before loading it, so bad files fail with a message that names them.

- every *.safetensors file must be complete: its JSON header's tensors must fit in the file
  (a truncated download otherwise surfaces as "incomplete metadata" deep inside the loader);
- every tensor whose name the model built from config.json also has must have the shape the config
  implies (a checkpoint whose FFN width disagrees with `intermediate_size`, say).
Only headers are read; no tensor data is loaded.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from one safetensors file's header, after checking the file is whole."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes; truncated?)")
        header_size = struct.unpack("<Q", prefix)[0]
        if 8 + header_size > size:
            raise ValueError(f"{path}: truncated safetensors file (header of {header_size} bytes, file of {size} bytes)")
        try:
            header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: corrupt safetensors header ({error})") from None
    header.pop("__metadata__", None)
    data_end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if 8 + header_size + data_end > size:
        raise ValueError(
            f"{path}: truncated safetensors file: its tensors need {8 + header_size + data_end} bytes, the file has {size}"
        )
    return {name: tuple(entry["shape"]) for name, entry in header.items()}


def checkpoint_shapes(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """Shapes of every tensor in a folder's *.safetensors files (all files validated)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights found")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update(safetensors_shapes(file))
    return shapes


def check_checkpoint_folder(folder: str | Path, model_class=None) -> None:
    """Validate the safetensors files of a `save_pretrained` folder and their shapes against its config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a save_pretrained folder)")
    shapes = checkpoint_shapes(folder)
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = (model_class or AutoModelForCausalLM).from_config(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    mismatched = [f"{name}: checkpoint {shapes[name]} vs config {expected[name]}"
                  for name in sorted(shapes.keys() & expected.keys()) if shapes[name] != expected[name]]
    if mismatched:
        more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        raise ValueError(f"{folder}: the weights do not match config.json: " + "; ".join(mismatched[:3]) + more)


__all__ = ["check_checkpoint_folder", "checkpoint_shapes", "safetensors_shapes"]
