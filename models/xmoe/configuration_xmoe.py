"""XMoEConfig: an upcycled decoder whose plan defaults to the zoo's "xmoe" preset."""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
from ...core.validation import strict_config
from ...upcycling.plan import PLANS
from ..upcycled.configuration_upcycled_moe import UpcycledMoeConfig


@strict_config
class XMoEConfig(UpcycledMoeConfig):
    r"""
    XMoE (Yang et al., arXiv 2403.18926, "Sparse Models with Fine-grained and Adaptive Expert
    Selection"): each dense FFN split into small experts (hidden units partitioned), a threshold router
    that takes experts by descending probability until their mass reaches `threshold` (variable
    experts per token, raw probabilities as weights), balance loss 0.01. Same fields as
    [`UpcycledMoeConfig`]; `plan` defaults to `zoo.PLANS["xmoe"]` (8 experts of 1/8 width, t = 0.9).
    """

    model_type = "xmoe"

    def __post_init__(self, **kwargs):
        if self.plan is None:
            self.plan = PLANS["xmoe"]  # a copy of the preset
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.plan["router"] != "threshold":
            raise ValueError(f"XMoEConfig.plan must use router='threshold' (XMoE's routing), got {self.plan['router']!r}")


__all__ = ["XMoEConfig"]
