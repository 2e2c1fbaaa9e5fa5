"""The UI both vision-language tabs share (MoIIE, MoTE): image + question in, answer + routing by modality out.

Named API endpoints per system (gradio_client: `client.predict(..., api_name="/moiie_answer")`):
`/<system>_sample` (dropdown choice -> image, question) and `/<system>_answer` (image, question ->
answer, per-modality summary, routing table). Element ids `<system>-image`, `-question`, `-ask`,
`-answer`, `-routing` let a browser test find the widgets.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import gradio as gr

from .upload_limits import MAX_IMAGE_PIXELS, check_image_file, is_file, limits_markdown


def run(system: str, image, question: str):
    from zoo.pipelines.vl_demo import answer

    try:
        if is_file(image):
            check_image_file(image, MAX_IMAGE_PIXELS)  # from the header: nothing decoded yet
        result = answer(system, image, question)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from None
    shares = result["shares"]
    lines = [f"**{name} tokens** → experts " + ", ".join(f"{e}: {s:.0%}" for e, s in enumerate(v)) for name, v in shares.items()]
    table = gr.update(value=result["rows"], headers=result["headers"])
    return result["answer"], "\n\n".join(lines), table


def servable_copy(path: str) -> str:
    """The sample file copied (bytes unchanged) under the temp dir: gradio serves only files below the
    working directory or the temp dir, and the easy-VQA package usually lives elsewhere."""
    folder = Path(tempfile.gettempdir()) / "zoo-easyvqa-samples"
    folder.mkdir(exist_ok=True)
    target = folder / Path(path).name
    if not target.is_file():
        shutil.copyfile(path, target)
    return str(target)


def sample_dropdown(samples: list[tuple[str, str, str]]) -> gr.Dropdown:
    return gr.Dropdown(choices=[f"{i}: {q} ({a})" for i, (_, q, a) in enumerate(samples)],
                       label="or pick an easy-VQA test sample (expected answer in brackets)")


def sample_chooser(samples: list[tuple[str, str, str]]):
    """The dropdown's callback: "index: question (answer)" -> (a servable copy of the image, the question)."""
    def choose(choice):
        if not choice:
            return gr.update(), gr.update()
        index = choice.split(":")[0]
        if not index.isdigit() or int(index) >= len(samples):
            raise gr.Error(f"unknown easy-VQA sample {choice!r}: pick one from the list")
        path, question, _ = samples[int(index)]
        return servable_copy(path), question
    return choose


def build_tab(system: str, intro: str, extra_outputs=None) -> None:
    from zoo.pipelines.vl_demo import easyvqa_samples

    gr.Markdown(f"{intro}\n\n{limits_markdown()}")
    samples = easyvqa_samples()
    key = system.replace("-", "_")  # endpoint and element names
    with gr.Row():
        with gr.Column():
            # image_mode=None: gradio hands over the file undecoded, so `run` checks its size first
            image = gr.Image(type="filepath", image_mode=None, elem_id=f"{key}-image",
                             label=f"image (up to {MAX_IMAGE_PIXELS / 1e6:.1f} MP; shrunk to the model's input size)")
            question = gr.Textbox(label="question", placeholder="what shape is in the image?",
                                  elem_id=f"{key}-question")
            pick = sample_dropdown(samples)
            ask = gr.Button("Ask", variant="primary", elem_id=f"{key}-ask")
        with gr.Column():
            reply = gr.Textbox(label="answer", elem_id=f"{key}-answer")
            summary = gr.Markdown()
            table = gr.Dataframe(label="routing per MoE layer: share of each modality's slots per expert",
                                 interactive=False, elem_id=f"{key}-routing")
            if extra_outputs is not None:
                extra_outputs()

    choose = sample_chooser(samples)

    def ask_model(image, question):
        return run(system, image, question)

    pick.change(choose, pick, [image, question], api_name=f"{key}_sample")
    ask.click(ask_model, [image, question], [reply, summary, table], api_name=f"{key}_answer")
    question.submit(ask_model, [image, question], [reply, summary, table], api_visibility="private")
