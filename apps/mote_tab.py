"""Gallery tab: MoTE on easy-VQA, with the packed ternary experts' memory vs full precision."""
from __future__ import annotations

import gradio as gr

from .vl_ui import build_tab

TITLE = "MoTE (ternary experts)"
INTRO = """**MoTE**: each even layer of SmolLM2-135M keeps its frozen full-precision FFN as a shared expert
and adds top-1 routed experts with weights in {-1, 0, +1} (packed 2 bits per weight, unpacked only
for experts that get tokens). The model loads on the first question."""


def memory_markdown() -> str:
    from zoo.pipelines.vl_demo import expert_memory, get_system

    try:
        memory = expert_memory(get_system("mote")[0])
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from None
    return (f"Routed expert memory: **{memory['ternary_mb']:.2f} MB** packed ternary "
            f"({memory['bits_per_weight']:.3f} bits/weight incl. scales) vs **{memory['bf16_mb']:.2f} MB** "
            f"for the same experts in bf16 ({memory['bf16_mb'] / memory['ternary_mb']:.1f}x).")


def build() -> None:
    def extra():
        memory = gr.Markdown(elem_id="mote-memory")
        gr.Button("Show expert memory", elem_id="mote-show-memory").click(memory_markdown, None, memory,
                                                                           api_name="mote_memory")

    build_tab("mote", INTRO, extra)
