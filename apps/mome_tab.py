"""Gallery tab: MoME speech recognition at a compression rate the user picks.

Named API endpoint (gradio_client: `client.predict(audio, rate, api_name="/mome_transcribe")`): audio file
+ rate -> MoME transcript, Whisper tiny.en transcript, audio-token line, experts-per-rate table. Element ids
`mome-audio`, `-rate`, `-transcribe`, `-transcript`, `-whisper`, `-tokens`, `-experts` let a browser test find
the widgets.
"""
from __future__ import annotations

import gradio as gr

TITLE = "MoME (speech)"
INTRO = """**MoME** (Mixture of Matryoshka Experts): frozen Whisper tiny.en frames are compressed 2x-16x
(fewer audio tokens for the LLM), projected per rate, and read by frozen SmolLM2-135M with small
bottleneck experts beside every attention block. One router and one expert set serve every rate.
Trained here for minutes on espeak-ng speech only: it catches the first words and the topic, then drifts
(word error rate above 1 on real voices, see the README). Whisper tiny.en's own transcript is shown beside
it as the reference. The models load on the first clip."""


def run(audio, rate):
    from zoo.pipelines.speech_demo import transcribe

    try:
        result = transcribe(audio, rate)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from None
    line = (f"**{result['audio_tokens']} audio tokens** for {result['seconds']} s of audio at rate "
            f"{result['rate']} (Whisper's 50 frames/s divided by the rate)")
    return (result["transcript"], result["whisper_transcript"], line,
            gr.update(value=result["rows"], headers=result["headers"]))


def build() -> None:
    from zoo.pipelines.speech_demo import MAX_SECONDS, rates

    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                             label=f"speech (upload or record; 8-48 kHz, at most {MAX_SECONDS:.0f} s)",
                             elem_id="mome-audio")
            rate = gr.Radio(choices=rates(), value=rates()[1], label="compression rate (audio frames per token)",
                            elem_id="mome-rate")
            go = gr.Button("Transcribe", variant="primary", elem_id="mome-transcribe")
        with gr.Column():
            transcript = gr.Textbox(label="MoME transcript", elem_id="mome-transcript")
            whisper = gr.Textbox(label="Whisper tiny.en (reference: its own decoder)", elem_id="mome-whisper")
            tokens = gr.Markdown(elem_id="mome-tokens")
            experts = gr.Dataframe(label="audio tokens' share of routed slots per expert, at every rate "
                                         "(all MoME layers)", interactive=False, elem_id="mome-experts")
    go.click(run, [audio, rate], [transcript, whisper, tokens, experts], api_name="mome_transcribe")
