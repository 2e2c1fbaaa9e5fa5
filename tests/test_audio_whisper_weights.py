"""Packaged Whisper (CTranslate2 -> transformers): the reader on a hand-built file, key pairs checked by
hand against the package's model.bin, transcripts of real speech through transformers' own
WhisperForConditionalGeneration.generate with their WER against the reference transcripts, and the
cache's rebuild when it is damaged."""
import importlib.util
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.integrations import whisper_weights
from zoo.integrations.whisper_weights import load_whisper, read_ct2, whisper_cache_path
from zoo.multimodal.audio import load_audio
from zoo.pipelines.speech_metrics import wer

HELLO_WORLD = Path("/usr/share/asterisk/sounds/en_US_f_Allison/hello-world.wav")  # Debian asterisk-core-sounds-en-wav

pytestmark = pytest.mark.usefixtures("single_thread")


# -- the reader, on a file written here by hand ---------------------------------------------------
def ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_file(variables: list[tuple[str, tuple, int, bytes]], aliases=(), version: int = 6) -> bytes:
    out = struct.pack("<I", version) + ct2_string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, shape, dtype, raw in variables:
        out += ct2_string(name) + struct.pack("<B", len(shape)) + b"".join(struct.pack("<I", d) for d in shape)
        out += struct.pack("<BI", dtype, len(raw)) + raw
    out += struct.pack("<I", len(aliases)) + b"".join(ct2_string(a) + ct2_string(t) for a, t in aliases)
    return out


def test_ct2_reader_decodes_each_dtype_and_resolves_aliases():
    values = [0.1, -2.5, 3.14159, 1e-3, 65504.0, -7.0]
    bf16 = torch.tensor(values, dtype=torch.bfloat16)  # torch's own bfloat16 is the reference decoding
    data = ct2_file([
        ("a/fp32", (2, 3), 0, np.array(values, np.float32).tobytes()),
        ("a/fp16", (3, 2), 4, np.array(values, np.float16).tobytes()),
        ("a/bf16", (6,), 5, bf16.view(torch.int16).numpy().tobytes()),
        ("a/int8", (), 1, np.array(6, np.int8).tobytes()),
    ], aliases=[("b/tied", "a/fp16")])
    spec, variables = read_ct2(data)
    assert spec == "WhisperSpec"
    np.testing.assert_array_equal(variables["a/fp32"], np.array(values, np.float32).reshape(2, 3))
    np.testing.assert_array_equal(variables["a/fp16"], np.array(values, np.float16).reshape(3, 2))
    np.testing.assert_array_equal(variables["a/bf16"], bf16.float().numpy())
    assert int(variables["a/int8"]) == 6 and variables["b/tied"] is variables["a/fp16"]
    with pytest.raises(ValueError, match="truncated"):
        read_ct2(data[: len(data) // 2])
    with pytest.raises(ValueError, match="binary version 5"):
        read_ct2(ct2_file([], version=5))


# -- the real packages ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_en():
    return load_whisper("tiny.en", progress=False)


def transcribe(model, processor, waveform: torch.Tensor, **generate_kwargs) -> str:
    features = processor.feature_extractor(waveform.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        out = model.generate(features, **generate_kwargs)
    return processor.batch_decode(out, skip_special_tokens=True)[0]


def pyannote_sample() -> tuple[Path, str]:
    spec = importlib.util.find_spec("pyannote.audio")  # located, never imported
    assert spec is not None, "pip install --no-deps pyannote-audio==4.0.7 (scripts/install.sh does)"
    folder = Path(list(spec.submodule_search_locations)[0]) / "sample"
    # sample.stm: "<file> <channel> <speaker> <start> <end> <words...>", one utterance per line
    reference = " ".join(line.split(None, 5)[5] for line in (folder / "sample.stm").read_text().splitlines())
    return folder / "sample.wav", reference


@pytest.mark.slow
def test_converted_tensors_are_the_package_tensors_at_hand_checked_keys(tiny_en):
    model, _ = tiny_en
    _, ct2 = read_ct2(whisper_weights.WHISPER_TINY_EN.file().read_bytes())
    state = model.state_dict()
    as_tensor = lambda key, rows=slice(None): torch.from_numpy(np.asarray(ct2[key][rows], dtype=np.float32))  # noqa: E731
    pairs = [
        ("model.encoder.conv1.weight", as_tensor("encoder/conv1/weight")),
        ("model.encoder.layers.0.self_attn.k_proj.weight", as_tensor("encoder/layer_0/self_attention/linear_0/weight", slice(384, 768))),
        ("model.encoder.layers.3.self_attn.v_proj.bias", as_tensor("encoder/layer_3/self_attention/linear_0/bias", slice(768, 1152))),
        ("model.decoder.layers.2.encoder_attn.v_proj.weight", as_tensor("decoder/layer_2/attention/linear_1/weight", slice(384, 768))),
        ("model.decoder.layers.1.fc2.weight", as_tensor("decoder/layer_1/ffn/linear_1/weight")),
        ("model.decoder.layer_norm.weight", as_tensor("decoder/layer_norm/gamma")),
        ("model.encoder.embed_positions.weight", as_tensor("encoder/position_encodings/encodings")),
    ]
    for key, want in pairs:
        assert torch.equal(state[key], want), key
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()  # tied
    assert sum(p.numel() for p in model.parameters()) == 37_760_256  # Whisper tiny.en (tied head), by hand


@pytest.mark.slow
def test_tiny_en_transcribes_real_speech_through_transformers_generate(tiny_en):
    model, processor = tiny_en
    assert HELLO_WORLD.is_file(), "apt-get install asterisk-core-sounds-en-wav (scripts/install.sh does)"
    hello = transcribe(model, processor, load_audio(HELLO_WORLD))  # 8 kHz prompt, resampled
    assert hello == " Hello world!"
    path, reference = pyannote_sample()
    waveform, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and len(waveform) == 480000  # 30.0 s: one Whisper window
    text = transcribe(model, processor, torch.from_numpy(waveform))
    assert "This is Diane in New Jersey." in text and "originally from Chicago" in text
    assert wer(reference, text) < 0.25  # measured 0.198 (tiny.en repeats the opening "Hello." and mishears a few)


@pytest.mark.slow
def test_base_transcribes_hello_world():
    model, processor = load_whisper("base", progress=False)
    assert model.config.vocab_size == 51865 and len(model.model.encoder.layers) == 6
    text = transcribe(model, processor, load_audio(HELLO_WORLD), language="en", task="transcribe")
    assert wer("Hello world.", text) == 0.0, text


@pytest.mark.slow
def test_tower_on_real_weights_padded_is_whisper_and_trimmed_keeps_this_transcript(tiny_en):
    from transformers.modeling_outputs import BaseModelOutput

    from zoo.multimodal.audio_tower import WhisperAudioTower, mel_frames

    model, processor = tiny_en
    waveform = load_audio(HELLO_WORLD)
    features = processor.feature_extractor(waveform.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    lengths = torch.tensor([mel_frames(waveform.numel())])
    with torch.no_grad():
        whisper = model.model.encoder(features).last_hidden_state  # [1, 1500, 384]
        padded, out_lengths = WhisperAudioTower(model.model.encoder)(features, lengths)
        trimmed, _ = WhisperAudioTower(model.model.encoder, trim=True)(features, lengths)
        frames = int(out_lengths[0])
        assert frames == 71  # 1.41 s at 50 frames per second
        torch.testing.assert_close(padded[0], whisper[0, :frames], rtol=0, atol=0)
        # trimming changes the features (benchmarks/audio_encoder.py: relative L2 error 0.41 on this clip) ...
        relative = float((trimmed - padded).norm() / padded.norm())
        assert 0.2 < relative < 0.6, relative
        # ... yet Whisper's own decoder still reads this clip right from them
        spliced = whisper.clone()
        spliced[:, :frames] = trimmed[0]
        out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=spliced), max_new_tokens=20)
    assert processor.batch_decode(out, skip_special_tokens=True)[0] == " Hello world!"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate weights", "delete tokenizer"])
def test_damaged_or_incomplete_cache_is_rebuilt(tiny_en, damage, monkeypatch, tmp_path):
    model, processor = tiny_en
    ids = torch.tensor([[50257, 50362, 15496]])
    features = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(input_features=features, decoder_input_ids=ids).logits
    shared = whisper_cache_path("tiny.en")
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    copy = whisper_cache_path("tiny.en")
    shutil.copytree(shared, copy)
    if damage == "truncate weights":  # transformers' load fails
        with open(copy / "model.safetensors", "r+b") as f:
            f.truncate((copy / "model.safetensors").stat().st_size // 2)
    else:  # transformers would load an empty tokenizer without complaint: the file check catches it
        (copy / "tokenizer.json").unlink()
    messages = []
    rebuilt, rebuilt_processor = load_whisper("tiny.en", progress=lambda fraction, desc="": messages.append(desc))
    assert any("cache ready" in m for m in messages)
    assert any("cache at" in m and "is damaged" in m for m in messages)
    assert (copy / "tokenizer.json").is_file() and (copy / "conversion-complete.txt").is_file()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(input_features=features, decoder_input_ids=ids).logits, want, rtol=0, atol=0)
    assert rebuilt_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()


def test_cache_protocol_builds_once_and_replaces_an_unmarked_folder(tmp_path):
    """assets.load_through_cache with a cheap build: the marker decides, an unmarked leftover is replaced."""
    from zoo.integrations.assets import CACHE_COMPLETE, load_through_cache

    builds = []

    def build(tmp):
        builds.append(tmp)
        (tmp / "value.txt").write_text(str(len(builds)))
        return "built by the test"

    load = lambda folder: (folder / "value.txt").read_text()  # noqa: E731
    folder = tmp_path / "thing-1.0"
    folder.mkdir()
    (folder / "value.txt").write_text("stale, from an interrupted run")  # no marker
    assert load_through_cache(folder, build, load, lambda *a, **k: None, "thing") == "1"
    assert (folder / CACHE_COMPLETE).read_text() == "built by the test\n"
    assert load_through_cache(folder, build, load, lambda *a, **k: None, "thing") == "1" and len(builds) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing-1.0"]  # no temporary folders left behind
