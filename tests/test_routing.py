"""Routers against naive per-token references written here with plain Python loops (float64 math).

The references only use the routers' parameters (gate weights) and the paper's rules; nothing from
zoo besides the router under test. Ties go to the lower expert index."""
from __future__ import annotations

import math

import pytest
import torch

from zoo import MODALITY_IDS, ModalityRouter, ThresholdRouter, TopKRouter

pytestmark = pytest.mark.usefixtures("single_thread")

NEG_INF = float("-inf")


# ---------------------------------------------------------------- naive reference, one token at a time
def ref_logits(hidden: torch.Tensor, weight: torch.Tensor) -> list[list[float]]:
    x, w = hidden.double().tolist(), weight.double().tolist()
    return [[sum(a * b for a, b in zip(row, w_e)) for w_e in w] for row in x]


def ref_apply_mask(logits: list[list[float]], expert_mask) -> list[list[float]]:
    if expert_mask is None:
        return logits
    m = expert_mask.tolist()
    out = []
    for t, row in enumerate(logits):
        mrow = m[t] if isinstance(m[0], list) else m
        if expert_mask.dtype == torch.bool:
            out.append([v if allowed else NEG_INF for v, allowed in zip(row, mrow)])
        else:
            out.append([v + b for v, b in zip(row, mrow)])
    return out


def ref_softmax(row: list[float]) -> list[float]:
    top = max(row)
    ex = [0.0 if v == NEG_INF else math.exp(v - top) for v in row]
    total = sum(ex)
    return [v / total for v in ex]


def ref_ranking(probs: list[float]) -> list[int]:
    """Experts by decreasing probability; equal probabilities: lower index first."""
    ranking = []
    left = list(range(len(probs)))
    while left:
        best = left[0]
        for e in left[1:]:
            if probs[e] > probs[best]:  # strict: a tie keeps the lower index
                best = e
        ranking.append(best)
        left.remove(best)
    return ranking


def ref_top_k(probs: list[float], k: int, normalize: bool) -> list[tuple[int, float]]:
    chosen = [e for e in ref_ranking(probs)[:k] if probs[e] > 0]
    total = sum(probs[e] for e in chosen)
    return [(e, probs[e] / total if normalize else probs[e]) for e in chosen]


def ref_threshold(probs: list[float], threshold: float, max_k: int | None) -> list[tuple[int, float]]:
    chosen, mass_before = [], 0.0
    for e in ref_ranking(probs):
        if probs[e] == 0 or (chosen and mass_before >= threshold):
            break
        chosen.append((e, probs[e]))
        mass_before += probs[e]
    return chosen[: max_k or len(probs)]


def ref_capacity(choices: list[list[tuple[int, float]]], probs: list[list[float]], capacity: int):
    """Rank priority: all 1st choices (higher router probability first, then lower token), then all
    2nd choices..."""
    slots = [(rank, -probs[t][e], t, e) for t, row in enumerate(choices) for rank, (e, _) in enumerate(row)]
    used: dict[int, int] = {}
    kept, dropped = set(), 0
    for rank, _neg_p, t, e in sorted(slots):
        if used.get(e, 0) < capacity:
            used[e] = used.get(e, 0) + 1
            kept.add((t, e))
        else:
            dropped += 1
    return [[(e, p) for e, p in row if (t, e) in kept] for t, row in enumerate(choices)], dropped


def used_slots(result) -> list[list[tuple[int, float]]]:
    """The router's decision as [(expert, weight), ...] per token, in slot order."""
    out = []
    for idx, w, m in zip(result.indices.tolist(), result.weights.tolist(), result.mask.tolist()):
        out.append([(e, wt) for e, wt, used in zip(idx, w, m) if used])
    return out


def assert_same_choices(got, want, atol=1e-5):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        assert [e for e, _ in g] == [e for e, _ in w], f"token {t}: experts {g} != {w}"
        for (_, gw), (_, ww) in zip(g, w):
            assert gw == pytest.approx(ww, abs=atol), f"token {t}: weights {g} != {w}"


def assert_logits(result_logits: torch.Tensor, want: list[list[float]], atol=1e-5):
    got = result_logits.tolist()
    for g_row, w_row in zip(got, want):
        for g, w in zip(g_row, w_row):
            if w == NEG_INF:
                assert g == NEG_INF
            else:
                assert g == pytest.approx(w, abs=atol)


def make_router_with_ties(router):
    """Zero gate rows 1, 3, 4: their logits are exactly 0 for every token -> exact ties."""
    with torch.no_grad():
        router.weight.normal_(0, 1.0)
        router.weight[[1, 3, 4]] = 0.0
    return router


def tokens(num_tokens=24, hidden=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tokens, hidden, generator=g)
    x[:3] = 0.0  # every logit equal: a full tie
    return x.to(dtype)


# ---------------------------------------------------------------- TopKRouter
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_router_matches_reference(normalize, top_k):
    torch.manual_seed(1)
    router = make_router_with_ties(TopKRouter(8, 6, top_k=top_k, normalize=normalize)).eval()
    x = tokens()
    result = router(x)
    logits = ref_logits(x, router.weight)
    assert_logits(result.logits, logits)
    want = [ref_top_k(ref_softmax(row), top_k, normalize) for row in logits]
    assert_same_choices(used_slots(result), want)
    assert used_slots(result)[0] == [(e, pytest.approx(w)) for e, w in want[0]]
    assert [e for e, _ in want[0]] == list(range(top_k))  # the all-tie token takes the lowest indices
    assert result.num_dropped == 0 and result.mask.all()


def test_ties_go_to_lower_expert_index():
    router = TopKRouter(4, 5, top_k=2).eval()
    with torch.no_grad():
        router.weight.zero_()
        router.weight[3, 0] = 1.0  # token [1, 0, 0, 0]: expert 3 wins, then a 4-way tie of zeros
    result = router(torch.tensor([[1.0, 0, 0, 0], [0.0, 0, 0, 0]]))
    assert result.indices.tolist() == [[3, 0], [0, 1]]


@pytest.mark.parametrize(
    "make_mask",
    [
        lambda T, E: torch.tensor([True, False, True, True, False, True]),  # [E] bool
        lambda T, E: torch.rand(T, E, generator=torch.Generator().manual_seed(3)) > 0.4,  # [T, E] bool
        lambda T, E: torch.randn(T, E, generator=torch.Generator().manual_seed(4)),  # [T, E] float bias
        lambda T, E: torch.tensor([0.0, NEG_INF, 2.0, 0.0, NEG_INF, -1.0]),  # [E] float with -inf
    ],
    ids=["bool_E", "bool_TE", "bias_TE", "bias_E_neginf"],
)
def test_top_k_router_external_mask(make_mask):
    torch.manual_seed(2)
    router = make_router_with_ties(TopKRouter(8, 6, top_k=3)).eval()
    x = tokens()
    mask = make_mask(x.shape[0], 6)
    if mask.dtype == torch.bool and mask.dim() == 2:
        mask[:, 0] = True  # every token keeps at least one expert
    result = router(x, expert_mask=mask)
    logits = ref_apply_mask(ref_logits(x, router.weight), mask)
    assert_logits(result.logits, logits)
    want = [ref_top_k(ref_softmax(row), 3, True) for row in logits]
    assert_same_choices(used_slots(result), want)
    if mask.dtype == torch.bool:  # forbidden experts are never used, even when k > allowed experts
        allowed = mask.expand(x.shape[0], 6)
        for t, row in enumerate(used_slots(result)):
            assert all(bool(allowed[t, e]) for e, _ in row)


def test_top_k_router_bf16_inputs_route_in_fp32():
    torch.manual_seed(3)
    router = TopKRouter(8, 6, top_k=2).eval()
    x = tokens(dtype=torch.bfloat16)
    result = router(x)
    assert result.logits.dtype == torch.float32 and result.weights.dtype == torch.float32
    logits = ref_logits(x.float(), router.weight)  # bf16 values, fp32/64 arithmetic
    assert_logits(result.logits, logits, atol=1e-5)
    assert_same_choices(used_slots(result), [ref_top_k(ref_softmax(r), 2, True) for r in logits])
    # a bf16 router weight is also upcast: the same decisions as its fp32 copy
    router_bf16 = TopKRouter(8, 6, top_k=2).eval()
    with torch.no_grad():
        router_bf16.weight.copy_(router.weight.to(torch.bfloat16))
    router_bf16.to(torch.bfloat16)
    logits_b = ref_logits(x.float(), router_bf16.weight.float())
    assert_logits(router_bf16(x).logits, logits_b, atol=1e-5)


@pytest.mark.parametrize("top_k", [2, 3])
def test_gumbel_second_choice_statistics(top_k):
    """1st choice = argmax; later choices follow softmax over the remaining experts (Gumbel-max)."""
    torch.manual_seed(4)
    router = TopKRouter(4, 5, top_k=top_k, gumbel_second=True)
    with torch.no_grad():
        router.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [1.0, 0, 0, 0], [0.5, 0, 0, 0], [0.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
    x = torch.tensor([[1.0, 0, 0, 0]]).repeat(40000, 1)
    router.train()
    result = router(x)
    probs = ref_softmax([2.0, 1.0, 0.5, 0.0, -1.0])
    assert (result.indices[:, 0] == 0).all()
    second = torch.bincount(result.indices[:, 1], minlength=5).double() / x.shape[0]
    rest = sum(probs[1:])
    want = [0.0] + [p / rest for p in probs[1:]]
    assert second.tolist() == pytest.approx(want, abs=0.01)
    # weights are the clean probabilities of the chosen experts, renormalised
    for t in range(0, 40000, 997):
        chosen = result.indices[t].tolist()
        total = sum(probs[e] for e in chosen)
        assert result.weights[t].tolist() == pytest.approx([probs[e] / total for e in chosen], abs=1e-5)
    assert len({tuple(r) for r in result.indices[:200].tolist()}) > 1  # really random
    router.eval()  # no noise at inference: plain top-k
    assert router(x[:3]).indices.tolist() == [list(range(top_k))] * 3


@pytest.mark.parametrize("top_k", [1, 2])
def test_top_k_capacity_drops_by_rank_priority(top_k):
    torch.manual_seed(5)
    router = TopKRouter(8, 4, top_k=top_k, capacity_factor=0.5, min_capacity=1).eval()
    with torch.no_grad():
        router.weight.normal_()
        router.weight[0] += 1.5  # crowd expert 0
    x = torch.randn(30, 8) + 0.5
    result = router(x)
    capacity = max(1, math.ceil(0.5 * 30 * top_k / 4))
    probs = [ref_softmax(row) for row in ref_logits(x, router.weight)]
    want, dropped = ref_capacity([ref_top_k(p, top_k, True) for p in probs], probs, capacity)
    assert dropped > 0
    assert result.num_dropped == dropped
    assert_same_choices(used_slots(result), want)
    assert int(result.expert_counts().max()) <= capacity
    m = result.metrics()
    assert m["dropped_fraction"] == pytest.approx(dropped / (30 * top_k))


# ---------------------------------------------------------------- ThresholdRouter
@pytest.mark.parametrize("threshold,max_k", [(0.5, None), (0.9, None), (0.9, 2), (1.0, None), (0.05, None)])
def test_threshold_router_matches_reference(threshold, max_k):
    torch.manual_seed(6)
    router = make_router_with_ties(ThresholdRouter(8, 6, threshold=threshold, max_k=max_k)).eval()
    with torch.no_grad():
        router.weight.mul_(0.7)
    x = tokens(40)
    result = router(x)
    want = [ref_threshold(ref_softmax(row), threshold, max_k) for row in ref_logits(x, router.weight)]
    assert_same_choices(used_slots(result), want)
    ks = {len(row) for row in want}
    if threshold == 0.05:
        assert ks == {1}
    elif threshold == 1.0:
        assert ks == {6}  # every expert with non-zero probability
    elif max_k is None:
        assert len(ks) > 1, "k should vary across tokens"
    else:
        unbounded = [ref_threshold(ref_softmax(row), threshold, None) for row in ref_logits(x, router.weight)]
        assert max(ks) == max_k < max(len(row) for row in unbounded)
    # weights are raw probabilities: no renormalisation
    assert result.weights.sum(-1).max() <= 1.0 + 1e-6


def test_threshold_router_capacity_overflow_rank_priority():
    torch.manual_seed(7)
    router = ThresholdRouter(8, 4, threshold=0.8, capacity_factor=1.0, min_capacity=1).eval()
    with torch.no_grad():
        router.weight.normal_()
        router.weight[2] += 1.0
    x = torch.randn(32, 8) + 0.3
    result = router(x)
    capacity = max(1, math.ceil(1.0 * 32 * 1 / 4))  # XMoE: capacity counts one slot per token
    probs = [ref_softmax(row) for row in ref_logits(x, router.weight)]
    choices = [ref_threshold(p, 0.8, None) for p in probs]
    want, dropped = ref_capacity(choices, probs, capacity)
    assert dropped > 0 and result.num_dropped == dropped
    assert_same_choices(used_slots(result), want)
    # a token's 1st choice is only dropped when the expert is full of other 1st choices
    for t, row in enumerate(choices):
        if row[0] not in want[t]:
            firsts = sum(1 for r in choices if r[0][0] == row[0][0])
            assert firsts > capacity


def test_threshold_router_masks_and_bf16():
    torch.manual_seed(8)
    router = ThresholdRouter(8, 6, threshold=0.7).eval()
    with torch.no_grad():
        router.weight.normal_()
    x = tokens(20, dtype=torch.bfloat16)
    mask = torch.tensor([True, True, False, True, False, True])
    result = router(x, expert_mask=mask)
    assert result.logits.dtype == torch.float32
    logits = ref_apply_mask(ref_logits(x.float(), router.weight), mask)
    assert_same_choices(used_slots(result), [ref_threshold(ref_softmax(r), 0.7, None) for r in logits])
    assert not (result.indices[result.mask] == 2).any() and not (result.indices[result.mask] == 4).any()


def test_threshold_router_balance_loss_counts_top1():
    torch.manual_seed(9)
    router = ThresholdRouter(8, 4, threshold=0.9).eval()
    with torch.no_grad():
        router.weight.normal_()
    x = torch.randn(16, 8)
    result = router(x)
    probs = [ref_softmax(r) for r in ref_logits(x, router.weight)]
    top1 = [ref_ranking(p)[0] for p in probs]
    f = [sum(1 for e in top1 if e == i) / 16 for i in range(4)]
    P = [sum(p[i] for p in probs) / 16 for i in range(4)]
    assert result.aux_losses["load_balance"].item() == pytest.approx(4 * sum(a * b for a, b in zip(f, P)), rel=1e-5)


# ---------------------------------------------------------------- ModalityRouter
MODALITY_EXPERTS = {"text": [5, 0], "image": [2]}  # deliberately unsorted, not an offset layout
SHARED = [1, 3, 4]


def ref_modality_route(router, x, modality_ids, top_k, normalize):
    names = {v: k for k, v in MODALITY_IDS.items()}
    logits_full, choices, local_probs = [], [], []
    for t in range(x.shape[0]):
        name = names[int(modality_ids[t])]
        allowed = sorted(MODALITY_EXPERTS[name] + SHARED)
        local = ref_logits(x[t : t + 1], router.gates[name].weight)[0]
        row = [NEG_INF] * 6
        for e, v in zip(allowed, local):
            row[e] = v
        logits_full.append(row)
        p = ref_softmax(local)
        local_probs.append((name, allowed, p))
        choices.append([(allowed[i], w) for i, w in ref_top_k(p, top_k, normalize)])
    return logits_full, choices, local_probs


@pytest.mark.parametrize("normalize", [True, False])
def test_modality_router_matches_reference(normalize):
    torch.manual_seed(10)
    router = ModalityRouter(8, 6, MODALITY_EXPERTS, shared_experts=SHARED, top_k=2, normalize=normalize).eval()
    for gate in router.gates.values():
        torch.nn.init.normal_(gate.weight)
    x = torch.randn(30, 8)
    modality_ids = torch.tensor([MODALITY_IDS["image"]] * 12 + [MODALITY_IDS["text"]] * 18)
    result = router(x, modality_ids=modality_ids)
    logits, want, local_probs = ref_modality_route(router, x, modality_ids, 2, normalize)
    assert_logits(result.logits, logits)
    assert_same_choices(used_slots(result), want)
    chosen = {(name, e) for (name, _, _), row in zip(local_probs, want) for e, _ in row}
    assert any(name == "text" and e in SHARED for name, e in chosen)  # shared pool reached by both
    assert any(name == "image" and e in SHARED for name, e in chosen)
    assert not any(name == "image" and e in MODALITY_EXPERTS["text"] for name, e in chosen)
    assert not any(name == "text" and e in MODALITY_EXPERTS["image"] for name, e in chosen)

    # one Switch balance loss per modality gate, over its own tokens and experts
    total = 0.0
    for name in MODALITY_EXPERTS:
        rows = [(p, c) for (n, allowed, p), c in zip(local_probs, want) if n == name]
        allowed = sorted(MODALITY_EXPERTS[name] + SHARED)
        n_tok = len(rows)
        f = [sum(1 for _, c in rows for e, _ in c if e == a) / n_tok for a in allowed]
        P = [sum(p[i] for p, _ in rows) / n_tok for i in range(len(allowed))]
        loss = len(allowed) * sum(a * b for a, b in zip(f, P))
        assert result.aux_losses[f"load_balance/{name}"].item() == pytest.approx(loss, rel=1e-5)
        total += loss
    assert result.aux_losses["load_balance"].item() == pytest.approx(total, rel=1e-5)
    z = [math.log(sum(math.exp(v) for v in row if v != NEG_INF)) ** 2 for row in logits]
    assert result.aux_losses["z_loss"].item() == pytest.approx(sum(z) / len(z), rel=1e-5)


def test_modality_router_external_mask_and_bf16():
    torch.manual_seed(11)
    router = ModalityRouter(8, 6, MODALITY_EXPERTS, shared_experts=SHARED, top_k=2).eval()
    for gate in router.gates.values():
        torch.nn.init.normal_(gate.weight)
    x = torch.randn(10, 8).to(torch.bfloat16)
    modality_ids = torch.tensor([0, 1] * 5)
    mask = torch.tensor([True, True, True, False, True, True])  # expert 3 chosen away (MoVA-style)
    result = router(x, expert_mask=mask, modality_ids=modality_ids)
    assert result.logits.dtype == torch.float32
    logits, _, _ = ref_modality_route(router, x.float(), modality_ids, 2, True)
    logits = ref_apply_mask(logits, mask)
    want = [ref_top_k(ref_softmax(row), 2, True) for row in logits]
    assert_same_choices(used_slots(result), want)


def test_modality_router_needs_known_modality_ids():
    router = ModalityRouter(8, 6, MODALITY_EXPERTS, shared_experts=SHARED)
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="modality_ids"):
        router(x)
    with pytest.raises(ValueError, match="modality id 2"):
        router(x, modality_ids=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="modality_ids must have shape"):
        router(x, modality_ids=torch.tensor([0, 1]))


# ---------------------------------------------------------------- result helpers
def test_routing_result_counts_dense_weights_and_metrics():
    torch.manual_seed(12)
    router = TopKRouter(8, 5, top_k=2).eval()
    with torch.no_grad():
        router.weight.normal_()
    x = torch.randn(17, 8)
    result = router(x)
    counts = [0] * 5
    dense = [[0.0] * 5 for _ in range(17)]
    for t, row in enumerate(used_slots(result)):
        for e, w in row:
            counts[e] += 1
            dense[t][e] += w
    assert result.expert_counts().tolist() == counts
    assert result.dense_weights().tolist() == [pytest.approx(r) for r in dense]
    m = result.metrics()
    assert m["expert_load"] == pytest.approx([c / 34 for c in counts])
    assert m["experts_per_token"] == pytest.approx(2.0)
    assert m["load_imbalance"] == pytest.approx(max(counts) / (34 / 5))
    assert m["dropped_fraction"] == 0.0


def test_router_handles_zero_tokens():
    for router in (TopKRouter(8, 4, 2), ThresholdRouter(8, 4, 0.5, capacity_factor=1.0), ModalityRouter(8, 2, {"text": [0], "image": [1]}, top_k=1)):
        result = router(torch.randn(0, 8), modality_ids=torch.zeros(0, dtype=torch.long))
        assert result.indices.shape[0] == 0 and result.num_dropped == 0
        assert result.aux_losses["load_balance"].item() == 0.0 and result.expert_counts().tolist() == [0] * router.num_experts


def test_router_logits_stay_fp32_under_bf16_autocast(single_thread):
    """Under autocast a plain F.linear runs in bf16; the router must not (its decisions would flip)."""
    torch.manual_seed(0)
    router = TopKRouter(64, 8, top_k=2)
    hidden = torch.randn(32, 64)
    expected = hidden.double() @ router.weight.double().T
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = router(hidden)
    assert result.logits.dtype == torch.float32
    torch.testing.assert_close(result.logits.double(), expected, rtol=1e-5, atol=1e-5)
