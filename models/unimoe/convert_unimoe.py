"""Released Uni-MoE checkpoints (v1 4E and 8e) -> UniMoeForConditionalGeneration keys.

v1 (Uni-MoE-speech-base + Uni-MoE-speech-e2; its files merged into one state dict):
    model.layers.{N}.mlp.gate.weight [E, H]                         -> language_model.model.layers.{N}.mlp.moe.router.weight
    model.layers.{N}.mlp.experts.{e}.{gate,up,down}_proj.weight     -> ...mlp.moe.experts.gate_up_proj[e] / down_proj[e]
    PEFT 0.4 adapter (adapter_model.bin + adapter_config.json: r, lora_alpha), on attention and the experts:
        base_model.model.{module}.lora_A.weight / .lora_B.weight    -> merged into {module}.weight: W + (alpha / r) B A
8e (Uni-MoE-8e-e2 + the expert files + mlp_dir "Uni-MoE-8e-Experts"):
    model.layers.{N}.mlp.deepspeed_moe.gate.wg.weight [E, H]        -> ...mlp.moe.router.weight
    model.layers.{N}.mlp.deepspeed_moe.experts.deepspeed_experts.{local}.{proj}_lora_A.weight [r, in],
        ..._lora_B.weight [out, r]    (loralib: one pair per proj, scaling lora_alpha / r)
        in the files `{e}_mlp_experts.bin` (one per global expert e) or in DeepSpeed's per-rank shards, where
        expert e = rank * E / ep_size + local                       -> merged into expert e's frozen FFN
    expert e's frozen FFN: model.layers.{N}.mlp.{gate,up,down}_proj.weight of the mlp_dir file
        config.expert_sources[e] (8e slot order: mlp_audiocap, mlp_basev, mlp_base, mlp_base1, mlp_base4,
        mlp_base7, mlp_base, mlp_base7), or the shard's own {proj}.weight when it holds one
both:
    model.mm_projector.{0,2}.*                      -> connector.projector.{0,2}.*
    model.vision_tower.vision_tower.*               -> vision_tower.model.*
    model.audio_tower.audio_tower.*                 -> audio_tower.encoder.*   (model.audio_tower.{encoder,decoder}.*: the
                                                                                unused random WhisperModel copies, dropped)
    model.mm_audio_aligner.decoder.audio_decoder.*  -> audio_aligner.decoder.* (embed_tokens dropped: queries replace tokens)
    model.mm_audio_aligner.projector.*              -> audio_aligner.projector.*
    model.query_tokens [1, Q, C]                    -> audio_aligner.query_tokens
    model.*                                         -> language_model.model.*    lm_head.* -> language_model.lm_head.*

The released LoRA deltas are merged into each expert's frozen FFN (exact); the zoo's own expert LoRA
pairs start fresh (A kaiming-uniform, B = 0, so they change nothing) for further tuning. The target
config needs `expert_sources` (one frozen FFN per expert: the released experts differ).

    python -m zoo.models.unimoe.convert_unimoe v1 --config zoo_config.json --output OUT base.bin [...] \
        [--adapter adapter_model.bin --adapter-config adapter_config.json]
    python -m zoo.models.unimoe.convert_unimoe 8e --config zoo_config.json --output OUT e2_files [...] \
        --experts-dir DIR ({e}_mlp_experts.bin) --mlp-dir DIR (mlp_*.bin) --ep-size N --lora-alpha 16
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from zoo.experts.low_rank import lora_pair
from zoo.integrations.checkpoint_keys import glu_bank, group_expert_keys, rename

from .configuration_unimoe import UniMoeConfig

RULES = [("model.mm_projector.", "connector.projector."), ("model.vision_tower.vision_tower.", "vision_tower.model."),
         ("model.audio_tower.audio_tower.", "audio_tower.encoder."),
         ("model.mm_audio_aligner.decoder.audio_decoder.", "audio_aligner.decoder."),
         ("model.mm_audio_aligner.projector.", "audio_aligner.projector."),
         ("model.query_tokens", "audio_aligner.query_tokens"),
         ("model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")]
DROPPED = (re.compile(r"model\.audio_tower\.(encoder|decoder)\..*"),
           re.compile(r"model\.mm_audio_aligner\.decoder\.audio_decoder\.embed_tokens\..*"))
V1_EXPERT_KEY = r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(.+)"
V1_GATE = re.compile(r"model\.layers\.(\d+)\.mlp\.gate\.weight")
E8_EXPERT_KEY = re.compile(r"model\.layers\.(\d+)\.mlp\.deepspeed_moe\.experts\.deepspeed_experts\.(\d+)\."
                           r"(gate_proj|up_proj|down_proj)(_lora_A|_lora_B)?\.weight")
E8_GATE = re.compile(r"model\.layers\.(\d+)\.mlp\.deepspeed_moe\.gate\.wg\.weight")
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


# -- shared pieces -------------------------------------------------------------------------------------------------
def router_key(layer: int) -> str:
    return f"language_model.model.layers.{layer}.mlp.moe.router.weight"


def rename_rest(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every non-MoE key -> its zoo key (RULES); the unused copies in DROPPED are left out."""
    return {rename(k, RULES): v for k, v in state.items() if not any(p.fullmatch(k) for p in DROPPED)}


def expert_bank(layer: int, names: Mapping[str, Mapping[int, torch.Tensor]], config: UniMoeConfig) -> dict:
    """Per-expert merged Llama FFN weights {"gate_proj.weight": {e: W}, ...} -> the layer's zoo bank keys, with
    fresh LoRA pairs (B = 0) when the config has LoRA experts."""
    prefix = f"language_model.model.layers.{layer}.mlp.moe.experts"
    bank = glu_bank(names, config.num_experts, f"layer {layer}")  # gate_up_proj [E, 2I, H], down_proj [E, H, I]
    out = {f"{prefix}.{name}": value for name, value in bank.items()}
    if config.expert_lora_rank is not None:
        E, two_i, hidden = bank["gate_up_proj"].shape
        r = config.expert_lora_rank
        for name, (rows, cols) in (("gate_up", (two_i, hidden)), ("down", (hidden, two_i // 2))):
            lora_a, lora_b = lora_pair(E, r, rows, cols)
            out[f"{prefix}.{name}_lora_A"], out[f"{prefix}.{name}_lora_B"] = lora_a.data, lora_b.data
    return out


def check_layers(config: UniMoeConfig, found: set[int], what: str) -> None:
    from zoo.multimodal.configuration import resolve_layers

    want = set(resolve_layers(config.moe_layers, config.text_config.num_hidden_layers))
    if found != want:
        raise ValueError(f"the checkpoint has {what} in layers {sorted(found)}, the config's moe_layers are "
                         f"{sorted(want)}: convert into a config with moe_layers={sorted(found)}")


def _check_config(config: UniMoeConfig) -> None:
    if config.expert_sources is None:
        raise ValueError("convert into a config with expert_sources (one name per expert): the released experts are "
                         "FFNs of different dense models, each needs its own frozen weights")


def _router(key: str, value: torch.Tensor, config: UniMoeConfig) -> torch.Tensor:
    if value.shape[0] != config.num_experts:
        raise ValueError(f"{key}: the router has {value.shape[0]} experts, config num_experts={config.num_experts}")
    return value


# -- v1 ------------------------------------------------------------------------------------------------------------
def merge_peft_adapter(state: Mapping[str, torch.Tensor], adapter: Mapping[str, torch.Tensor],
                       adapter_config: Mapping) -> dict[str, torch.Tensor]:
    """W + (lora_alpha / r) B A for every PEFT LoRA pair `base_model.model.{module}.lora_{A,B}.weight` -> {module}.weight."""
    scaling = adapter_config["lora_alpha"] / adapter_config["r"]
    merged = dict(state)
    pairs = re.compile(r"base_model\.model\.(.+)\.lora_A\.weight")
    for key, lora_a in adapter.items():
        match = pairs.fullmatch(key)
        if match is None:
            if not key.endswith(".lora_B.weight"):
                raise ValueError(f"adapter key {key!r} is not a LoRA pair (base_model.model.<module>.lora_A/B.weight)")
            continue
        module = match.group(1)
        lora_b = adapter.get(f"base_model.model.{module}.lora_B.weight")
        if lora_b is None:
            raise ValueError(f"adapter has {key} but no base_model.model.{module}.lora_B.weight")
        if f"{module}.weight" not in merged:
            raise ValueError(f"adapter adapts {module}, but the state dict has no {module}.weight")
        weight = merged[f"{module}.weight"]
        merged[f"{module}.weight"] = (weight.float() + scaling * lora_b.float() @ lora_a.float()).to(weight.dtype)
    return merged


def convert_unimoe_v1_state_dict(state: Mapping[str, torch.Tensor], config: UniMoeConfig,
                                 adapter: Mapping[str, torch.Tensor] | None = None,
                                 adapter_config: Mapping | None = None) -> dict[str, torch.Tensor]:
    _check_config(config)
    if adapter is not None:
        if adapter_config is None:
            raise ValueError("a PEFT adapter needs its adapter_config (r, lora_alpha) for the merge")
        state = merge_peft_adapter(state, adapter, adapter_config)
    experts, rest = group_expert_keys(state, V1_EXPERT_KEY)
    out = {}
    for layer, names in experts.items():
        out.update(expert_bank(layer, names, config))
    routers = {}
    for key, value in list(rest.items()):
        if match := V1_GATE.fullmatch(key):
            routers[int(match.group(1))] = _router(key, rest.pop(key), config)
    check_layers(config, set(experts), "experts")
    check_layers(config, set(routers), "routers (mlp.gate)")
    out.update({router_key(layer): value for layer, value in routers.items()})
    out.update(rename_rest(rest))
    return out


# -- 8e ------------------------------------------------------------------------------------------------------------
def global_expert_index(rank: int, local: int, num_experts: int, ep_size: int) -> int:
    """DeepSpeed expert parallelism: rank r holds experts [r * E/ep, (r + 1) * E/ep) as local 0 .. E/ep - 1."""
    if num_experts % ep_size:
        raise ValueError(f"ep_size {ep_size} does not divide num_experts {num_experts}")
    per_rank = num_experts // ep_size
    if not 0 <= local < per_rank or not 0 <= rank < ep_size:
        raise ValueError(f"local expert {local} on rank {rank}: each of the {ep_size} ranks holds {per_rank} experts")
    return rank * per_rank + local


def _expert_tensors(expert_states: Mapping[int, Mapping[str, torch.Tensor]], by: str, num_experts: int,
                    ep_size: int) -> dict[tuple[int, int, str], torch.Tensor]:
    """{(layer, global expert, "gate_proj" | "gate_proj_lora_A" | ...): tensor} from per-expert files (by="expert",
    key: the file's global expert e, whose keys carry the local index e % (E / ep)) or per-rank shards (by="rank")."""
    if by not in ("expert", "rank"):
        raise ValueError(f"expert_states are keyed by 'expert' or 'rank', got {by!r}")
    per_rank = num_experts // ep_size if num_experts % ep_size == 0 else None
    out = {}
    for owner, shard in expert_states.items():
        rank = owner if by == "rank" else (owner // per_rank if per_rank else 0)
        for key, value in shard.items():
            match = E8_EXPERT_KEY.fullmatch(key)
            if match is None:
                raise ValueError(f"expert file {owner}: {key!r} is not a DeepSpeed expert key")
            layer, local, proj, part = int(match.group(1)), int(match.group(2)), match.group(3), match.group(4) or ""
            expert = global_expert_index(rank, local, num_experts, ep_size)
            if by == "expert" and expert != owner:
                raise ValueError(f"the file of expert {owner} holds {key} (local {local} = expert {expert} with "
                                 f"ep_size {ep_size}): wrong ep_size or misnamed file")
            out[(layer, expert, proj + part)] = value
    return out


def convert_unimoe_8e_state_dict(state: Mapping[str, torch.Tensor], config: UniMoeConfig,
                                 expert_states: Mapping[int, Mapping[str, torch.Tensor]],
                                 mlp_sources: Mapping[str, Mapping[str, torch.Tensor]], *, ep_size: int = 1,
                                 lora_alpha: float = 16.0, by: str = "expert") -> dict[str, torch.Tensor]:
    _check_config(config)
    if any(E8_EXPERT_KEY.fullmatch(k) for k in state):
        raise ValueError("the main state dict holds DeepSpeed expert tensors: pass them in expert_states (by rank or expert)")
    tensors = _expert_tensors(expert_states, by, config.num_experts, ep_size)
    rest, routers = dict(state), {}
    for key in [k for k in rest if E8_GATE.fullmatch(k)]:
        routers[int(E8_GATE.fullmatch(key).group(1))] = _router(key, rest.pop(key), config)
    check_layers(config, set(routers), "routers (deepspeed_moe.gate.wg)")
    out = {router_key(layer): value for layer, value in routers.items()}
    for layer in sorted(routers):
        names: dict[str, dict[int, torch.Tensor]] = {}
        for expert, source in enumerate(config.expert_sources):
            for proj in PROJECTIONS:
                base = tensors.get((layer, expert, proj))
                if base is None:
                    key = f"model.layers.{layer}.mlp.{proj}.weight"
                    if source not in mlp_sources or key not in mlp_sources[source]:
                        raise ValueError(f"layer {layer} expert {expert}: no {proj} weight in its shard, and mlp_dir "
                                         f"source {source!r} (config.expert_sources[{expert}]) has no {key}")
                    base = mlp_sources[source][key]
                lora_a, lora_b = tensors.get((layer, expert, proj + "_lora_A")), tensors.get((layer, expert, proj + "_lora_B"))
                if (lora_a is None) != (lora_b is None):
                    raise ValueError(f"layer {layer} expert {expert} {proj}: a LoRA A without B (or B without A)")
                if lora_a is not None:
                    scaling = lora_alpha / lora_a.shape[0]  # loralib: alpha / r
                    base = (base.float() + scaling * lora_b.float() @ lora_a.float()).to(base.dtype)
                names.setdefault(f"{proj}.weight", {})[expert] = base
        out.update(expert_bank(layer, names, config))
    out.update(rename_rest(rest))
    return out


# -- command line --------------------------------------------------------------------------------------------------
def load_state(path) -> dict[str, torch.Tensor]:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def main(argv=None) -> None:
    import argparse
    import json
    import pathlib

    from .modeling_unimoe import UniMoeForConditionalGeneration

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=["v1", "8e"])
    parser.add_argument("sources", nargs="+", help="released state-dict files (.bin / .safetensors), merged in order")
    parser.add_argument("--config", required=True, help="zoo UniMoeConfig json (with expert_sources)")
    parser.add_argument("--output", required=True, help="folder for the zoo model (save_pretrained)")
    parser.add_argument("--adapter", help="v1: adapter_model.bin")
    parser.add_argument("--adapter-config", help="v1: adapter_config.json")
    parser.add_argument("--experts-dir", help="8e: folder of {e}_mlp_experts.bin")
    parser.add_argument("--mlp-dir", help="8e: folder of the source FFNs mlp_*.bin")
    parser.add_argument("--ep-size", type=int, default=1, help="8e: expert-parallel size the experts were saved with")
    parser.add_argument("--lora-alpha", type=float, default=16.0, help="8e: lora_alpha of the expert LoRA")
    args = parser.parse_args(argv)
    config = UniMoeConfig.from_json_file(args.config)
    state = {}
    for path in args.sources:
        state.update(load_state(path))
    if args.layout == "v1":
        adapter = load_state(args.adapter) if args.adapter else None
        adapter_config = json.loads(pathlib.Path(args.adapter_config).read_text()) if args.adapter_config else None
        converted = convert_unimoe_v1_state_dict(state, config, adapter, adapter_config)
    else:
        if not args.experts_dir or not args.mlp_dir:
            parser.error("8e needs --experts-dir and --mlp-dir")
        experts = {e: load_state(pathlib.Path(args.experts_dir) / f"{e}_mlp_experts.bin") for e in range(config.num_experts)}
        sources = {name: load_state(pathlib.Path(args.mlp_dir) / f"{name}.bin") for name in set(config.expert_sources)}
        converted = convert_unimoe_8e_state_dict(state, config, experts, sources, ep_size=args.ep_size,
                                                 lora_alpha=args.lora_alpha)
    model = UniMoeForConditionalGeneration(config, load_tower_weights=False)
    model.load_state_dict(converted, strict=True)
    model.save_pretrained(args.output)


if __name__ == "__main__":
    main()
