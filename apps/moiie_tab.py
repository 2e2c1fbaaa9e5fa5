"""Gallery tab: MoIIE on easy-VQA (SmolLM2-135M + MobileNetV2, trained by `zoo train moiie --recipe tiny`)."""
from __future__ import annotations

from .vl_ui import build_tab

TITLE = "MoIIE (vision QA)"
INTRO = """**MoIIE**: image tokens route among the intra-vision expert (0) and the shared inter-modality
experts (1, 2); text tokens among the shared experts and the intra-text expert (3); top-2 on the odd
layers of SmolLM2-135M. Ask about shapes and colours (easy-VQA). The model loads on the first question."""


def build() -> None:
    build_tab("moiie", INTRO)
