"""Gallery tab: the MoE-LLaVA baseline on easy-VQA (SmolLM2-135M + MobileNetV2, `zoo train moe_llava --recipe tiny`)."""
from __future__ import annotations

from .vl_ui import build_tab

TITLE = "MoE-LLaVA (vision QA)"
INTRO = """**MoE-LLaVA**, the common ancestor of MoIIE and MoTE: every even decoder FFN of SmolLM2-135M
became top-2 of 4 experts, one router for all tokens (image and text alike), Gumbel-sampled second
expert in training. Ask about shapes and colours (easy-VQA). The model loads on the first question."""


def build() -> None:
    build_tab("moe_llava", INTRO)
