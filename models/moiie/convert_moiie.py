"""Released MoIIE (Bunny-style) state dict -> MoiieForConditionalGeneration keys.

    model.layers.{odd}.mlp.experts.{e}.{gate_up_proj|gate_proj,up_proj|down_proj}.weight -> ...mlp.moe.experts.{gate_up_proj,down_proj} [E, ...]
    model.layers.{odd}.mlp.gate_vis.weight [R, H]   -> ...mlp.moe.router.gates.image.weight
    model.layers.{odd}.mlp.gate.weight     [R, H]   -> ...mlp.moe.router.gates.text.weight
    model.vision_tower.vision_tower.*  -> vision_tower.model.*        model.mm_projector.{0,2}.* -> connector.projector.{0,2}.*
    model.*                            -> language_model.model.*      lm_head.*                  -> language_model.lm_head.*

The released routers cover experts [0, R) (vision) and [1, R + 1) (text): right only for E = 4,
which is the only layout a released checkpoint can have; other counts are refused.

    python -m zoo.models.moiie.convert_moiie SRC.safetensors OUT_DIR   (+ --config config.json of the zoo model)
"""
from __future__ import annotations

from zoo.integrations.checkpoint_keys import convert_cli, glu_bank, group_expert_keys, rename

from .configuration_moiie import MoiieConfig

RULES = [("model.vision_tower.vision_tower.", "vision_tower.model."), ("model.mm_projector.", "connector.projector."),
         ("model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")]
EXPERT_KEY = r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(.+)"


def convert_moiie_state_dict(state: dict, config: MoiieConfig) -> dict:
    if config.num_experts != 4 or config.expert_groups not in (None, {"image": [0], "shared": [1, 2], "text": [3]}):
        raise ValueError("released MoIIE checkpoints have 4 experts (vision [0], shared [1, 2], text [3]); "
                         f"config has num_experts={config.num_experts}, expert_groups={config.expert_groups}")
    if config.expert_lora_rank is not None:
        raise ValueError("convert into a config with expert_lora_rank=None (released experts are full copies)")
    experts, rest = group_expert_keys(state, EXPERT_KEY)
    out = {}
    for layer, names in experts.items():
        prefix = f"language_model.model.layers.{layer}.mlp.moe"
        for name, value in glu_bank(names, config.num_experts, f"layer {layer}").items():
            out[f"{prefix}.experts.{name}"] = value
    for key, value in rest.items():
        parts = key.split(".")
        if key.startswith("model.layers.") and parts[3] == "mlp" and parts[4] in ("gate", "gate_vis"):
            modality = "image" if parts[4] == "gate_vis" else "text"
            out[f"language_model.model.layers.{parts[2]}.mlp.moe.router.gates.{modality}.weight"] = value
        else:
            out[rename(key, RULES)] = value
    return out


def main(argv=None) -> None:
    from .modeling_moiie import MoiieForConditionalGeneration

    convert_cli(__doc__, MoiieConfig, MoiieForConditionalGeneration, convert_moiie_state_dict, argv)


if __name__ == "__main__":
    main()
