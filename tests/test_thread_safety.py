"""One model object serving concurrent requests (issue 9): the routing inputs of a call (modality ids,
expert mask) and its routing results (`router_logits`, each MoE layer's `last_routing`) belong to the
call, not to the module, so threads calling the same model at the same time each get exactly what
they get alone. And a model whose MoE layers need modality ids refuses a call without them instead of
routing every token as text.

Every thread's calls are compared bit for bit with the same call made alone (in the main thread,
before the threads start); a sensitivity check first shows that another request's routing inputs
would change the outputs, so a mix-up between threads cannot go unnoticed."""
import contextvars
import itertools
import threading

import pytest
import torch
from test_vl_generate import IMAGE_ID, build, prompt
from tiny_decoders import tiny_decoder, token_ids

import zoo
from zoo.models.upcycled import UpcycledMoeForCausalLM

MODALITY_PLAN = zoo.UpcyclePlan(num_experts=4, num_experts_per_tok=2, router="modality",
                                modality_experts={"text": [0], "image": [3]}, shared_experts=[1, 2], layers="odd")
TOP_K_PLAN = zoo.UpcyclePlan(num_experts=4, num_experts_per_tok=2, layers="odd")
CALLS = 6  # per thread
THREADS = [2, 8]
LAYER_FIELDS = ("indices", "weights", "mask", "logits")


# -- models ----------------------------------------------------------------------------------------
def moved(ffns):
    """Upcycled experts start as identical copies (routing then cannot change the output) and the
    routers near uniform: move both, as training does, so that routing with the wrong inputs shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for ffn in ffns:
            for p in ffn.moe.router.parameters():
                p.normal_(0, 1.0)
            for p in ffn.moe.experts.parameters():
                p.add_(torch.randn_like(p) * 0.3 * p.std())


def upcycled(plan):
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(), plan).eval()
    moved([ffn for _, ffn in model.moe_layers()])
    return model


@pytest.fixture(scope="module")
def modality_model():
    return upcycled(MODALITY_PLAN)


@pytest.fixture(scope="module")
def top_k_model():
    return upcycled(TOP_K_PLAN)


@pytest.fixture(scope="module")
def moiie():
    return build("moiie")  # its own routers and experts moved the same way


# -- running calls alone and together ----------------------------------------------------------------
def snapshot(out, ffns) -> dict[str, torch.Tensor]:
    """What one call returned, and what its thread reads from the MoE layers right after it."""
    taken = {"logits": out.logits}
    if getattr(out, "aux_loss", None) is not None:
        taken["aux_loss"] = out.aux_loss
    taken.update({f"router_logits[{i}]": logits for i, logits in enumerate(getattr(out, "router_logits", None) or ())})
    for i, ffn in enumerate(ffns):
        routing = ffn.last_routing
        taken.update({f"layer {i} last_routing.{name}": getattr(routing, name) for name in LAYER_FIELDS})
    if getattr(out, "modality_ids", None) is not None:
        taken["modality_ids"] = out.modality_ids
    return taken


def differences(got: dict, want: dict) -> list[str]:
    assert got.keys() == want.keys()
    return [name for name in want if not (got[name].shape == want[name].shape and torch.equal(got[name], want[name]))]


def concurrently(call, requests, calls=CALLS, copy_context=False) -> list[list[dict]]:
    """Each request in a thread of its own, all released together by a barrier, `calls` times each
    -> per thread, the snapshots of its calls in order. `copy_context`: each thread runs in a copy of
    the caller's context, as asyncio.to_thread and anyio's worker threads (Gradio's handlers) do."""
    barrier = threading.Barrier(len(requests))
    results = [[] for _ in requests]
    errors = []

    def serve(index):
        try:
            barrier.wait()
            for _ in range(calls):
                results[index].append(call(requests[index]))
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=contextvars.copy_context().run if copy_context else serve,
                                args=(serve, i) if copy_context else (i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def wrong_calls(call, requests, calls=CALLS, copy_context=False) -> list[str]:
    """The concurrent calls whose outputs differ from the same call made alone."""
    alone = [call(request) for request in requests]
    together = concurrently(call, requests, calls, copy_context)
    return [f"thread {t} call {c}: {', '.join(names)}" for t, snapshots in enumerate(together)
            for c, taken in enumerate(snapshots) if (names := differences(taken, alone[t]))]


def assert_all_equal_alone(call, requests, calls=CALLS, copy_context=False):
    wrong = wrong_calls(call, requests, calls, copy_context)
    assert not wrong, (f"{len(wrong)} of {len(requests) * calls} concurrent calls differ from the call made alone; "
                       + "; ".join(wrong[:3]))


def assert_sensitive(call, request, other_inputs):
    """Request with another request's routing inputs: other outputs (else a mix-up would not show)."""
    mixed = differences(call({**request, **other_inputs}), call(request))
    assert "logits" in mixed and any("last_routing.indices" in name for name in mixed)


# -- upcycled decoder: modality router, expert mask --------------------------------------------------
def modality_requests(threads):
    requests = []
    for t in range(threads):
        modality = torch.randint(0, 2, (2, 9), generator=torch.Generator().manual_seed(t))
        modality[:, 0], modality[:, 1] = 0, 1  # both modalities in every request
        requests.append({"input_ids": token_ids(2, 9, seed=100 + t), "modality_ids": modality})
    return requests


def expert_mask_requests(threads):
    subsets = list(itertools.combinations(range(4), 3)) + list(itertools.combinations(range(4), 2))  # 10
    requests = []
    for t in range(threads):
        mask = torch.zeros(2, 4, dtype=torch.bool)  # [B, E]: each sample of each request its own experts
        for row, subset in enumerate((subsets[t % 10], subsets[(t + 3) % 10])):
            mask[row, list(subset)] = True
        requests.append({"input_ids": token_ids(2, 9, seed=200 + t), "expert_mask": mask})
    return requests


def upcycled_call(model):
    ffns = [ffn for _, ffn in model.moe_layers()]

    def call(request):
        with torch.no_grad():
            out = model(**request, output_router_logits=True)
        return snapshot(out, ffns)

    return call


@pytest.mark.parametrize("threads", THREADS)
def test_upcycled_modality_router_concurrent_calls_equal_alone(modality_model, threads, single_thread):
    call, requests = upcycled_call(modality_model), modality_requests(threads)
    assert_sensitive(call, requests[0], {"modality_ids": requests[1]["modality_ids"]})
    assert_all_equal_alone(call, requests)


@pytest.mark.parametrize("threads", THREADS)
def test_upcycled_expert_mask_concurrent_calls_equal_alone(top_k_model, threads, single_thread):
    call, requests = upcycled_call(top_k_model), expert_mask_requests(threads)
    assert_sensitive(call, requests[0], {"expert_mask": requests[1]["expert_mask"]})
    assert_all_equal_alone(call, requests)


def test_threads_in_copies_of_the_callers_context_keep_their_own_routing_results(single_thread):
    """A bare zoo.upcycle'd decoder (top-k: no routing inputs needed, no routing_context) served from
    threads that copy the context of a caller which has already made a call, so each thread starts
    with the caller's routing results: writing into them would hand one thread another's."""
    from zoo.upcycling.layer import upcycled_layers

    model = zoo.upcycle(tiny_decoder(), TOP_K_PLAN).eval()
    ffns = [ffn for _, ffn in upcycled_layers(model)]
    moved(ffns)

    def call(request):
        with torch.no_grad():
            return snapshot(model(**request), ffns)

    requests = [{"input_ids": token_ids(2, 9, seed=300 + t)} for t in range(4)]
    assert_sensitive(call, requests[0], requests[1])
    assert_all_equal_alone(call, requests, copy_context=True)


def test_gradient_checkpointing_recomputes_with_the_threads_own_routing_inputs(single_thread):
    """Checkpointing recomputes the MoE layers in backward: with the inputs of the thread's own call."""
    model = upcycled(MODALITY_PLAN).train()
    model.activation_checkpointing_enable()
    ffn = model.moe_layers()[0][1]
    runs = []
    hook = ffn.register_forward_pre_hook(lambda *_: runs.append(1))
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def call(request):
        loss = model(request["input_ids"], labels=request["input_ids"], modality_ids=request["modality_ids"]).loss
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        taken = {"loss": loss.detach()}
        taken.update({name: g for name, g in zip(names, grads) if g is not None})
        assert any("moe.router" in name for name in taken) and any("moe.experts" in name for name in taken)
        return taken

    requests = modality_requests(2)
    call(requests[0])
    assert len(runs) == 2  # forward, then the recomputation in backward
    hook.remove()
    mixed = differences(call({**requests[0], "modality_ids": requests[1]["modality_ids"]}), call(requests[0]))
    assert any("moe.router" in name for name in mixed)
    assert_all_equal_alone(call, requests, calls=3)


# -- MoIIE: images and modality patterns per thread ---------------------------------------------------
def moiie_requests(model, threads):
    image_tokens = model.num_image_tokens()
    requests = []
    for t in range(threads):
        g = torch.Generator().manual_seed(t)
        pixels = torch.randn(2, 3, 64, 64, generator=g)
        rows = []
        for row in range(2):  # the image at a different place in every row of every request
            before = (t + 3 * row) % 6
            text = torch.randint(1, IMAGE_ID, (6,), generator=g).tolist()
            rows.append(prompt(model, text[:before], text[before:]))
        ids = torch.tensor(rows)
        assert ids.shape == (2, 6 + image_tokens)
        if t % 4 < 2:  # threads 0, 1: placeholders + images (2 threads in step: the same work per call)
            requests.append({"input_ids": ids, "pixel_values": pixels})
        else:  # embeddings with a modality pattern of the thread's own, not the placeholders'
            with torch.no_grad():
                embeds, _ = model.embed(ids, pixels)
            modality = torch.randint(0, 2, ids.shape, generator=g)
            modality[:, 0], modality[:, 1] = 0, 1
            requests.append({"inputs_embeds": embeds, "modality_ids": modality})
    return requests


@pytest.mark.parametrize("threads", THREADS)
def test_moiie_concurrent_calls_equal_alone(moiie, threads, single_thread):
    ffns = moiie.moe_feed_forwards()

    def call(request):
        with torch.no_grad():
            out = moiie(**request, output_router_logits=True)
        return snapshot(out, ffns)

    requests = moiie_requests(moiie, threads)
    assert_sensitive(call, requests[0], {"pixel_values": requests[1]["pixel_values"]})
    assert_sensitive(call, requests[1], {"input_ids": requests[0]["input_ids"]})  # other image placement
    if threads > 2:
        assert_sensitive(call, requests[2], {"modality_ids": 1 - requests[2]["modality_ids"]})  # image <-> text
    assert_all_equal_alone(call, requests)


# -- modality ids are required where a router needs them, not defaulted to text ----------------------
def test_upcycled_modality_router_without_modality_ids_is_an_error(modality_model, top_k_model):
    ids = token_ids(2, 9)
    embeds = modality_model.get_input_embeddings()(ids)
    for run in (lambda: modality_model(ids), lambda: modality_model(inputs_embeds=embeds),
                lambda: modality_model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)):
        with pytest.raises(ValueError, match=r"modality router .*pass modality_ids \[B, S\] = \(2, 9\)"):
            run()
    with torch.no_grad():  # what a silent all-text default would decide for the caller: it matters
        text = modality_model(ids, modality_ids=torch.zeros(2, 9, dtype=torch.long))
        image = modality_model(ids, modality_ids=torch.ones(2, 9, dtype=torch.long))
    assert not torch.equal(text.logits, image.logits)
    # a top-k router needs no modality ids: None stays allowed, and the ids change nothing
    with torch.no_grad():
        as_image = top_k_model(ids, modality_ids=torch.ones(2, 9, dtype=torch.long)).logits
        torch.testing.assert_close(top_k_model(ids).logits, as_image, atol=0, rtol=0)


def test_moiie_inputs_embeds_without_modality_ids_is_an_error(moiie, single_thread):
    ids = torch.tensor([prompt(moiie, [5, 6], [7, 8, 9])])
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embeds, modality = moiie.embed(ids, pixels)
        reference = moiie(input_ids=ids, pixel_values=pixels).logits
        with pytest.raises(ValueError, match=r"inputs_embeds without modality_ids.*modality router"):
            moiie(inputs_embeds=embeds)
        torch.testing.assert_close(moiie(inputs_embeds=embeds, modality_ids=modality).logits, reference, atol=0, rtol=0)


def test_top_k_vision_language_inputs_embeds_default_to_text(single_thread):
    """MoE-LLaVA's top-k routers do not read modality ids: inputs_embeds alone still work."""
    model = build("moe-llava")
    ids = torch.randint(1, IMAGE_ID, (1, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(input_ids=ids).logits  # text only: ids all text
        torch.testing.assert_close(model(inputs_embeds=model.get_input_embeddings()(ids)).logits, reference,
                                   atol=0, rtol=0)

