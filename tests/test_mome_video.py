"""MoME's optional video stream, fed random AV-HuBERT-shaped features ([B, T_v, 1024] at 25 fps; no lip
videos or AV-HuBERT weights exist here): its own rates and projectors, spliced at <video> placeholders
next to the audio, routed by the same MoME routers, prefill-only in generate()."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny_mome import clip, tiny_config, tiny_processor, trained_looking_
from zoo.core.modalities import MODALITY_IDS
from zoo.models.mome import MomeForSpeechRecognition
from zoo.models.mome.processing_mome import VIDEO_TOKEN, expand_video_tokens, num_video_tokens

pytestmark = pytest.mark.usefixtures("single_thread")
VIDEO_RATES = [2, 5]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(video=True)


def build(processor, trained=True):
    video_id = processor.tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    config = tiny_config(processor, video_feature_size=1024, video_token_id=video_id,
                         video_compression_rates=VIDEO_RATES)
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(config.text_config).eval()
    base = copy.deepcopy(llm)
    model = MomeForSpeechRecognition(config, language_model=llm).eval()
    return (trained_looking_(model) if trained else model), base


def av_batch(processor, video_rate, frames=(23, 14), audio_rate=4, answers=("hello world", "one two")):
    texts = [processor.prompt(f"{VIDEO_TOKEN} transcribe the audio", a) for a in answers]
    texts = expand_video_tokens(texts, frames, video_rate)
    batch = processor(text=texts, audio=[clip(0.8, seed=21), clip(0.5, seed=22)], sampling_rate=16_000,
                      compression_rate=audio_rate)
    generator = torch.Generator().manual_seed(video_rate)
    batch["video_features"] = torch.randn(2, max(frames), 1024, generator=generator)  # AV-HuBERT-Large shape
    batch["video_lengths"] = torch.tensor(frames)
    return batch


@pytest.mark.parametrize("video_rate", VIDEO_RATES)
def test_video_tokens_are_pooled_projected_and_spliced(processor, video_rate):
    model, _ = build(processor)
    batch = av_batch(processor, video_rate)
    embeds, modality_ids = model.embed(batch["input_ids"], batch["input_features"], batch["feature_lengths"], 4,
                                       batch["video_features"], batch["video_lengths"], video_rate)
    is_video = batch["input_ids"] == model.config.video_token_id
    assert is_video.sum(1).tolist() == [num_video_tokens(23, video_rate), num_video_tokens(14, video_rate)]
    assert torch.equal(modality_ids == MODALITY_IDS["video"], is_video)
    assert torch.equal(modality_ids == MODALITY_IDS["audio"], batch["input_ids"] == processor.audio_token_id)
    projector = model.video_projectors.projectors[str(video_rate)]
    expected = []
    with torch.no_grad():
        for b, n in enumerate((23, 14)):
            x = batch["video_features"][b, :n]
            expected.append(projector(torch.stack([x[s : s + video_rate].mean(0) for s in range(0, n, video_rate)])))
    torch.testing.assert_close(embeds[is_video], torch.cat(expected), atol=1e-5, rtol=1e-5)


def test_av_model_is_the_frozen_llm_at_step_0_and_routes_video_with_the_same_routers(processor):
    model, base = build(processor, trained=False)
    batch = av_batch(processor, 5)
    kwargs = dict(compression_rate=4, video_compression_rate=5)
    with torch.no_grad():
        out = model(**batch, **kwargs)
        embeds, _ = model.embed(batch["input_ids"], batch["input_features"], batch["feature_lengths"], 4,
                                batch["video_features"], batch["video_lengths"], 5)
        reference = base(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(out.logits, reference, atol=0, rtol=0)
    trained_looking_(model)
    with torch.no_grad():
        out = model(**batch, **kwargs)
    video = model.routing_histograms(out.modality_ids, "video")
    audio = model.routing_histograms(out.modality_ids, "audio")
    n_video = int((out.modality_ids == MODALITY_IDS["video"]).sum())
    assert video.sum(1).tolist() == [2 * n_video] * len(model.mome_modules) and audio.sum() > 0
    assert torch.equal(model.routing_histograms(), sum(model.routing_histograms(out.modality_ids, m)
                                                      for m in ("text", "audio", "video")))


def test_av_generate_splices_video_on_the_prefill_only(processor):
    model, _ = build(processor)
    batch = av_batch(processor, 2, answers=("", ""))
    batch = {**batch, "input_ids": batch["input_ids"][:1], "attention_mask": batch["attention_mask"][:1],
             "input_features": batch["input_features"][:1], "feature_lengths": batch["feature_lengths"][:1],
             "video_features": batch["video_features"][:1, :23], "video_lengths": batch["video_lengths"][:1]}
    batch.pop("chunks_per_audio")
    out = model.generate(**batch, compression_rate=4, video_compression_rate=2, max_new_tokens=5, do_sample=False)
    ids = batch["input_ids"]
    with torch.no_grad():
        for _ in range(5):  # no cache: the whole sequence, video and audio spliced every time
            logits = model(input_ids=ids, input_features=batch["input_features"], feature_lengths=batch["feature_lengths"],
                           video_features=batch["video_features"], video_lengths=batch["video_lengths"],
                           compression_rate=4, video_compression_rate=2, use_cache=False).logits[:, -1]
            logits[:, model.generation_config.suppress_tokens] = float("-inf")
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    assert model.config.video_token_id in model.generation_config.suppress_tokens


def test_bad_video_input_is_refused(processor):
    model, _ = build(processor)
    batch = av_batch(processor, 2)
    with pytest.raises(ValueError, match=r"video_compression_rate=3 is not one of the model's rates \[2, 5\]"):
        model(**batch, video_compression_rate=3)
    with pytest.raises(ValueError, match=r"video_features must be \[batch, frames, 1024\]"):
        model(**{**batch, "video_features": torch.randn(2, 23, 768)}, video_compression_rate=2)
    with pytest.raises(ValueError, match="video placeholder tokens but .* video features were given"):
        model(**batch, video_compression_rate=5)  # placeholders counted for rate 2
    with pytest.raises(ValueError, match="video placeholder tokens but no video features were given"):
        model(**{k: v for k, v in batch.items() if not k.startswith("video")})
    with pytest.raises(ValueError, match=r"1 video clip\(s\) given but the text has 2 <video> placeholder"):
        expand_video_tokens([f"{VIDEO_TOKEN} {VIDEO_TOKEN}"], [10], 2)
