"""The UI both vision-language tabs share (MoIIE, MoTE): image + question in, answer + routing by modality out."""
from __future__ import annotations

import gradio as gr


def run(system: str, image, question: str):
    from zoo.pipelines.vl_demo import answer

    try:
        result = answer(system, image, question)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from None
    shares = result["shares"]
    lines = [f"**{name} tokens** → experts " + ", ".join(f"{e}: {s:.0%}" for e, s in enumerate(v)) for name, v in shares.items()]
    table = gr.update(value=result["rows"], headers=result["headers"])
    return result["answer"], "\n\n".join(lines), table


def build_tab(system: str, intro: str, extra_outputs=None) -> None:
    from zoo.pipelines.vl_demo import easyvqa_samples

    gr.Markdown(intro)
    samples = easyvqa_samples()
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", label="image (any size; shrunk to 4096 px max side, then 128 px)")
            question = gr.Textbox(label="question", placeholder="what shape is in the image?")
            pick = gr.Dropdown(choices=[f"{i}: {q} ({a})" for i, (_, q, a) in enumerate(samples)],
                               label="or pick an easy-VQA test sample (expected answer in brackets)")
            ask = gr.Button("Ask", variant="primary")
        with gr.Column():
            reply = gr.Textbox(label="answer")
            summary = gr.Markdown()
            table = gr.Dataframe(label="routing per MoE layer: share of each modality's slots per expert",
                                 interactive=False)
            if extra_outputs is not None:
                extra_outputs()

    def choose(choice):
        if not choice:
            return gr.update(), gr.update()
        path, q, _ = samples[int(choice.split(":")[0])]
        return path, q

    pick.change(choose, pick, [image, question])
    ask.click(lambda i, q: run(system, i, q), [image, question], [reply, summary, table])
    question.submit(lambda i, q: run(system, i, q), [image, question], [reply, summary, table])
