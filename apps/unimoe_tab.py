"""Gallery tab: Uni-MoE answers a question about an image, a video, a clip of speech or sound, or several at once.

Named API endpoints (gradio_client): `client.predict(choice, api_name="/unimoe_sample")` -> (image, video, audio,
question) of a test-split sample; `client.predict(question, image, video, audio, api_name="/unimoe_ask")` ->
(answer, routing summary, routing table). Element ids `unimoe-sample`, `-image`, `-video`, `-audio`, `-question`,
`-ask`, `-answer`, `-summary`, `-routing` let a browser test find the widgets.
"""
from __future__ import annotations

import gradio as gr

from .upload_limits import (MAX_IMAGE_PIXELS, MAX_VIDEO_PIXELS, check_file_size, check_gif_file, check_image_file,
                            is_file, limits_markdown)

TITLE = "Uni-MoE (image, video, speech, audio)"
INTRO = """**Uni-MoE**: every modality enters one language model (frozen SmolLM2-135M) whose top FFNs are
four LoRA experts, each grown from a dense model trained on one modality group (base, image, speech,
video+audio), with a top-2 router. Give an image, a video (animated GIF), a clip of speech or sound (DTMF keys,
beeps), or several, and a short question; for a spoken question leave the question empty. Trained here in
minutes on easy-VQA, espeak-ng speech, moving shapes and tones; the samples are from the test split."""


def _file(value):
    if value is None:
        return None
    return value if isinstance(value, str) else getattr(value, "name", None) or value.get("path")


def pick(choice):
    from zoo.pipelines.unimoe_demo import samples

    for sample in samples():
        if sample["label"] == choice:
            return sample.get("image"), sample.get("video"), sample.get("audio"), sample["question"]
    raise gr.Error(f"unknown sample {choice!r}")


def check_uploads(image, video, audio) -> None:
    """The gallery's limits, from file headers; the audio's length is checked from its header by the pipeline."""
    from zoo.pipelines.unimoe_demo import MAX_VIDEO_FRAMES

    if is_file(image):
        check_image_file(image, MAX_IMAGE_PIXELS)
    if is_file(video):
        check_gif_file(video, MAX_VIDEO_FRAMES)
    if is_file(audio):
        check_file_size(audio, "audio")


def ask(question, image, video, audio):
    from zoo.pipelines.unimoe_demo import answer

    try:
        check_uploads(image, _file(video), audio)
        result = answer(question, image=image, video=_file(video), audio=audio)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from None
    summary = "; ".join(f"**{name}** tokens: " + ", ".join(f"{h.split()[0]} {s:.2f}" for h, s in
                                                        zip(result["headers"][3:], shares))
                        for name, shares in result["shares"].items())
    return result["answer"], f"asked: *{result['question']}* with {', '.join(result['media']) or 'text only'}. " \
        + summary, gr.update(value=result["rows"], headers=result["headers"])


def build() -> None:
    from zoo.pipelines.unimoe_demo import MAX_AUDIO_SECONDS, MAX_VIDEO_FRAMES, samples

    gr.Markdown(f"{INTRO}\n\n{limits_markdown()} Video: an animated GIF of at most {MAX_VIDEO_FRAMES} frames "
                f"and {MAX_VIDEO_PIXELS / 1e6:.0f} MP over all frames. Audio: at most {MAX_AUDIO_SECONDS:.0f} s.")
    choices = [s["label"] for s in samples()]
    with gr.Row():
        with gr.Column():
            sample = gr.Dropdown(choices=choices, value=None, label="a test-split sample (or upload your own below)",
                                 elem_id="unimoe-sample")
            image = gr.Image(type="filepath", image_mode=None, label=f"image (up to {MAX_IMAGE_PIXELS / 1e6:.1f} MP)",
                             elem_id="unimoe-image")  # undecoded: `ask` checks the header first
            video = gr.File(file_types=[".gif"], label="video (animated GIF)", elem_id="unimoe-video")
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                             label=f"speech or sound (at most {MAX_AUDIO_SECONDS:.0f} s)", elem_id="unimoe-audio")
            question = gr.Textbox(label="question (empty when it is spoken)", elem_id="unimoe-question")
            go = gr.Button("Ask", variant="primary", elem_id="unimoe-ask")
        with gr.Column():
            reply = gr.Textbox(label="answer", elem_id="unimoe-answer")
            summary = gr.Markdown(elem_id="unimoe-summary")
            routing = gr.Dataframe(label="share of routed slots per expert, per MoE layer and token modality",
                                   interactive=False, elem_id="unimoe-routing")
    sample.change(pick, sample, [image, video, audio, question], api_name="unimoe_sample")
    go.click(ask, [question, image, video, audio], [reply, summary, routing], api_name="unimoe_ask")
