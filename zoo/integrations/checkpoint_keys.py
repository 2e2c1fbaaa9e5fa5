"""Key remapping shared by the converters of released vision-language MoE checkpoints.

    released key --rename(prefix rules)--> zoo key;  per-expert tensors --stack--> [E, ...] banks
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch


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
