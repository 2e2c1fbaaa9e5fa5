"""SpeechLanguageProcessor: as many <audio> placeholders as the tower + compressor give each clip
(checked by running them), the features Whisper's extractor gives, a save/load round trip through
AutoProcessor, and the generic splice writing audio frames at the placeholders."""
import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoProcessor, PretrainedConfig, WhisperFeatureExtractor

from zoo.core.modalities import MODALITY_IDS
from zoo.multimodal.audio_tower import build_audio_tower
from zoo.multimodal.matryoshka import MatryoshkaCompressor
from zoo.multimodal.processing import splice_features
from zoo.multimodal.speech_processing import (
    AUDIO_TOKEN,
    SpeechLanguageProcessor,
    gather_audio_frames,
    num_audio_tokens,
    register_speech_processor,
)

TINY = dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
            decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=64, num_mel_bins=80)
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

pytestmark = pytest.mark.usefixtures("single_thread")


class SpeechTestConfig(PretrainedConfig):
    model_type = "zoo_speech_processor_test"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from zoo.integrations.assets import load_smollm2, smollm2_cache_path

    if not (smollm2_cache_path() / "conversion-complete.txt").is_file():
        load_smollm2(progress=False)
    return AutoTokenizer.from_pretrained(smollm2_cache_path())


def clip(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


# 0.7 s; an odd sample count (1.43 s, not a whole mel hop); 35 s = a 30 s chunk + 5 s
CLIPS = [clip(0.7), clip(22881 / 16000, seed=1), clip(35.0, seed=2)]


@pytest.fixture(scope="module")
def towers():
    torch.manual_seed(0)
    return {trim: build_audio_tower({"kind": "whisper", "config": TINY, "trim": trim}) for trim in (False, True)}


@pytest.mark.parametrize("mode", ["avg", "stack"])
@pytest.mark.parametrize("trim", [False, True])
def test_placeholders_equal_the_frames_tower_and_compressor_produce(tokenizer, towers, trim, mode):
    processor = SpeechLanguageProcessor(WhisperFeatureExtractor(), tokenizer)
    tower = towers[trim]
    torch.manual_seed(1)
    compressor = MatryoshkaCompressor(in_features=16, out_features=24, rates=(1, 2, 3, 4), mode=mode)
    texts = [f"listen: {AUDIO_TOKEN} and {AUDIO_TOKEN}", f"{AUDIO_TOKEN} what is said?"]
    for rate in (1, 2, 3, 4):
        batch = processor(text=texts, audio=CLIPS, sampling_rate=16000, compression_rate=rate)
        assert batch["chunks_per_audio"].tolist() == [1, 1, 2]
        with torch.no_grad():
            frames, lengths = tower(batch["input_features"], batch["feature_lengths"])
            compressed, compressed_lengths = compressor(frames, lengths, rate)
        per_chunk = compressed_lengths.tolist()
        per_clip = [per_chunk[0], per_chunk[1], per_chunk[2] + per_chunk[3]]
        is_audio = batch["input_ids"] == processor.audio_token_id
        # text 0 holds clips 0 and 1, text 1 holds clip 2
        assert is_audio.sum(1).tolist() == [per_clip[0] + per_clip[1], per_clip[2]], rate
        assert per_clip == [num_audio_tokens(len(c), rate) for c in CLIPS]

        audio_embeds = gather_audio_frames(compressed, compressed_lengths)  # [sum, 24]
        text_embeds = torch.randn(*batch["input_ids"].shape, 24)
        embeds, modality = splice_features(batch["input_ids"], text_embeds, audio_embeds,
                                           processor.audio_token_id, "audio")
        want, k = text_embeds.clone(), 0  # naive: walk the placeholders in reading order
        for b in range(want.shape[0]):
            for s in range(want.shape[1]):
                if is_audio[b, s]:
                    want[b, s] = audio_embeds[k]
                    k += 1
        torch.testing.assert_close(embeds, want)
        assert torch.equal(modality, torch.where(is_audio, MODALITY_IDS["audio"], MODALITY_IDS["text"]))


def test_features_are_whisper_extractor_features_of_each_30_s_chunk(tokenizer):
    processor = SpeechLanguageProcessor(WhisperFeatureExtractor(), tokenizer)
    batch = processor(text=AUDIO_TOKEN, audio=(16000, CLIPS[2]))  # gradio-style tuple
    extractor = WhisperFeatureExtractor()
    want = extractor([CLIPS[2][:480000], CLIPS[2][480000:]], sampling_rate=16000, return_tensors="pt",
                     return_attention_mask=True)
    torch.testing.assert_close(batch["input_features"], want["input_features"], rtol=0, atol=0)
    assert batch["feature_lengths"].tolist() == want["attention_mask"].sum(1).tolist() == [3000, 500]
    expanded = AUDIO_TOKEN * num_audio_tokens(len(CLIPS[2]), 1)
    assert batch["input_ids"][0].tolist() == tokenizer(expanded, add_special_tokens=False)["input_ids"]


def test_save_and_auto_processor_round_trip(tokenizer, tmp_path):
    AutoConfig.register(SpeechTestConfig.model_type, SpeechTestConfig, exist_ok=True)
    register_speech_processor(SpeechTestConfig)
    processor = SpeechLanguageProcessor(WhisperFeatureExtractor(), tokenizer, compression_rate=3,
                                        max_audio_seconds=40.0, chat_template=CHAT_TEMPLATE)
    SpeechTestConfig().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    for loaded in (AutoProcessor.from_pretrained(tmp_path), SpeechLanguageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is SpeechLanguageProcessor
        assert isinstance(loaded.feature_extractor, WhisperFeatureExtractor)
        assert loaded.to_dict() == processor.to_dict()
        assert (loaded.compression_rate, loaded.max_audio_seconds) == (3, 40.0)
        assert loaded.audio_token_id == processor.audio_token_id and loaded.chat_template == CHAT_TEMPLATE
        prompt = loaded.prompt("Transcribe the clip.")
        assert prompt == processor.prompt("Transcribe the clip.")
        assert prompt == f"<|im_start|>user\n{AUDIO_TOKEN}\nTranscribe the clip.<|im_end|>\n<|im_start|>assistant\n"
        want, got = processor(text=prompt, audio=CLIPS[1], sampling_rate=16000), loaded(text=prompt, audio=CLIPS[1],
                                                                                       sampling_rate=16000)
        for key in ("input_ids", "attention_mask", "input_features", "feature_lengths"):
            assert torch.equal(got[key], want[key]), key
        assert int((got["input_ids"] == loaded.audio_token_id).sum()) == num_audio_tokens(len(CLIPS[1]), 3)
    with pytest.raises(FileNotFoundError, match="no saved SpeechLanguageProcessor"):
        SpeechLanguageProcessor.from_pretrained(tmp_path / "nothing-here")


def test_bad_requests_name_the_problem(tokenizer):
    processor = SpeechLanguageProcessor(WhisperFeatureExtractor(), tokenizer, max_audio_seconds=30.0)
    with pytest.raises(ValueError, match=r"2 audio clip\(s\) given but the text has 1 <audio>"):
        processor(text=AUDIO_TOKEN, audio=CLIPS[:2], sampling_rate=16000)
    with pytest.raises(ValueError, match="35.0 s long, more than the maximum of 30 s"):
        processor(text=AUDIO_TOKEN, audio=CLIPS[2], sampling_rate=16000)
    with pytest.raises(ValueError, match="compression_rate must be a positive integer, got 0"):
        processor(text=AUDIO_TOKEN, audio=CLIPS[0], sampling_rate=16000, compression_rate=0)
    with pytest.raises(ValueError, match="16 kHz / hop 160 / 30 s"):
        SpeechLanguageProcessor(WhisperFeatureExtractor(chunk_length=10), tokenizer)
