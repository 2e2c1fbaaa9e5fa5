"""MoME through the Auto classes: save_pretrained -> from_pretrained gives identical outputs, the processor
comes back through AutoProcessor with identical model inputs, and the config round-trips."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoProcessor

import zoo  # noqa: F401  (the lazy model-type table: "mome" resolves without importing zoo.models first)
from tests.tiny_mome import clip, tiny_model, tiny_processor
from zoo.multimodal.speech_processing import SpeechLanguageProcessor

pytestmark = pytest.mark.usefixtures("single_thread")


def batch_of(processor, rate=4):
    texts = [processor.prompt("transcribe the audio", "hello world"), processor.prompt("transcribe the audio")]
    return processor(text=texts, audio=[clip(0.6, seed=11), clip(1.0, seed=12)], sampling_rate=16_000,
                     compression_rate=rate)


@pytest.mark.parametrize("placement", ["attention", "layer"])
def test_save_and_load_give_identical_outputs(placement, tmp_path):
    processor = tiny_processor()
    model = tiny_model(processor, placement, seed=3)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config.mome_placement == placement
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "mome" and saved["num_routed_experts"] == 6
    assert "top_k" not in saved  # a `top_k` config attribute would be read as a generation parameter
    for rate in (2, 8):
        batch = batch_of(processor, rate)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "input_features", "feature_lengths")}
        with torch.no_grad():
            expected = model(**inputs, compression_rate=rate, output_router_logits=True)
            got = loaded(**inputs, compression_rate=rate, output_router_logits=True)
        torch.testing.assert_close(got.logits, expected.logits, atol=0, rtol=0)
        for a, b in zip(got.router_logits, expected.router_logits):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert loaded.generation_config.suppress_tokens == [processor.audio_token_id]
    # every weight was in the checkpoint (the frozen LLM and Whisper encoder included): nothing re-initialised
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)


def test_auto_processor_round_trip_gives_the_same_inputs(tmp_path):
    processor = tiny_processor(compression_rate=8)
    model = tiny_model(processor)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SpeechLanguageProcessor and loaded.compression_rate == 8
    assert loaded.audio_token_id == processor.audio_token_id == model.config.audio_token_id
    for rate in (None, 2):
        a, b = batch_of(processor, rate), batch_of(loaded, rate)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert isinstance(AutoFeatureExtractor.from_pretrained(tmp_path), type(processor.feature_extractor))
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is type(model.config) and config.to_diff_dict() == model.config.to_diff_dict()
