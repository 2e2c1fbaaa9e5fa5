"""What the vision-language gallery tabs compute: load a shipped system once, answer a question about
an image, and summarise where image vs text tokens were routed; for MoTE, expert memory vs bf16."""
from __future__ import annotations

import threading

import torch

from zoo.core.precision import autocast
from zoo.multimodal.processing import IMAGE_TOKEN, load_image
from zoo.core.modalities import MODALITY_IDS

from . import vl_easyvqa as vqa

MAX_QUESTION_CHARS = 300
_models: dict[str, tuple] = {}
_lock = threading.Lock()


def get_system(system: str):
    """(model, processor, metadata), loaded on first use; MoTE's experts are packed to 2 bits."""
    with _lock:
        if system not in _models:
            model, processor, metadata = vqa.load_shipped(system)
            if system == "mote":
                model.pack_experts_()
            _models[system] = (model, processor, metadata)
        return _models[system]


def easyvqa_samples(count: int = 24) -> list[tuple[str, str, str]]:
    """(image path, question, answer) from the easy-VQA test split (the first `count` questions)."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    return [(paths[image_ids[i]], questions[i], answers[i]) for i in range(count)]


@torch.no_grad()
def greedy_answer(model, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, stop_ids, max_new_tokens: int = 8,
                  **media):
    """One sample [1, L] through a VL MoE model (MultimodalMoeForConditionalGeneration): KV-cached greedy
    decoding until a stop id -> (new token ids, per MoE layer: (routing of the prompt, its modality ids [L])).
    The routing is each MoE layer's `last_routing` right after the prompt's forward (this thread's). `media`:
    the model's other inputs of the prompt step (Uni-MoE: pixel_values_videos, input_features, ...)."""
    if input_ids.shape[0] != 1:
        raise ValueError(f"greedy_answer takes one sample (input_ids [1, L]), got batch {input_ids.shape[0]}; "
                         "use generate() for batches")
    out = model(input_ids=input_ids, pixel_values=pixel_values, use_cache=True, logits_to_keep=1, **media)
    prompt_routing = [(f.last_routing, out.modality_ids.reshape(-1)) for f in model.moe_feed_forwards()]
    new_ids = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        if token in stop_ids:
            break
        new_ids.append(token)
        if len(new_ids) == max_new_tokens:
            break
        out = model(input_ids=input_ids.new_tensor([[token]]), past_key_values=out.past_key_values, use_cache=True,
                    logits_to_keep=1)
    return new_ids, prompt_routing


def routing_tables(prompt_routing, num_experts: int, modalities=("image", "text")) -> tuple[list[list], dict[str, list[float]]]:
    """Per MoE layer and modality: share of routed slots per expert; plus the all-layer share per modality."""
    rows, totals = [], {}
    for layer, (routing, modality_ids) in prompt_routing:
        for name in modalities:
            tokens = modality_ids == MODALITY_IDS[name]
            if not tokens.any():
                continue
            chosen = routing.indices[tokens][routing.mask[tokens]]
            counts = torch.bincount(chosen, minlength=num_experts).float()
            totals[name] = [a + b for a, b in zip(totals.get(name, [0.0] * num_experts), counts.tolist())]
            rows.append([layer, name, int(tokens.sum())] + [round(float(c / counts.sum()), 3) for c in counts])
    shares = {name: [round(c / max(sum(v), 1), 3) for c in v] for name, v in totals.items()}
    return rows, shares


def checked_image_question(image, question: str | None):
    """-> (the decoded image, the stripped question); ValueError naming what is wrong with either."""
    if image is None:
        raise ValueError("no image: upload one or pick an easy-VQA sample")
    question = (question or "").strip()
    if not question:
        raise ValueError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    if IMAGE_TOKEN in question:
        raise ValueError(f"the question may not contain {IMAGE_TOKEN}: the image is attached once, by the app")
    return load_image(image), question


def answer(system: str, image, question: str) -> dict:
    """-> {"answer", "rows" (layer, modality, tokens, share per expert), "shares", "headers"}; ValueError on bad input."""
    picture, question = checked_image_question(image, question)
    model, processor, _ = get_system(system)
    batch = processor(images=[picture], text=processor.prompt(question))
    end_id = processor.tokenizer.convert_tokens_to_ids(vqa.END)
    with autocast():
        new_ids, routing = greedy_answer(model, batch["input_ids"], batch["pixel_values"],
                                         {end_id, processor.tokenizer.eos_token_id})
    rows, shares = routing_tables(list(zip(model.moe_layer_ids, routing)), model.config.num_experts)
    headers = ["layer", "modality", "tokens"] + [f"expert {e}" for e in range(model.config.num_experts)]
    return {"answer": processor.tokenizer.decode(new_ids, skip_special_tokens=True).strip(), "rows": rows,
            "shares": shares, "headers": headers}


def expert_memory(model) -> dict[str, float]:
    """Packed ternary expert bytes vs the same experts stored in bf16 (MoE-LLaVA-style full precision)."""
    packed = weights = 0
    for ffn in model.moe_feed_forwards():
        experts = ffn.moe.experts
        packed += sum(b.numel() * b.element_size() for n, b in experts.named_buffers() if n.endswith(("_packed", "_scale")))
        weights += experts.num_experts * 3 * experts.hidden_size * experts.intermediate_size
    return {"ternary_mb": packed / 1e6, "bf16_mb": weights * 2 / 1e6, "bits_per_weight": packed * 8 / max(weights, 1)}
