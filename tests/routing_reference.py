"""Independent recomputations for the gallery tab tests: the routing table from one plain forward's router logits
(top-k by a loop over tokens), and whether a reply is what greedy decoding gives (one teacher-forced forward)."""
import torch

from zoo.core.modalities import MODALITY_IDS
from zoo.core.precision import autocast


def routing_rows(model, batch, modalities) -> list[list]:
    """(layer, modality, tokens, share per expert) for the prompt in `batch` (one sample)."""
    with torch.no_grad(), autocast():
        out = model(**batch, output_router_logits=True)
    k, experts = model.config.num_experts_per_tok, model.config.num_experts
    rows = []
    for layer, logits in zip(model.moe_layer_ids, out.router_logits):  # logits [T, E], -inf = not reachable
        for name in modalities:
            counts, tokens = [0] * experts, 0
            for t in range(logits.shape[0]):
                if int(out.modality_ids[0, t]) != MODALITY_IDS[name]:
                    continue
                tokens += 1
                ranked = sorted(range(experts), key=lambda e: -float(logits[t, e]))
                for e in ranked[:k]:
                    counts[e] += 1
            if tokens:
                rows.append([layer, name, tokens] + [c / (k * tokens) for c in counts])
    return rows


def reply_is_greedy(model, batch_with_reply, reply_ids: list[int], tie_tolerance: float = 0.0) -> bool:
    """Each reply token is the argmax of one forward over prompt + reply (the batch ends with the reply), or within
    `tie_tolerance` of it (bf16 near-ties: a cached decode step and one full forward round differently)."""
    with torch.no_grad(), autocast():
        logits = model(**batch_with_reply).logits[0].float()  # [L, V]
    steps = logits[-len(reply_ids) - 1:-1]  # [n, V]
    if tie_tolerance == 0:
        return steps.argmax(-1).tolist() == reply_ids  # exact: what it always was
    chosen = steps.gather(1, torch.tensor(reply_ids)[:, None])[:, 0]
    return bool((chosen >= steps.max(-1).values - tie_tolerance).all())
