"""MoIIE configuration: modality-guided routing over intra-vision / shared inter-modality / intra-text experts."""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
from zoo.core.validation import check_indices, check_non_negative, check_number, strict_config
from zoo.multimodal.configuration import MultimodalMoeConfig


def expert_groups(num_experts: int) -> dict[str, list[int]]:
    """E experts -> {"image": own, "shared": pool, "text": own}, in that index order.

    E/4 intra-vision, E/2 shared, E/4 intra-text when 4 divides E (the paper's split); for other even
    E each modality keeps floor(E/4) (at least 1) and the rest is shared. The released code's fixed
    text offset of +1 is right only for E = 4; here the text experts are always the last ones."""
    if num_experts < 4 or num_experts % 2:
        raise ValueError(f"MoiieConfig.num_experts must be an even number >= 4 for MoIIE's default split "
                         f"(or give expert_groups), got {num_experts}")
    own = max(1, num_experts // 4)
    return {"image": list(range(own)), "shared": list(range(own, num_experts - own)),
            "text": list(range(num_experts - own, num_experts))}


@strict_config
class MoiieConfig(MultimodalMoeConfig):
    """Defaults = the paper: 4 experts, top-2 renormalised, MoE on odd layers, 0.001 per router loss.

    `expert_groups` may override the split ({"image": [...], "shared": [...], "text": [...]});
    a split whose subsets overlap, leave an expert out, or leave a modality fewer than top-k
    reachable experts is refused."""

    model_type = "moiie"

    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_layers: str | list[int] | tuple[int, ...] = "odd"
    expert_groups: dict | None = None
    vis_router_aux_loss_coef: float | int = 0.001
    lan_router_aux_loss_coef: float | int = 0.001
    router_jitter_noise: float | int = 0.0

    def validate_architecture(self) -> None:
        super().validate_architecture()
        check_non_negative(self, vis_router_aux_loss_coef=self.vis_router_aux_loss_coef,
                           lan_router_aux_loss_coef=self.lan_router_aux_loss_coef)
        check_number(self, "router_jitter_noise", self.router_jitter_noise, low=0, high=1, high_open=True)
        groups = self.resolved_expert_groups()
        if set(groups) != {"image", "shared", "text"}:
            raise ValueError(f"MoiieConfig.expert_groups must have exactly the keys image, shared, text; got {sorted(groups)}")
        owner: dict[int, str] = {}
        for name, experts in groups.items():
            for e in experts:
                if e in owner:
                    raise ValueError(f"MoiieConfig.expert_groups: expert {e} is in both {owner[e]!r} and {name!r}")
                owner[e] = name
        missing = sorted(set(range(self.num_experts)) - set(owner))
        if missing:
            raise ValueError(f"MoiieConfig.expert_groups: experts {missing} belong to no group")
        for modality in ("image", "text"):
            reachable = len(groups[modality]) + len(groups["shared"])
            if reachable < self.num_experts_per_tok:
                raise ValueError(f"MoiieConfig.expert_groups: {modality} tokens reach {reachable} experts < num_experts_per_tok "
                                 f"({self.num_experts_per_tok})")

    def resolved_expert_groups(self) -> dict[str, list[int]]:
        if not self.expert_groups:
            return expert_groups(self.num_experts)
        return {name: check_indices(self, f"expert_groups[{name!r}]", experts, size=self.num_experts)
                for name, experts in self.expert_groups.items()}
