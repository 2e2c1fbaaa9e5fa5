"""What the MoVA gallery tab computes: load the shipped tiny MoVA once, answer a question about an image with
both passes of `MovaForConditionalGeneration.generate` (pass 1: the LLM's routing answer -> the expert mask;
pass 2: the answer with that mask), and show the letters the LLM chose and the MoV-Adapter's gate weights over
the allowed experts in each block.

    answer(image, "what shape is in the image?")
    -> {"answer", "routing_answer" (pass 1's text), "chosen" (expert names), "letters", "headers", "rows"}
"""
from __future__ import annotations

import threading

import torch

from zoo.core.precision import autocast

from . import vl_easyvqa as vqa
from .vl_demo import checked_image_question

MAX_NEW_TOKENS = 8  # easy-VQA answers are one or two words
_system: dict = {}
_lock = threading.Lock()


def get_mova():
    """(model, processor, shipped metadata) of models/mova/trained/, loaded on first use."""
    from .train_mova import load_shipped

    with _lock:
        if not _system:
            model, processor, metadata = load_shipped()
            _system.update(model=model, processor=processor, metadata=metadata)
        return _system["model"], _system["processor"], _system["metadata"]


def pool_rows(processor) -> list[list[str]]:
    """[letter, expert, description] for every expert of the pool, as the routing prompt lists them."""
    return [[letter, name, description] for letter, name, description
            in zip(processor.expert_letters, processor.expert_names, processor.expert_descriptions)]


def gate_rows(gate_weights, names: list[str]) -> list[list]:
    """The MoV-Adapter blocks' gate weights of one image -> [[block, weight per expert...], ...] (0 = not allowed)."""
    rows = []
    for block, weights in enumerate(gate_weights or ()):
        values = [0.0] * len(names) if weights is None else [round(float(w), 3) for w in weights[0]]
        rows.append([block, *values])
    return rows


@torch.no_grad()
def answer(image, question: str | None) -> dict:
    """Both passes on one image + question; ValueError naming a bad image or question."""
    picture, question = checked_image_question(image, question)
    model, processor, _ = get_mova()
    tokenizer = processor.tokenizer
    batch = processor(images=[picture], questions=[question])
    stop_ids = [tokenizer.convert_tokens_to_ids(vqa.END), tokenizer.eos_token_id]
    with autocast():
        out = model.generate(**batch, tokenizer=tokenizer, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                             eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
        answer_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "question_input_ids",
                                               "question_attention_mask")}
        gates = model(**answer_inputs, expert_mask=out.expert_mask, logits_to_keep=1).gate_weights
    new_ids = out.sequences[0, batch["input_ids"].shape[1]:]
    names = list(model.config.expert_names)
    letters = [letter for letter, on in zip(processor.expert_letters, out.expert_mask[0].tolist()) if on]
    return {"answer": tokenizer.decode(new_ids, skip_special_tokens=True).strip(),
            "routing_answer": out.routing_answers[0].strip(), "chosen": out.chosen_experts[0], "letters": letters,
            "headers": ["block", *names], "rows": gate_rows(gates, names)}


def samples(count: int = 24) -> list[tuple[str, str, str]]:
    """(image path, question, answer) from the easy-VQA test split, never trained on."""
    from .vl_demo import easyvqa_samples

    return easyvqa_samples(count)
