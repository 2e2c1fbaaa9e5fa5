"""Gallery tab: MoVA picks its vision experts for each question (coarse routing by the LLM), then fuses them
(the MoV-Adapter's gate).

Named API endpoints (gradio_client): `client.predict(choice, api_name="/mova_sample")` -> (image, question) of an
easy-VQA test sample; `client.predict(image, question, api_name="/mova_answer")` -> (answer, pass-1 summary, gate
table). Element ids `mova-image`, `-question`, `-ask`, `-answer`, `-routing`, `-gates` let a browser test find the
widgets.
"""
from __future__ import annotations

import gradio as gr

from .upload_limits import MAX_IMAGE_PIXELS, check_image_file, is_file, limits_markdown
from .vl_ui import sample_chooser, sample_dropdown

TITLE = "MoVA (vision experts chosen per question)"
INTRO = """**MoVA**: the language model (frozen SmolLM2-135M) first reads the question and a few pooled tokens of
the base encoder (MobileNetV2) and answers with the letters of the vision experts it wants (pass 1, a routing
LoRA); the MoV-Adapter then fuses only those experts' features into the base tokens, weighted by a gate on the
question (MiniLM) and the image, and the model answers (pass 2). Experts: EfficientNet-Lite0, an early
MobileNetV2 stage that keeps colour, and the MTCNN face network. Trained here in minutes on easy-VQA;
colour questions stay at chance for every condition (see the model card)."""


def run(image, question):
    from zoo.pipelines.mova_demo import answer

    try:
        if is_file(image):
            check_image_file(image, MAX_IMAGE_PIXELS)  # from the header: nothing decoded yet
        result = answer(image, question)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from None
    chosen = ", ".join(f"{letter} ({name})" for letter, name in zip(result["letters"], result["chosen"])) \
        or "none: the base encoder alone"
    summary = f"**pass 1** answered `{result['routing_answer'] or '(nothing)'}` → experts: {chosen}"
    return result["answer"], summary, gr.update(value=result["rows"], headers=result["headers"])


def build() -> None:
    from zoo.pipelines.mova_demo import samples

    gr.Markdown(f"{INTRO}\n\n{limits_markdown()}")
    examples = samples()
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", image_mode=None, elem_id="mova-image",
                             label=f"image (up to {MAX_IMAGE_PIXELS / 1e6:.1f} MP; shrunk to the model's input size)")
            question = gr.Textbox(label="question", placeholder="what shape is in the image?", elem_id="mova-question")
            pick = sample_dropdown(examples)
            ask = gr.Button("Ask", variant="primary", elem_id="mova-ask")
        with gr.Column():
            reply = gr.Textbox(label="answer", elem_id="mova-answer")
            summary = gr.Markdown(elem_id="mova-routing")
            gates = gr.Dataframe(label="MoV-Adapter gate weight per block over the chosen experts (0: not chosen)",
                                 interactive=False, elem_id="mova-gates")
    pick.change(sample_chooser(examples), pick, [image, question], api_name="mova_sample")
    ask.click(run, [image, question], [reply, summary, gates], api_name="mova_answer")
    question.submit(run, [image, question], [reply, summary, gates], api_visibility="private")
