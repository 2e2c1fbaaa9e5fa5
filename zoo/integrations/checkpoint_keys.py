"""Checkpoint keys of the zoo's MoE models: converters' key remapping, and the check that the routers and
experts a model loads all came from its checkpoint.

    released key --rename(prefix rules)--> zoo key;  per-expert tensors --stack--> [E, ...] banks
    from_pretrained --transformers' loading info--> missing / unexpected / mismatched router or expert keys
        --> ValueError naming the keys and the files

Why the check: transformers fills a missing weight with the model's `_init_weights`, but the zoo's expert
banks and routers skip that init (upcycling initialises them, a generic init would undo function
preservation), so a checkpoint without them loaded uninitialised memory (NaN, 1e37) with only a load
report to say so. Every zoo PreTrainedModel class derives from `StrictMoeLoading`; other missing keys
(a dense weight, say) keep transformers' behaviour: initialised by `_init_weights` and reported.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..core.expert_banks import ExpertBank, SharedExperts
from ..core.routing import Router
from .checkpoint_files import tensor_files

# A dotted component that names a routing part, in the zoo's layouts and released ones (Mixtral's
# `block_sparse_moe.gate`, Qwen-MoE's `mlp.gate`, `experts.3.w1`): how a checkpoint key that no module of
# the model owns (an unexpected key) is recognised as a router or expert weight.
ROUTING_COMPONENT = re.compile(r".*(router|expert).*|gate|moe|mome")
SHOWN_KEYS = 6  # per kind of problem; the count says how many there are in all


def routing_modules(model: nn.Module) -> set[str]:
    """Names of the model's routing parts: routers, expert banks, shared experts, and every module with a
    router as a direct child (an MoE block, with its pre-norm and shared FFN)."""
    return {name for name, module in model.named_modules()
            if isinstance(module, (Router, ExpertBank, SharedExperts))
            or any(isinstance(child, Router) for child in module.children())}


def is_routing_key(key: str, modules: set[str]) -> bool:
    components = key.split(".")
    if any(".".join(components[:i]) in modules for i in range(1, len(components))):
        return True
    return any(ROUTING_COMPONENT.fullmatch(component) for component in components)


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def routing_key_problems(model: nn.Module, loading_info: Mapping, files: Mapping[str, str]) -> list[str]:
    """What is wrong with the router/expert keys of one load, one phrase per problem ([] when nothing is).
    `loading_info` is `from_pretrained(..., output_loading_info=True)`'s; `files`: {checkpoint key: file}."""
    modules = routing_modules(model)
    missing = [k for k in loading_info.get("missing_keys", ()) if is_routing_key(k, modules)]
    unexpected = [k for k in loading_info.get("unexpected_keys", ()) if is_routing_key(k, modules)]
    mismatched = [entry for entry in loading_info.get("mismatched_keys", ()) if is_routing_key(entry[0], modules)]
    stored_in = sorted(set(files.values()))
    where = stored_in[0] if len(stored_in) == 1 else f"its {len(stored_in)} weight files" if stored_in else "the checkpoint"
    problems = [f"missing from {where}: {_listed(missing)}"] if missing else []
    for file in sorted({files.get(k, "the checkpoint") for k in unexpected}):
        problems.append(f"unexpected in {file}: {_listed(k for k in unexpected if files.get(k, 'the checkpoint') == file)}")
    if mismatched:
        shapes = [f"{key} {tuple(saved)} in {files.get(key, 'the checkpoint')} vs {tuple(built)} from config.json"
                  for key, saved, built in mismatched]
        problems.append(f"shapes differ: {_listed(shapes)}")
    return problems


def describe_checkpoint(source, subfolder: str = "") -> tuple[str, dict[str, str]]:
    """(how to name a from_pretrained source in a message, {tensor name: file} where it can be read)."""
    if source is None:
        return "the state_dict given to from_pretrained", {}
    path = Path(os.fspath(source)) / subfolder
    if path.is_dir():
        return str(path), tensor_files(path)
    if path.is_file() and path.suffix == ".safetensors":
        return str(path.parent), tensor_files(path.parent)
    return repr(os.fspath(source)), {}  # a Hub id: transformers resolved the files in its cache


def check_routing_keys(model: nn.Module, loading_info: Mapping, source, subfolder: str = "") -> None:
    """Raise a ValueError naming every missing, unexpected or mis-shaped router/expert key of a load."""
    label, files = describe_checkpoint(source, subfolder)
    problems = routing_key_problems(model, loading_info, files)
    if problems:
        raise ValueError(
            f"{label}: the router/expert weights of this {type(model).__name__} checkpoint do not match its config "
            f"({'; '.join(problems)}). The zoo does not fill in routers or experts (they would hold uninitialised "
            "memory); load a checkpoint written by save_pretrained of this model, or convert a released one with "
            "the system's convert_*.py"
        )


class StrictMoeLoading:
    """Base of the zoo's PreTrainedModel classes (before PreTrainedModel): `from_pretrained` raises
    `check_routing_keys`' ValueError instead of loading routers or experts the checkpoint does not hold."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        check_routing_keys(model, info, pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        return (model, info) if wants_info else model


def rename(key: str, rules: list[tuple[str, str]]) -> str:
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def stack_experts(pieces: Mapping[int, torch.Tensor], num_experts: int, what: str) -> torch.Tensor:
    missing = sorted(set(range(num_experts)) - set(pieces))
    extra = sorted(set(pieces) - set(range(num_experts)))
    if missing or extra:
        raise ValueError(f"{what}: expected experts 0..{num_experts - 1}, missing {missing}, unexpected {extra}")
    return torch.stack([pieces[e] for e in range(num_experts)])


def group_expert_keys(state: Mapping[str, torch.Tensor], pattern: str):
    """Split a state dict into (per-layer {name: {expert: tensor}}, the other keys). `pattern` is a regex
    with groups (layer, expert, name) matched against each key."""
    experts: dict[int, dict[str, dict[int, torch.Tensor]]] = {}
    rest: dict[str, torch.Tensor] = {}
    regex = re.compile(pattern)
    for key, value in state.items():
        match = regex.fullmatch(key)
        if match:
            layer, expert, name = int(match.group(1)), int(match.group(2)), match.group(3)
            experts.setdefault(layer, {}).setdefault(name, {})[expert] = value
        else:
            rest[key] = value
    return experts, rest


def glu_bank(names: Mapping[str, Mapping[int, torch.Tensor]], num_experts: int, where: str) -> dict[str, torch.Tensor]:
    """Per-expert Llama (gate_proj/up_proj/down_proj) or Phi-3 (gate_up_proj/down_proj) weights -> GLU bank."""
    if "gate_up_proj.weight" in names:
        gate_up = stack_experts(names["gate_up_proj.weight"], num_experts, f"{where}.gate_up_proj")
    elif "gate_proj.weight" in names and "up_proj.weight" in names:
        gate = stack_experts(names["gate_proj.weight"], num_experts, f"{where}.gate_proj")
        up = stack_experts(names["up_proj.weight"], num_experts, f"{where}.up_proj")
        gate_up = torch.cat([gate, up], dim=1)
    else:
        raise ValueError(f"{where}: no gate_up_proj or gate_proj/up_proj weights among {sorted(names)}")
    if "down_proj.weight" not in names:
        raise ValueError(f"{where}: no down_proj weights")
    return {"gate_up_proj": gate_up, "down_proj": stack_experts(names["down_proj.weight"], num_experts, f"{where}.down_proj")}


def convert_cli(doc: str, config_class, model_class, convert, argv=None) -> None:
    """`python -m <converter> SRC.safetensors OUT_DIR --config zoo_config.json`: convert, load strictly, save."""
    import argparse

    from safetensors.torch import load_file

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("source", help="released state dict (.safetensors)")
    parser.add_argument("output", help="folder for the zoo model (save_pretrained)")
    parser.add_argument("--config", required=True, help=f"zoo {config_class.__name__} json (text_config, vision_tower, ...)")
    args = parser.parse_args(argv)
    config = config_class.from_json_file(args.config)
    model = model_class(config, load_tower_weights=False)
    model.load_state_dict(convert(load_file(args.source), config), strict=True)
    model.save_pretrained(args.output)
