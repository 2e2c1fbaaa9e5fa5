"""UniMoeForConditionalGeneration: step-0 function of the dense LLM, experts on different dense sources,
the three router losses against the core functions, save/load through from_pretrained, KV-cached
generate() against an uncached loop, PEFT LoRA on the LLM's attention, and errors naming the input."""
import peft
import pytest
import torch
from transformers import AutoModel, AutoModelForImageTextToText

import zoo  # noqa: F401  (the lazy model-type table: "unimoe" resolves through the Auto classes)
from tests.tiny_unimoe import clip, dense_llm, image, tiny_config, tiny_model, tiny_processor, video
from zoo.core.losses import load_balancing_loss, modality_expert_l1_loss, modality_kl_separation_loss
from zoo.core.modalities import MODALITY_IDS
from zoo.integrations.peft_presets import lora_config
from zoo.models.unimoe import UniMoeForConditionalGeneration

pytestmark = pytest.mark.usefixtures("single_thread")
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def all_media_batch(processor, answer=None):
    texts = [processor.prompt("what is it", answer, media=("image", "video", "audio")),
             processor.prompt("and this", answer, media=("audio",))]
    return processor(text=texts, images=[image(1)], videos=[video(5, seed=2)], audio=[clip(0.6, seed=3), clip(0.4, seed=4)],
                     sampling_rate=16_000, padding_side="left")


def test_step_zero_is_the_dense_llm_when_every_expert_is_its_ffn(processor):
    llm = dense_llm(processor, seed=4)
    ids = processor(text=[processor.prompt("hello world", media=())])["input_ids"]
    with torch.no_grad():
        want = llm(ids).logits
        shared = UniMoeForConditionalGeneration(tiny_config(processor), language_model=dense_llm(processor, seed=4)).eval()
        torch.testing.assert_close(shared(input_ids=ids).logits, want, atol=1e-5, rtol=0)
        # one frozen FFN per expert, all from the same source: the same function
        config = tiny_config(processor, expert_sources=["base"] * 4)
        per_expert = UniMoeForConditionalGeneration(config, language_model=dense_llm(processor, seed=4)).eval()
        per_expert.load_expert_sources({"base": llm})
        torch.testing.assert_close(per_expert(input_ids=ids).logits, want, atol=1e-5, rtol=0)


def test_experts_from_different_sources_compute_their_own_ffn(processor):
    sources = {"a": dense_llm(processor, seed=1), "b": dense_llm(processor, seed=2)}
    config = tiny_config(processor, expert_sources=["a", "b", "a", "b"])
    model = UniMoeForConditionalGeneration(config, language_model=dense_llm(processor, seed=1)).eval()
    model.load_expert_sources(sources)
    ffn = model.moe_feed_forwards()[1]
    bank = ffn.moe.experts
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        for expert, dense in ((1, sources["b"]), (2, sources["a"]), (3, sources["b"])):
            # only `expert` allowed (top-2 then uses one slot, weight 1), B = 0: the layer is its source's dense FFN
            allowed = torch.arange(4) == expert
            with model.routing_context.use(torch.zeros(1, 3, dtype=torch.long), allowed):
                torch.testing.assert_close(ffn(x), dense.model.layers[1].mlp(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(bank.gate_up_proj[3], bank.gate_up_proj[1]) and not torch.equal(bank.gate_up_proj[0], bank.gate_up_proj[1])
    with pytest.raises(ValueError, match=r"sources \['b'\] named in config.expert_sources were not given"):
        model.load_expert_sources({"a": sources["a"]})
    with pytest.raises(ValueError, match="load_expert_sources needs config.expert_sources"):
        tiny_model(processor).load_expert_sources(sources)


def test_output_reports_each_router_loss_and_the_loss_weighs_them(processor):
    config_fields = dict(router_aux_loss_coef=0.1, modality_l1_loss_coef=0.2, modality_kl_loss_coef=0.3,
                         image_expert_indices=[0], audio_expert_indices=[1, 2], video_expert_indices=[3])
    model = tiny_model(processor, **config_fields)
    batch = all_media_batch(processor, answer="yes")
    out = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
    ids = out.modality_ids
    assert set(ids[0].tolist()) == set(MODALITY_IDS.values())  # text, image, audio and video tokens spliced
    padding = batch["attention_mask"].bool()
    want = dict(balance=0.0, l1=0.0, kl=0.0)
    designated = {MODALITY_IDS["image"]: [0], MODALITY_IDS["audio"]: [1, 2], MODALITY_IDS["video"]: [3]}
    for routing in (ffn.last_routing for ffn in model.moe_feed_forwards()):
        probs = torch.softmax(routing.logits, -1)
        want["balance"] += load_balancing_loss(probs, routing.indices[:, :1], routing.mask[:, :1], padding.reshape(-1)).item()
        want["l1"] += modality_expert_l1_loss(probs.view(2, -1, 4), ids, designated, padding).item()
        want["kl"] += modality_kl_separation_loss(probs.view(2, -1, 4), ids, padding).item()
    assert out.balance_loss.item() == pytest.approx(want["balance"], rel=1e-5)
    assert out.modality_l1_loss.item() == pytest.approx(want["l1"], rel=1e-5) and want["l1"] > 0
    assert out.modality_kl_loss.item() == pytest.approx(want["kl"], rel=1e-5)
    aux = 0.1 * want["balance"] + 0.2 * want["l1"] + 0.3 * want["kl"]
    assert out.aux_loss.item() == pytest.approx(aux, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.lm_loss.item() + aux, rel=1e-5)
    out.loss.backward()  # the losses reach the routers; the frozen FFNs and towers get nothing
    bank = model.moe_feed_forwards()[0].moe.experts
    assert model.moe_feed_forwards()[0].moe.router.weight.grad.abs().max() > 0 and bank.gate_up_lora_B.grad is not None
    assert bank.gate_up_proj.grad is None and all(p.grad is None for p in model.audio_tower.parameters())
    assert model.audio_aligner.query_tokens.grad.abs().max() > 0  # the Q-Former trains (its queries reach the LLM)


def test_save_and_load_through_from_pretrained_gives_identical_outputs(processor, tmp_path):
    model = tiny_model(processor, seed=3, expert_sources=["a", "b", "c", "d"], router_gumbel_second=True)
    model.save_pretrained(tmp_path)
    for auto in (AutoModel, AutoModelForImageTextToText):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert type(loaded) is UniMoeForConditionalGeneration and loaded.config.expert_sources == ["a", "b", "c", "d"]
        batch = all_media_batch(processor)
        with torch.no_grad():
            want, got = model(**batch, output_router_logits=True), loaded(**batch, output_router_logits=True)
        torch.testing.assert_close(got.logits, want.logits, atol=0, rtol=0)
        for a, b in zip(got.router_logits, want.router_logits):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)
    assert set(loaded.generation_config.suppress_tokens) == {processor.image_token_id, processor.video_token_id,
                                                             processor.audio_token_id}


def uncached_greedy(model, batch, steps):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    media = {k: batch[k] for k in ("pixel_values", "pixel_values_videos", "input_features", "feature_lengths")}
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=mask, **media).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


def test_cached_generate_equals_the_uncached_greedy_loop(processor):
    model = tiny_model(processor, seed=5)
    batch = all_media_batch(processor)
    lengths = []
    hook = model.language_model.model.register_forward_hook(
        lambda m, args, kwargs, out: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    generated = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
    hook.remove()
    assert lengths == [batch["input_ids"].shape[1]] + [1] * (NEW_TOKENS - 1)  # the prompt once, then one token per step
    assert generated.tolist() == uncached_greedy(model, batch, NEW_TOKENS).tolist()


def test_peft_lora_on_the_llm_attention_trains_saves_and_merges(processor, tmp_path):
    model = tiny_model(processor, seed=6)
    config = lora_config(model, "attention", r=4, exclude_modules=UniMoeForConditionalGeneration.peft_exclude_modules)
    tuned = peft.get_peft_model(model, config)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in tuned.named_parameters() if ".lora_A." in n}
    assert adapted and all(".language_model.model.layers." in n and ".self_attn." in n for n in adapted)  # no tower, no Q-Former
    batch = all_media_batch(processor, answer="yes")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    tuned.train()
    for _ in range(2):
        tuned(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned.eval()
    with torch.no_grad():
        trained = tuned(**batch).logits
    tuned.save_pretrained(tmp_path / "adapter")
    fresh = tiny_model(processor, seed=6)
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained, atol=1e-5, rtol=0)
        merged = reloaded.merge_and_unload()
        assert type(merged) is UniMoeForConditionalGeneration
        torch.testing.assert_close(merged(**batch).logits, trained, atol=1e-4, rtol=0)


def test_bad_inputs_are_refused_naming_the_modality_or_field(processor):
    model = tiny_model(processor)
    batch = all_media_batch(processor)
    with pytest.raises(ValueError, match=r"the text has 4 video placeholder tokens but no video features were given"):
        model(**{**batch, "pixel_values_videos": None})
    with pytest.raises(ValueError, match=r"the text has 6 audio placeholder tokens but 3 audio\(s\) x 3 tokens = 9"):
        model(**{**batch, "input_features": torch.cat([batch["input_features"]] * 3)[:3],
                 "feature_lengths": torch.cat([batch["feature_lengths"]] * 3)[:3], "chunks_per_audio": None})
    with pytest.raises(ValueError, match=r"chunks_per_audio sums to 3 chunks but input_features has 2 rows"):
        model(**{**batch, "chunks_per_audio": torch.tensor([1, 2])})
    with pytest.raises(ValueError, match=r"pixel_values_videos must be \[videos, frames, 3, height, width\]"):
        model(**{**batch, "pixel_values_videos": batch["pixel_values_videos"][0]})
    with pytest.raises(ValueError, match=r"has 40 frames per video; the model takes 1 to 32 \(config.max_video_frames\)"):
        model(**{**batch, "pixel_values_videos": batch["pixel_values_videos"].repeat(1, 20, 1, 1, 1)})
    with pytest.raises(ValueError, match="not inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 3, 32), input_features=batch["input_features"])
    no_video = tiny_model(processor, video_token_id=None)
    with pytest.raises(ValueError, match=r"video inputs given, but config.video_token_id is not set"):
        no_video(input_ids=torch.tensor([[5, 6]]), pixel_values_videos=batch["pixel_values_videos"])
