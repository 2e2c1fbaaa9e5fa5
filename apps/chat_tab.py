"""Gallery tab: chat with SmolLM2-135M-Instruct upcycled to an XMoE (16 fine-grained experts per
layer, threshold routing, routers trained by `python -m benchmarks.xmoe`), and see where every
token of the last reply was routed, layer by layer.

The model loads on the first message (about 5 s from the fp32 cache; the first use ever also
converts the GGUF, with a progress bar). Replies stream token by token through transformers'
TextIteratorStreamer; once a reply is complete, one teacher-forced forward over the conversation
gives the routing of each of its tokens (zoo.pipelines.routing_trace).

Up to CHAT_CONCURRENCY replies are generated at once, on the one shared model: generation keeps its
state (KV cache, streamer, sampling) per call, and the MoE layers keep their routing per thread
(zoo.core.context), so a reply is the same whether it is generated alone or beside others
(tests/test_gallery_limits.py). `python -m benchmarks.gallery_chat` measures the time to the last of N
concurrent replies.
"""
from __future__ import annotations

import threading

import gradio as gr
import torch

TITLE = "XMoE chat (SmolLM2)"
MAX_PROMPT_TOKENS = 1024  # a longer conversation is refused with a message, never truncated
DEFAULT_NEW_TOKENS = 64
# replies generated at once; on 2 cores the threads overlap each other's Python overhead and matrix
# products: limits 2, 4 and 8 all halved the time to the last of 20 replies (benchmarks/gallery_chat.py),
# and beyond that each reply only streams slower
CHAT_CONCURRENCY = 4

_state: dict[str, object] = {}
_load_lock = threading.Lock()


def load_model(progress=None):
    """(model, tokenizer, note) loaded once per process; the note says which routers are in use."""
    from zoo.pipelines.xmoe_smollm2 import ROUTERS_FILE, load_xmoe_smollm2, read_routers

    with _load_lock:
        if "model" not in _state:
            routers, note = ROUTERS_FILE, None
            try:
                read_routers(ROUTERS_FILE)
            except (FileNotFoundError, ValueError) as error:  # no or damaged router file: still chat, and say so
                routers, note = None, f"**Untrained routers** (uniform probabilities): {error}"
            try:
                model, tokenizer, meta = load_xmoe_smollm2(routers=routers, progress=progress or False)
            except (FileNotFoundError, ValueError) as error:
                raise gr.Error(f"Cannot load the XMoE SmolLM2 model: {error}") from error
            _state.update(model=model, tokenizer=tokenizer, note=note or _trained_note(meta))
    return _state["model"], _state["tokenizer"], _state["note"]


def _trained_note(meta: dict) -> str:
    if not meta:
        return "Routers trained by `python -m benchmarks.xmoe`."
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in meta.items() if isinstance(v, (int, float, str))]
    return "Routers trained by `python -m benchmarks.xmoe` (" + ", ".join(parts) + ")."


def message_text(content) -> str:
    """Text of a Chatbot message: a plain string, or gradio's list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    texts = []
    for part in content or []:
        if not (isinstance(part, dict) and isinstance(part.get("text"), str)):
            raise gr.Error(f"This chat handles text only; the conversation holds a {type(part).__name__} part: {part!r:.80}")
        texts.append(part["text"])
    return "".join(texts)


def prompt_ids(tokenizer, history: list[dict], message: str) -> torch.Tensor:
    conversation = [{"role": m["role"], "content": message_text(m["content"])} for m in history]
    conversation.append({"role": "user", "content": message})
    ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt")
    ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]  # [1, S]
    if ids.shape[1] > MAX_PROMPT_TOKENS:
        raise gr.Error(
            f"The conversation is {ids.shape[1]} tokens long; this demo takes at most {MAX_PROMPT_TOKENS}. "
            "Press Clear to start a new conversation."
        )
    return ids


def respond(message: str, history: list[dict] | None, max_new_tokens: float, temperature: float,
            progress=gr.Progress()):
    """Stream the reply, then draw the routing of its tokens. Yields (chat, textbox, plot, routing, stats)."""
    from transformers import TextIteratorStreamer

    from zoo.apps.routing_heatmap import routing_figure
    from zoo.pipelines.routing_trace import trace_routing

    if not isinstance(message, str) or not message.strip():
        raise gr.Error("The message is empty: type something to say to the model.")
    max_new_tokens = int(max_new_tokens)
    if not 1 <= max_new_tokens <= 512:
        raise gr.Error(f"max new tokens must be between 1 and 512, got {max_new_tokens}")
    if temperature < 0:
        raise gr.Error(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    model, tokenizer, note = load_model(progress)
    history = list(history or [])
    ids = prompt_ids(tokenizer, history, message)
    history += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    yield history, "", gr.skip(), gr.skip(), gr.skip()

    sampling = {"do_sample": True, "temperature": float(temperature), "top_p": 0.9} if temperature > 0 else {"do_sample": False}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict[str, object] = {}

    def generate() -> None:
        try:
            with torch.no_grad():
                result["ids"] = model.generate(ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                               max_new_tokens=max_new_tokens, **sampling)
        except Exception as error:  # reported to the user below; the streamer must still end
            result["error"] = error
            streamer.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    for piece in streamer:
        history[-1]["content"] += piece
        yield history, "", gr.skip(), gr.skip(), gr.skip()
    worker.join()
    if "error" in result:
        raise gr.Error(f"Generation failed: {type(result['error']).__name__}: {result['error']}")
    full = result["ids"]  # [1, S + new]
    if full.shape[1] == ids.shape[1] or (full.shape[1] == ids.shape[1] + 1 and int(full[0, -1]) in _eos_ids(model)):
        history[-1]["content"] = history[-1]["content"] or "(the model ended its reply at once)"
        yield history, "", None, None, "The reply has no tokens to show routing for."
        return
    if int(full[0, -1]) in _eos_ids(model):
        full = full[:, :-1]  # the end-of-turn token is not part of the reply's text
    trace = trace_routing(model, tokenizer, full, start=ids.shape[1])
    stats = (
        f"**Last reply**: {len(trace.tokens)} tokens · {trace.mean_experts_per_token:.2f} of {trace.num_experts} experts "
        f"per token on average · expert FLOPs {trace.expert_compute_fraction:.0%} of the dense FFN\n\n{note}"
    )
    yield history, "", routing_figure(trace), trace.to_dict(), stats


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()


def build() -> None:
    gr.Markdown(
        "Chat with **SmolLM2-135M-Instruct upcycled to an XMoE**: each dense FFN is split into 16 experts "
        "of 96 hidden units, and a threshold router (XMoE) sends each token to as few experts as it needs. "
        "After each reply, the heatmap shows which expert each token went to first in every layer, and how "
        "many experts it used. The model loads on the first message. "
        f"Limits: up to {CHAT_CONCURRENCY} replies are generated at once (more wait in the queue), "
        f"prompts up to {MAX_PROMPT_TOKENS} tokens, replies up to 512 new tokens."
    )
    chatbot = gr.Chatbot(label="XMoE SmolLM2", height=360, elem_id="xmoe-chat")
    with gr.Row():
        textbox = gr.Textbox(placeholder="Ask something, e.g. What is the capital of France?", show_label=False,
                             scale=5, elem_id="xmoe-message")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="xmoe-send")
        clear = gr.Button("Clear", scale=1)
    with gr.Accordion("Generation settings", open=False):
        max_new_tokens = gr.Slider(1, 512, value=DEFAULT_NEW_TOKENS, step=1, label="max new tokens")
        temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
    stats = gr.Markdown("Send a message to see the routing of the reply.", elem_id="xmoe-stats")
    plot = gr.Plot(label="routing of the last reply")
    with gr.Accordion("Routing data of the last reply (JSON)", open=False):
        routing = gr.JSON(label="routing")

    inputs = [textbox, chatbot, max_new_tokens, temperature]
    outputs = [chatbot, textbox, plot, routing, stats]
    textbox.submit(respond, inputs, outputs, api_name="chat", concurrency_id="xmoe-chat",
                   concurrency_limit=CHAT_CONCURRENCY)
    send.click(respond, inputs, outputs, api_name=False, concurrency_id="xmoe-chat",
               concurrency_limit=CHAT_CONCURRENCY)
    clear.click(lambda: ([], "", None, None, "Send a message to see the routing of the reply."), None, outputs,
                api_name=False)
