"""MoVA's coarse routing: the LLM's routing answer -> an expert mask, and the routing labels it is trained on.

    pass 1: "...A. DINOv2: ... B. Vary: ... If no models are selected, just answer 'none'. Question: <q>"
            -> LLM answer text, e.g. "B, D" | "none" | "I think (a) and c." | "<junk>"
    parse_routing_answer(text, letters) -> [1, 3]     (first `max_experts` items; junk -> [] = base only)
    routing_mask(answers, letters)      -> bool [B, E], the zoo.core external expert mask pass 2 routes with

    routing_labels(expert_losses [N, E], base_losses [N]) -> bool [N, E]   (paper §3.4: expert j is useful for
        sample i when L_ij < L_i0, the base-only loss; at most 3, the largest gains first)

The release keeps the first 3 comma-separated items and maps each letter; here an item may also be the
expert's name, "(B)", "b." or "B. Vary", items may be separated by commas, semicolons, "and" or spaces, and
anything unreadable is skipped: the parser never raises on text, so a babbling LLM degrades to the base
encoder alone instead of failing the request.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch

MAX_ROUTED_EXPERTS = 3  # the release's prompt asks for "the most 3 suitable models"
NONE_ANSWERS = ("none", "no model", "no models", "nothing")
_PUNCTUATION = "()[]{}\"'.:,!?"
_SEPARATORS = re.compile(r"\s*(?:,|;|/|\n|\band\b|&|\+)\s*", re.IGNORECASE)


def _item_expert(item: str, letters: Sequence[str], names: Sequence[str]) -> int | None:
    """One answer item -> an expert index, or None: the expert's name, or a letter alone in its first word
    ("B", "(b)", "b.", "B. Vary"); a word that merely starts with a letter ("Apple") is not a choice."""
    item = item.strip().strip("\"'`*").strip()
    if not item:
        return None
    lowered = item.lower()
    for index, name in enumerate(names):
        if lowered == name.lower() or lowered.endswith(" " + name.lower()):
            return index
    first = item.split()[0].strip(_PUNCTUATION)
    if len(first) != 1 or not first.isalpha():
        return None
    letter = first.upper()
    return letters.index(letter) if letter in letters else None


def parse_routing_answer(text: str, letters: Sequence[str], names: Sequence[str] = (),
                         max_experts: int = MAX_ROUTED_EXPERTS) -> list[int]:
    """The experts (indices into `letters`) a routing answer chooses, in the order given, without repeats.
    "none", an empty answer or one that names no known expert -> [] (the base encoder only)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"a routing answer must be text (str), got {type(text).__name__}")
    if isinstance(max_experts, bool) or not isinstance(max_experts, int) or max_experts < 0:
        raise ValueError(f"max_experts must be an integer >= 0, got {max_experts!r}")
    answer = text.strip()
    if not answer or answer.lower().strip(" .!'\"").startswith(NONE_ANSWERS):
        return []
    items = [piece for piece in _SEPARATORS.split(answer) if piece]
    words = items[0].split() if len(items) == 1 else []
    if len(words) > 1 and all(len(w.strip(_PUNCTUATION)) == 1 for w in words):
        items = words  # "A C", "B D E": letters separated by spaces only
    chosen: list[int] = []
    for item in items[:max_experts]:  # the release: the first k items count, chosen or not
        expert = _item_expert(item, letters, names)
        if expert is not None and expert not in chosen:
            chosen.append(expert)
    return chosen


def routing_mask(answers: Sequence[str], letters: Sequence[str], names: Sequence[str] = (),
                 max_experts: int = MAX_ROUTED_EXPERTS) -> torch.Tensor:
    """One routing answer per sample -> bool [B, E] (True = allowed), the external expert mask of zoo.core."""
    if isinstance(answers, str):
        raise TypeError("routing_mask takes one answer per sample (a list of str), got a single str")
    mask = torch.zeros(len(answers), len(letters), dtype=torch.bool)
    for row, answer in enumerate(answers):
        mask[row, parse_routing_answer(answer, letters, names, max_experts)] = True
    return mask


def routing_labels(expert_losses: torch.Tensor, base_losses: torch.Tensor,
                   max_experts: int = MAX_ROUTED_EXPERTS) -> torch.Tensor:
    """Paper §3.4: expert j is useful for sample i iff its model's loss L_ij < L_i0 (the base-only model's);
    of the useful ones at most `max_experts`, largest improvement first (ties: lower expert index).
    expert_losses [N, E], base_losses [N] -> bool [N, E]."""
    for name, value, dims in (("expert_losses", expert_losses, 2), ("base_losses", base_losses, 1)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != dims:
            raise ValueError(f"routing_labels: {name} must be a {dims}-D float tensor, got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"routing_labels: {name} holds NaN or inf")
    if base_losses.shape[0] != expert_losses.shape[0]:
        raise ValueError(f"routing_labels: {expert_losses.shape[0]} samples of expert losses but "
                         f"{base_losses.shape[0]} base losses")
    if isinstance(max_experts, bool) or not isinstance(max_experts, int) or max_experts < 0:
        raise ValueError(f"max_experts must be an integer >= 0, got {max_experts!r}")
    gain = base_losses[:, None] - expert_losses  # [N, E], > 0 where the expert helps
    order = torch.sort(gain, dim=-1, descending=True, stable=True).indices[:, :max_experts]  # [N, k]
    labels = torch.zeros_like(gain, dtype=torch.bool)
    labels.scatter_(1, order, torch.ones_like(order, dtype=torch.bool))
    return labels & (gain > 0)


__all__ = ["MAX_ROUTED_EXPERTS", "parse_routing_answer", "routing_labels", "routing_mask"]
