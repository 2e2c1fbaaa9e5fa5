"""Check a saved checkpoint folder before loading it, so bad files fail with a message that names them.

- every *.safetensors file must be complete: its JSON header's tensors must fit in the file
  (a truncated download otherwise surfaces as "incomplete metadata" deep inside the loader);
- every tensor whose name the model built from config.json also has must have the shape the config
  implies (a checkpoint whose FFN width disagrees with `intermediate_size`, say).
Only headers are read; no tensor data is loaded.
"""
from __future__ import annotations

import json
import math
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
    data_end = _check_tensor_layout(path, header)
    if 8 + header_size + data_end > size:
        raise ValueError(
            f"{path}: truncated safetensors file: its tensors need {8 + header_size + data_end} bytes, the file has {size}"
        )
    if 8 + header_size + data_end < size:
        raise ValueError(f"{path}: corrupt safetensors file: {size - 8 - header_size - data_end} bytes after its last tensor")
    return {name: tuple(entry["shape"]) for name, entry in header.items()}


# bytes per element of each safetensors dtype (None: sub-byte formats, whose size is not checked here)
SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1,
                           "F8_E5M2FNUZ": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                           "I64": 8, "U64": 8, "F64": 8, "C64": 8, "F4": None, "F6_E2M3": None, "F6_E3M2": None}


def _check_tensor_layout(path: Path, header: dict) -> int:
    """Each header entry's dtype, shape and [begin, end) byte range, which must tile the data without gaps or
    overlaps (what the safetensors loader refuses later with a message that names no file) -> the data size."""
    spans = []
    for name, entry in header.items():
        dtype, shape, offsets = (entry.get(k) if isinstance(entry, dict) else None for k in ("dtype", "shape", "data_offsets"))
        if dtype not in SAFETENSORS_DTYPE_BYTES:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}; known: {sorted(SAFETENSORS_DTYPE_BYTES)}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
        itemsize = SAFETENSORS_DTYPE_BYTES[dtype]
        if itemsize is not None and offsets[1] - offsets[0] != math.prod(shape) * itemsize:
            raise ValueError(f"{path}: tensor {name!r} ({dtype} {shape}) needs {math.prod(shape) * itemsize} bytes, "
                             f"its data_offsets {offsets} span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise ValueError(f"{path}: tensor {name!r} starts at byte {begin} of the data, expected {end} (overlap or gap)")
        end = stop
    return end


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


def tensor_files(folder: str | Path) -> dict[str, str]:
    """{tensor name: the file (name inside `folder`) that holds it}, from a sharded checkpoint's index or
    from the headers of the folder's *.safetensors files; {} where neither exists (.bin weights, a Hub id)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return dict(json.loads(index.read_text())["weight_map"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{index}: not a safetensors index with a weight_map ({error})") from None
    if not folder.is_dir():
        return {}
    return {name: file.name for file in sorted(folder.glob("*.safetensors")) for name in safetensors_shapes(file)}


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


__all__ = ["check_checkpoint_folder", "checkpoint_shapes", "safetensors_shapes", "tensor_files"]
