"""MoME generation: KV-cached generate() against a loop that re-runs the whole sequence without a cache,
the prompt the model builds itself from audio alone, and transformers' own ASR pipeline on a saved folder."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from transformers import pipeline

from tests.tiny_mome import clip, tiny_model, tiny_processor

pytestmark = pytest.mark.usefixtures("single_thread")
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(compression_rate=4)


@pytest.fixture(scope="module")
def model(processor):
    return tiny_model(processor, seed=1)


def uncached_greedy(model, batch, rate, new_tokens=NEW_TOKENS):
    """Re-run the full (left-padded) sequence for every token, no cache; placeholders are never chosen."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    banned = model.generation_config.suppress_tokens
    with torch.no_grad():
        for _ in range(new_tokens):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, input_features=batch["input_features"],
                           feature_lengths=batch["feature_lengths"], compression_rate=rate,
                           position_ids=position_ids, use_cache=False).logits[:, -1]
            logits[:, banned] = float("-inf")
            token = logits.argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
    return ids


@pytest.mark.parametrize("rate", [2, 8])
def test_cached_generate_equals_an_uncached_greedy_loop(processor, model, rate):
    clips = [clip(0.6, seed=4), clip(1.2, seed=5)]  # different lengths: left padding in the batch
    batch = processor(text=[processor.prompt("transcribe the audio")] * 2, audio=clips, sampling_rate=16_000,
                      compression_rate=rate, padding_side="left")
    assert (batch["attention_mask"] == 0).any()
    out = model.generate(**batch, compression_rate=rate, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(out, uncached_greedy(model, batch, rate))
    assert not torch.isin(out[:, batch["input_ids"].shape[1]:], torch.tensor([processor.audio_token_id])).any()


def test_generate_from_audio_alone_builds_the_processors_prompt(processor, model):
    audio = processor.audio_features([clip(0.8, seed=6)], 16_000)
    from_audio = model.generate(input_features=audio["input_features"], feature_lengths=audio["feature_lengths"],
                                max_new_tokens=NEW_TOKENS, do_sample=False)  # new tokens only
    batch = processor(text=processor.prompt("transcribe the audio"), audio=clip(0.8, seed=6), sampling_rate=16_000,
                      compression_rate=model.config.default_audio_rate)
    prompt_ids, _ = model.transcription_prompt(audio["feature_lengths"])
    assert torch.equal(prompt_ids, batch["input_ids"])  # the same prompt the processor writes
    full = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(from_audio, full[:, batch["input_ids"].shape[1]:])


@pytest.fixture(scope="module")
def saved(processor, model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mome-asr")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_asr_pipeline_returns_the_greedy_transcript(processor, model, saved):
    asr = pipeline("automatic-speech-recognition", model=str(saved))
    assert asr.type == "seq2seq" and type(asr.model) is type(model)
    for seconds, seed in ((0.7, 7), (1.5, 8)):
        audio = clip(seconds, seed=seed)
        features = processor.audio_features(audio, 16_000)
        greedy = model.generate(input_features=features["input_features"], feature_lengths=features["feature_lengths"],
                                max_new_tokens=NEW_TOKENS, do_sample=False)
        expected = processor.tokenizer.decode(greedy[0], skip_special_tokens=True)
        assert expected.strip()  # a real transcript of the random model, not an empty string
        result = asr({"raw": audio, "sampling_rate": 16_000}, generate_kwargs={"num_beams": 1, "max_new_tokens": NEW_TOKENS})
        assert result == {"text": expected}


def test_asr_pipeline_default_beam_search_matches_generate(processor, model, saved):
    asr = pipeline("automatic-speech-recognition", model=str(saved), max_new_tokens=NEW_TOKENS)
    audio = clip(0.9, seed=9)
    features = processor.audio_features(audio, 16_000)
    beams = model.generate(input_features=features["input_features"], feature_lengths=features["feature_lengths"],
                           max_new_tokens=NEW_TOKENS, num_beams=5, do_sample=False)  # the pipeline's default
    assert asr({"raw": audio, "sampling_rate": 16_000}) == {"text": processor.tokenizer.decode(beams[0], skip_special_tokens=True)}
    # an 8 kHz input is resampled by the pipeline, as by the processor
    low = AF.resample(torch.from_numpy(audio), 16_000, 8_000).numpy()
    features = processor.audio_features([(8_000, low)])
    beams = model.generate(input_features=features["input_features"], feature_lengths=features["feature_lengths"],
                           max_new_tokens=NEW_TOKENS, num_beams=5, do_sample=False)
    assert asr({"raw": low, "sampling_rate": 8_000}) == {"text": processor.tokenizer.decode(beams[0], skip_special_tokens=True)}


def test_generate_without_a_prompt_or_audio_is_refused(model):
    with pytest.raises(ValueError, match="needs input_ids .* or input_features"):
        model.generate(max_new_tokens=2)
    config = model.config
    saved_prompt, config.transcription_prompt_ids = config.transcription_prompt_ids, None
    try:
        with pytest.raises(ValueError, match="transcription_prompt_ids"):
            model.generate(input_features=torch.zeros(1, 80, 3000), feature_lengths=torch.tensor([100]), max_new_tokens=2)
    finally:
        config.transcription_prompt_ids = saved_prompt


def test_a_fresh_process_needs_only_import_zoo_for_the_pipeline(processor, model, saved, tmp_path):
    """`import zoo` + transformers' own pipeline(): the "mome" model type resolves through zoo's lazy table."""
    audio = clip(0.7, seed=7)
    features = processor.audio_features(audio, 16_000)
    greedy = model.generate(input_features=features["input_features"], feature_lengths=features["feature_lengths"],
                            max_new_tokens=NEW_TOKENS, do_sample=False)
    np.save(tmp_path / "clip.npy", audio)
    code = (
        "import numpy as np, zoo\n"
        "from transformers import pipeline\n"
        f"asr = pipeline('automatic-speech-recognition', model={str(saved)!r})\n"
        f"audio = np.load({str(tmp_path / 'clip.npy')!r})\n"
        f"print(asr({{'raw': audio, 'sampling_rate': 16000}}, generate_kwargs={{'num_beams': 1, 'max_new_tokens': {NEW_TOKENS}}})['text'])\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == processor.tokenizer.decode(greedy[0], skip_special_tokens=True)
