"""MoE-LLaVA (DeepSpeed MoE) state dict -> MoeLlavaForConditionalGeneration keys.

    model.layers.{even}.mlp.deepspeed_moe.gate.wg.weight [E, H]                  -> ...mlp.moe.router.weight
    model.layers.{even}.mlp.deepspeed_moe.experts.deepspeed_experts.{e}.
        {gate_proj,up_proj,down_proj}.weight (StableLM/Qwen-style SwiGLU)         -> ...experts.{gate_up_proj, down_proj}
        fc1.{weight,bias}, fc2.{weight,bias} (Phi-2)                             -> ...experts.{up_proj(_bias), down_proj(_bias)}
    model.image_tower.image_tower.* -> vision_tower.model.*   model.mm_projector.image_spatial_proj.* -> connector.projector.*
    model.* -> language_model.model.*                         lm_head.* -> language_model.lm_head.*

    python -m zoo.models.moe_llava.convert_moe_llava SRC.safetensors OUT_DIR --config config.json
"""
from __future__ import annotations

from zoo.integrations.checkpoint_keys import convert_cli, glu_bank, group_expert_keys, rename, stack_experts

from .configuration_moe_llava import MoeLlavaConfig

RULES = [("model.image_tower.image_tower.", "vision_tower.model."),
         ("model.mm_projector.image_spatial_proj.", "connector.projector."),
         ("model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")]
EXPERT_KEY = r"model\.layers\.(\d+)\.mlp\.deepspeed_moe\.experts\.deepspeed_experts\.(\d+)\.(.+)"
GATE = ".mlp.deepspeed_moe.gate.wg.weight"


def convert_moe_llava_state_dict(state: dict, config: MoeLlavaConfig) -> dict:
    if config.expert_lora_rank is not None:
        raise ValueError("convert into a config with expert_lora_rank=None (released experts are full copies)")
    if any(".mlp.mlp." in k or ".mlp.coefficient." in k for k in state):
        raise ValueError("checkpoint uses MoE-LLaVA's use_residual (mlp.mlp / mlp.coefficient), not supported")
    experts, rest = group_expert_keys(state, EXPERT_KEY)
    out = {}
    for layer, names in experts.items():
        prefix = f"language_model.model.layers.{layer}.mlp.moe.experts"
        where = f"layer {layer}"
        if "fc1.weight" in names:  # Phi-2
            for src, dst in (("fc1.weight", "up_proj"), ("fc1.bias", "up_proj_bias"),
                             ("fc2.weight", "down_proj"), ("fc2.bias", "down_proj_bias")):
                if src in names:
                    out[f"{prefix}.{dst}"] = stack_experts(names[src], config.num_experts, f"{where}.{src}")
        else:
            for name, value in glu_bank(names, config.num_experts, where).items():
                out[f"{prefix}.{name}"] = value
    for key, value in rest.items():
        if key.endswith(GATE):
            if value.shape[0] != config.num_experts:
                raise ValueError(f"{key}: gate has {value.shape[0]} experts, config num_experts={config.num_experts}")
            out[key[: -len(GATE)].replace("model.", "language_model.model.", 1) + ".mlp.moe.router.weight"] = value
        else:
            out[rename(key, RULES)] = value
    return out


def main(argv=None) -> None:
    from .modeling_moe_llava import MoeLlavaForConditionalGeneration

    convert_cli(__doc__, MoeLlavaConfig, MoeLlavaForConditionalGeneration, convert_moe_llava_state_dict, argv)


if __name__ == "__main__":
    main()
