"""MomeForSpeechRecognition on tiny random parts: step-0 identity with the frozen LLM for each placement,
the audio splice against a by-hand tower -> pooling -> projector, the one router shared by every rate,
the loss, what trains, and clear errors for bad input."""
from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM

from tests.tiny_mome import RATES, clip, tiny_config, tiny_model, tiny_processor, trained_looking_
from zoo.core.modalities import MODALITY_IDS
from zoo.core.routing import TopKRouter
from zoo.models.mome import MomeConfig, MomeForSpeechRecognition
from zoo.models.mome.mome_layer import MomeParallel

pytestmark = pytest.mark.usefixtures("single_thread")
INSTRUCTION = "transcribe the audio"


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(compression_rate=4)


def batch_at(processor, rate: int, answers=("hello world", "one two three")):
    texts = [processor.prompt(INSTRUCTION, a) for a in answers]
    clips = [clip(0.7, seed=1), clip(1.3, seed=2)][: len(answers)]
    return processor(text=texts, audio=clips, sampling_rate=16_000, compression_rate=rate)


def model_inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "input_features", "feature_lengths")}


@pytest.mark.parametrize("placement", ["attention", "ffn", "layer"])
def test_logits_equal_the_frozen_llm_at_step_0(processor, placement):
    config = tiny_config(processor, placement)
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(config.text_config).eval()
    base = copy.deepcopy(llm)  # the frozen LLM as it was, without MoME modules
    model = MomeForSpeechRecognition(config, language_model=llm).eval()
    assert model.language_model is llm and len(model.mome_modules) == config.text_config.num_hidden_layers
    batch = batch_at(processor, 4)
    with torch.no_grad():
        out = model(**model_inputs(batch), compression_rate=4)
        embeds, _ = model.embed(batch["input_ids"], batch["input_features"], batch["feature_lengths"], 4)
        reference = base(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        text_only = batch["input_ids"].masked_fill(batch["input_ids"] == processor.audio_token_id, 5)
        torch.testing.assert_close(model(input_ids=text_only).logits, base(input_ids=text_only).logits, atol=0, rtol=0)
    torch.testing.assert_close(out.logits, reference, atol=0, rtol=0)  # W_up = 0: exactly the frozen LLM
    trained_looking_(model)  # and the identity is not vacuous: trained MoME modules change the logits
    with torch.no_grad():
        assert (model(**model_inputs(batch), compression_rate=4).logits - reference).abs().max() > 1e-2


def naive_audio_tokens(model, input_features, feature_lengths, rate):
    """The tower's frames (zoo.multimodal.audio_tower, tested there) -> mean of each group of `rate` real frames
    (the last group partial) -> that rate's projector, one chunk at a time."""
    rows = []
    with torch.no_grad():
        for i in range(input_features.shape[0]):
            frames, lengths = model.audio_tower(input_features[i : i + 1], feature_lengths[i : i + 1])
            length = int(lengths[0])
            assert length == (int(feature_lengths[i]) + 1) // 2  # conv2 stride 2
            groups = [frames[0, s : min(s + rate, length)].mean(0) for s in range(0, length, rate)]
            rows.append(model.audio_projectors.projectors[str(rate)](torch.stack(groups)))
    return torch.cat(rows)


@pytest.mark.parametrize("rate", RATES)
def test_audio_tokens_are_pooled_projected_and_spliced_at_the_placeholders(processor, rate):
    model = tiny_model(processor)
    batch = batch_at(processor, rate)
    embeds, modality_ids = model.embed(batch["input_ids"], batch["input_features"], batch["feature_lengths"], rate)
    is_audio = batch["input_ids"] == processor.audio_token_id
    assert torch.equal(modality_ids == MODALITY_IDS["audio"], is_audio)
    expected = naive_audio_tokens(model, batch["input_features"], batch["feature_lengths"], rate)
    torch.testing.assert_close(embeds[is_audio], expected, atol=1e-5, rtol=1e-5)
    text = model.get_input_embeddings()(batch["input_ids"])
    torch.testing.assert_close(embeds[~is_audio], text[~is_audio], atol=0, rtol=0)
    # the processor counted the placeholders the way the model compresses
    assert is_audio.sum(1).tolist() == model.num_audio_tokens(batch["feature_lengths"], rate).tolist()


def test_one_router_per_layer_routes_every_rate_and_histograms_are_per_rate(processor):
    model = tiny_model(processor)
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    assert routers == model.mome_routers() and len(routers) == model.config.text_config.num_hidden_layers
    seen = {}
    hooks = [r.register_forward_hook(lambda mod, args, out, i=i: seen.setdefault(rate, []).append((i, id(mod))))
             for i, r in enumerate(routers)]
    histograms, weights_before = {}, [r.weight.detach().clone() for r in routers]
    try:
        for rate in RATES:
            batch = batch_at(processor, rate)
            with torch.no_grad():
                out = model(**model_inputs(batch), compression_rate=rate, output_router_logits=True)
            histograms[rate] = model.routing_histograms(out.modality_ids, "audio")
            # the histogram is the top-k of the returned router logits over the audio tokens, counted
            audio = (out.modality_ids.reshape(-1) == MODALITY_IDS["audio"])
            for layer, logits in enumerate(out.router_logits):
                chosen = torch.topk(logits[audio], model.config.num_experts_per_tok, dim=-1).indices
                assert torch.equal(histograms[rate][layer], torch.bincount(chosen.reshape(-1), minlength=6))
            n_audio = int((batch["input_ids"] == processor.audio_token_id).sum())
            assert histograms[rate].sum(1).tolist() == [n_audio * 2] * len(routers)
    finally:
        for h in hooks:
            h.remove()
    # every rate went through the same router objects (one per layer, nothing per rate), unchanged
    assert {rate: calls for rate, calls in seen.items()} == {rate: [(i, id(r)) for i, r in enumerate(routers)] for rate in RATES}
    assert all(torch.equal(r.weight, w) for r, w in zip(routers, weights_before))
    assert histograms[2].sum() > histograms[4].sum() > histograms[8].sum()  # fewer audio tokens at higher rates


def test_loss_is_the_lm_loss_plus_the_mean_balance_loss_and_only_projectors_and_mome_train(processor):
    model = tiny_model(processor).train()
    batch = batch_at(processor, 4)
    prompts = processor(text=[processor.prompt(INSTRUCTION)] * 2, audio=[clip(0.7, seed=1), clip(1.3, seed=2)],
                        sampling_rate=16_000, compression_rate=4)
    labels = batch["input_ids"].clone()
    for row, prompt_length in enumerate(prompts["attention_mask"].sum(1).tolist()):
        labels[row, :prompt_length] = -100  # supervise the transcript only
    labels[batch["attention_mask"] == 0] = -100
    out = model(**model_inputs(batch), compression_rate=4, labels=labels)
    full = model(**model_inputs(batch), compression_rate=4).logits  # all positions
    targets, keep = labels[:, 1:], labels[:, 1:] != -100
    torch.testing.assert_close(out.lm_loss, F.cross_entropy(full[:, :-1][keep].float(), targets[keep]))
    balance = torch.stack([r.aux_losses["load_balance"] for r in model.last_routings()]).mean()
    torch.testing.assert_close(out.aux_loss, 0.01 * balance)
    torch.testing.assert_close(out.loss, out.lm_loss + out.aux_loss)
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained and all(".mome." in n or n.startswith("audio_projectors.projectors.4.") for n in trained)
    assert any(n.startswith("audio_projectors.projectors.4.") for n in trained)
    assert any(n.endswith("mome.router.weight") for n in trained) and any("up_proj" in n for n in trained)
    frozen = [n for n, p in model.named_parameters() if p.requires_grad and ".mome." not in n
              and not n.startswith(("audio_projectors.", "video_projectors."))]
    assert frozen == []  # the LLM and the Whisper encoder are frozen
    assert not model.audio_tower.training  # and the tower stays in eval mode under model.train()


def test_placement_wraps_the_named_sublayer(processor):
    for placement, path in (("attention", "self_attn"), ("ffn", "mlp"), ("layer", None)):
        model = tiny_model(processor, placement)
        layer = model.language_model.model.layers[0]
        wrapped = layer if path is None else getattr(layer, path)
        assert isinstance(wrapped, MomeParallel) and wrapped is model.mome_modules[0]
        inner = type(wrapped.sublayer).__name__
        assert inner == {"attention": "LlamaAttention", "ffn": "LlamaMLP", "layer": "LlamaDecoderLayer"}[placement]


# ---------------------------------------------------------------- bad input
def test_missing_audio_for_placeholders_is_refused(processor):
    model = tiny_model(processor)
    batch = batch_at(processor, 4)
    with pytest.raises(ValueError, match="audio placeholder tokens but no audio features were given"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_a_rate_the_model_was_not_built_for_is_refused(processor):
    model = tiny_model(processor)
    batch = batch_at(processor, 4)
    with pytest.raises(ValueError, match=r"compression_rate=3 is not one of the model's rates \[2, 4, 8\]"):
        model(**model_inputs(batch), compression_rate=3)
    with pytest.raises(ValueError, match="inference_compression_rate"):
        MomeConfig(**{**tiny_config(processor).to_diff_dict(), "inference_compression_rate": 16})


def test_placeholders_counted_for_another_rate_are_refused(processor):
    model = tiny_model(processor)
    batch = batch_at(processor, 4)  # placeholders for rate 4, features compressed at rate 8
    with pytest.raises(ValueError, match="audio placeholder tokens but .* audio features were given"):
        model(**model_inputs(batch), compression_rate=8)
    with pytest.raises(ValueError, match="chunks_per_audio sums to 3 chunks but input_features has 2 rows"):
        model(**model_inputs(batch), compression_rate=4, chunks_per_audio=torch.tensor([1, 2]))


def test_video_features_without_a_video_stream_are_refused(processor):
    model = tiny_model(processor)
    batch = batch_at(processor, 4)
    with pytest.raises(ValueError, match="video_token_id is not set"):
        model(**model_inputs(batch), video_features=torch.randn(2, 10, 1024))


@pytest.mark.parametrize("field, value, message", [
    ("num_routed_experts", 0, "MomeConfig.num_routed_experts must be a positive integer"),
    ("num_experts_per_tok", 9, r"MomeConfig.num_experts_per_tok \(9\) must be <= num_routed_experts \(6\)"),
    ("mome_placement", "decoder", "MomeConfig.mome_placement must be one of"),
    ("compression", "max", "MomeConfig.compression must be one of"),
    ("audio_compression_rates", [4, 4], "lists a rate twice"),
    ("mome_layers", [0, 7], "MomeConfig.mome_layers"),
    ("router_aux_loss_coef", -1.0, "MomeConfig.router_aux_loss_coef"),
    ("video_compression_rates", [2], "video_feature_size is None"),
    ("audio_tower", {"kind": "timm"}, "MomeConfig.audio_tower"),
    ("transcription_prompt_ids", [1, 2, 3], "must hold audio_token_id"),
])
def test_bad_config_fields_are_named(processor, field, value, message):
    fields = {**tiny_config(processor).to_diff_dict(), field: value}
    fields.pop("transformers_version", None)
    with pytest.raises(ValueError, match=message):
        MomeConfig(**fields)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(processor):
    model = tiny_model(processor, "layer").train()
    batch = batch_at(processor, 4)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :6] = -100

    def grads():
        model.zero_grad()
        loss = model(**model_inputs(batch), compression_rate=4, labels=labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, reference = grads()
    model.activation_checkpointing_enable()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.language_model.modules())
    checkpointed_loss, checkpointed = grads()
    torch.testing.assert_close(checkpointed_loss, loss, atol=0, rtol=0)
    assert checkpointed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], atol=1e-6, rtol=1e-5)


def test_histograms_leave_padding_out_and_embeddings_resize(processor):
    model = tiny_model(processor)
    batch = batch_at(processor, 4)  # right-padded: the shorter row ends in <pad>
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        out = model(**model_inputs(batch), compression_rate=4)
    real = int(batch["attention_mask"].sum())
    assert model.routing_histograms().sum(1).tolist() == [2 * real] * len(model.mome_modules)
    vocab = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(vocab + 3)  # e.g. after adding special tokens to the tokenizer
    assert model.get_output_embeddings().weight.shape[0] == vocab + 3 == model.config.text_config.vocab_size
    with torch.no_grad():
        resized = model(**model_inputs(batch), compression_rate=4).logits
    torch.testing.assert_close(resized[..., :vocab], out.logits, atol=1e-5, rtol=1e-5)


def test_concurrent_calls_at_different_rates_each_get_their_own_routing(processor):
    """One model, threads at different rates at once: each call's histograms and logits are those it gets alone."""
    model = tiny_model(processor)
    batches = {rate: batch_at(processor, rate) for rate in RATES}
    alone = {}
    with torch.no_grad():
        for rate, batch in batches.items():
            out = model(**model_inputs(batch), compression_rate=rate)
            alone[rate] = (out.logits, model.routing_histograms(out.modality_ids, "audio"))
    results, errors, start = {}, [], threading.Barrier(len(RATES))

    def serve(rate):
        try:
            start.wait()
            for call in range(3):
                with torch.no_grad():
                    out = model(**model_inputs(batches[rate]), compression_rate=rate)
                results[rate, call] = (out.logits, model.routing_histograms(out.modality_ids, "audio"))
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=serve, args=(rate,)) for rate in RATES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (rate, _), (logits, histogram) in results.items():
        assert torch.equal(logits, alone[rate][0]) and torch.equal(histogram, alone[rate][1])
    assert not torch.equal(alone[2][1], alone[8][1])  # the rates route differently: a mix-up would show
