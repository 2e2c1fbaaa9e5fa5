"""zoo.pipelines.speech_data: synthetic espeak-ng training speech and the two held-out human sets."""
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from zoo.pipelines import speech_data as sd
from zoo.pipelines.speech_metrics import wer


@pytest.fixture(scope="module")
def speech_cache(tmp_path_factory):
    """One fresh cache for the module (the text pool costs ~15 s to build once)."""
    folder = tmp_path_factory.mktemp("zoo-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("ZOO_CACHE_DIR", str(folder))
    yield folder
    patch.undo()


# -- numbers as words -------------------------------------------------------------------------------
def test_number_words_known_values():
    assert sd.number_to_words(0) == "zero"
    assert sd.number_to_words(13) == "thirteen"
    assert sd.number_to_words(40) == "forty"
    assert sd.number_to_words(105) == "one hundred five"
    assert sd.number_to_words(1234) == "one thousand two hundred thirty four"
    assert sd.number_to_words(2_000_017) == "two million seventeen"
    assert [sd.ordinal_words(n) for n in (1, 2, 3, 5, 12, 21, 40, 100)] == [
        "first", "second", "third", "fifth", "twelfth", "twenty first", "fortieth", "one hundredth"]
    assert sd.spell_numbers("Press 1, or dial 28.8.") == "Press one, or dial twenty eight point eight."
    assert sd.spoken_text("The 19th hole & 1,000 tees: 100%!") == (
        "the nineteenth hole and one thousand tees one hundred percent")
    with pytest.raises(ValueError, match="n must be"):
        sd.number_to_words(-1)


# -- asterisk ---------------------------------------------------------------------------------------
NON_SPEECH = {
    "ascending-2tone", "descending-2tone", "beep", "beeperr", "tt-monkeys", "confbridge-join", "confbridge-leave",
    *(f"silence/{i}" for i in range(1, 11)),
}


def test_asterisk_transcripts_drop_non_speech_and_notes():
    speech, non_speech = sd.asterisk_transcripts()
    assert set(non_speech) == NON_SPEECH
    assert non_speech["beep"] == "[this is a simple beep tone]"
    assert not NON_SPEECH & set(speech)
    assert len(speech) == 569 - len(NON_SPEECH)  # every entry of the documentation is one or the other
    assert not [t for t in speech.values() if any(c in t for c in "[]()<>*#")]
    assert speech["digits/5"] == "five"
    assert speech["hello-world"] == "Hello world."
    assert speech["letters/at"] == "at"  # "at [@]"
    assert speech["spy-iax2"] == "IAX"  # 'IAX (note: does not say "2")'
    assert speech["dictate/both_help"] == (
        "press star to toggle pause, press pound to enter a new dictation filename")
    assert speech["letters/exclaimation-point"] == "exclamation-point"  # spelling slip fixed
    assert "two to lock" in speech["conf-adminmenu"]  # "2 to lock": digits as words


def test_asterisk_prompts_map_each_wav_to_its_transcript():
    samples = sd.asterisk_prompts()
    by_name = {s.source.removeprefix("asterisk:"): s for s in samples}
    wavs = {p.relative_to(sd.ASTERISK_SOUNDS).with_suffix("").as_posix() for p in sd.ASTERISK_SOUNDS.rglob("*.wav")}
    assert len(wavs) == 568 and len(samples) == 551 and set(by_name) == wavs - NON_SPEECH
    assert sd.spoken_text(by_name["digits/5"].text) == "five"
    assert sd.spoken_text(by_name["hello-world"].text) == "hello world"
    for s in samples:
        assert s.sampling_rate == 16000 and s.audio.dtype == np.float32 and s.audio.ndim == 1
        assert s.text.strip() and 0.4 < s.duration < 80, s.source
        assert np.sqrt(np.mean(s.audio**2)) > 3e-3, f"{s.source} is silent"
    five = by_name["digits/5"]
    info = sf.info(five.info["file"])
    assert info.samplerate == 8000 and abs(len(five.audio) - 2 * info.frames) <= 2  # resampled 8 -> 16 kHz
    assert five.duration < 1.5 < by_name["conf-adminmenu"].duration
    # the references, as the shared WER normalises them, are already in the training text form
    assert wer([s.text for s in samples], [sd.spoken_text(s.text) for s in samples]) == 0.0


# -- pyannote ---------------------------------------------------------------------------------------
def test_pyannote_utterances_follow_the_stm():
    samples = sd.pyannote_utterances()
    assert len(samples) == 13
    assert {s.info["speaker"] for s in samples} == {"Diane", "Sheila"}
    diane = samples[6]
    assert diane.text == "This is Diane in New Jersey." and diane.info["speaker"] == "Diane"
    assert abs(diane.duration - (14.184 - 12.542)) < 1e-3
    full, rate = sf.read(str(sd.pyannote_sample_dir() / "sample.wav"), dtype="float32")
    assert rate == 16000
    np.testing.assert_array_equal(diane.audio, full[round(12.542 * rate):round(14.184 * rate)])
    for s in samples:
        assert s.sampling_rate == 16000 and s.text and 0.3 < s.duration < 5
        assert np.sqrt(np.mean(s.audio**2)) > 1e-3


# -- rendering --------------------------------------------------------------------------------------
BASE = sd.UtteranceParams(accent="en-us", variant="m1", speed=160, pitch=50, telephone=False, snr_db=None,
                          noise_kind="white", noise_seed=7, gain=0.5)
TEXT = "the quick brown fox jumps over the lazy dog"


def test_add_noise_gives_the_asked_snr():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    for kind in sd.NOISE_KINDS:
        for snr in (30.0, 20.0, 10.0, 0.0):
            noise = sd.add_noise(speech, snr, kind, rng).astype(np.float64) - speech
            measured = 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise**2))
            assert abs(measured - snr) < 0.01, (kind, snr, measured)
    pink = sd.noise("pink", 1 << 16, rng)
    power = np.abs(np.fft.rfft(pink)) ** 2
    low, high = power[100:200].mean(), power[10000:20000].mean()  # 1/f: ~100x less power 100x higher
    assert 30 < low / high < 300
    with pytest.raises(ValueError, match="silent"):
        sd.add_noise(np.zeros(100, np.float32), 10.0, "white", rng)


def test_render_end_to_end_snr_band_and_speed():
    clean = sd.render(TEXT, BASE)
    assert clean.dtype == np.float32 and 1.0 < len(clean) / 16000 < 5.0
    np.testing.assert_array_equal(clean * 32768, np.round(clean * 32768))  # 16-bit grid
    assert abs(np.max(np.abs(clean)) - BASE.gain) < 1e-3
    for snr in (20.0, 10.0):
        noisy = sd.render(TEXT, replace(BASE, snr_db=snr)).astype(np.float64)
        scale = noisy @ clean / (clean @ clean)  # noisy = scale * clean + noise
        noise = noisy - scale * clean
        measured = 10 * np.log10(np.sum((scale * clean) ** 2) / np.sum(noise**2))
        assert abs(measured - snr) < 0.3, (snr, measured)
    noisy_params = replace(BASE, snr_db=10.0)
    np.testing.assert_array_equal(sd.render(TEXT, noisy_params), sd.render(TEXT, noisy_params))  # seeded

    def share_above_4k(audio):
        power = np.abs(np.fft.rfft(audio)) ** 2
        return power[len(power) // 2 + 200:].sum() / power.sum()  # bins above ~4.1 kHz

    assert share_above_4k(sd.render(TEXT, replace(BASE, telephone=True))) < 1e-4 < share_above_4k(clean)
    slow, fast = (len(sd.render(TEXT, replace(BASE, speed=s))) for s in (130, 190))
    assert 1.2 < slow / fast < 1.8


def test_every_voice_and_variant_is_real():
    """espeak-ng falls back silently to the plain voice on an unknown variant name."""
    plain = sd.espeak("hello there", "en-us")[0]
    for variant in sd.MALE_VARIANTS + sd.FEMALE_VARIANTS:
        audio = sd.espeak("hello there", f"en-us+{variant}")[0]
        assert len(audio) != len(plain) or not np.array_equal(audio, plain), variant
    accents = [sd.espeak("the water is not hot", f"{accent}+f2")[0] for accent in sd.ACCENTS]
    assert len({a.tobytes() for a in accents}) == len(sd.ACCENTS)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        sd.synthetic_speech("test")
    with pytest.raises(ValueError, match="positive"):
        sd.synthetic_speech("train", n=0)


# -- synthetic sets and the cache -------------------------------------------------------------------
@pytest.mark.slow
def test_training_texts_are_disjoint_from_validation_and_tests(speech_cache):
    train, validation = ({t for t, _ in sd.training_texts(s)} for s in sd.SPLITS)
    assert len(train) > 100_000 and len(validation) > 5_000
    assert not train & validation
    held_out = sd.held_out_transcripts()
    assert "hello world" in held_out and "this is diane in new jersey" in held_out
    assert not (train | validation) & held_out
    for text in list(train)[:2000]:
        words = text.split()
        assert sd.MIN_WORDS <= len(words) <= sd.MAX_WORDS and text == sd.spoken_text(text)
        assert not any(c.isdigit() for c in text)


@pytest.mark.slow
def test_synthetic_speech_is_cached_and_rebuilt_when_damaged(speech_cache, monkeypatch):
    first = sd.synthetic_speech("train", n=16, seed=3)
    pool = {t for t, _ in sd.training_texts("train")}
    assert len({s.text for s in first}) == 16 and all(s.text in pool for s in first)
    assert len({(s.info["accent"], s.info["variant"]) for s in first}) > 4
    assert {s.info["snr_db"] for s in first} > {None}
    for s in first:
        assert s.sampling_rate == 16000 and s.audio.dtype == np.float32 and 0.5 < s.duration < 10
        assert s.source.startswith(("wordnet:", "fortunes:"))

    render_calls = []
    real_render_many = sd.render_many
    monkeypatch.setattr(sd, "render_many", lambda *a, **k: render_calls.append(1) or real_render_many(*a, **k))
    start = time.perf_counter()
    second = sd.synthetic_speech("train", n=16, seed=3)
    assert not render_calls and time.perf_counter() - start < 2.0  # a cache hit
    assert [s.text for s in second] == [s.text for s in first]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.audio, b.audio)
        assert a.info == b.info

    folder = sd.speech_cache_path("train", 16, 3)
    audio_file = Path(folder) / "audio.npy"
    data = bytearray(audio_file.read_bytes())
    data[-1000] ^= 0xFF  # one damaged sample: the checksum catches it
    audio_file.write_bytes(bytes(data))
    third = sd.synthetic_speech("train", n=16, seed=3)
    assert render_calls == [1]
    for a, b in zip(first, third):
        np.testing.assert_array_equal(a.audio, b.audio)  # rebuilt, same seeds, same audio
    (Path(folder) / "meta.json").write_text("{truncated")
    sd.synthetic_speech("train", n=16, seed=3)
    assert render_calls == [1, 1]

    other_seed = sd.synthetic_speech("train", n=16, seed=4)
    assert {s.text for s in other_seed} != {s.text for s in first}
    validation = sd.synthetic_speech("validation", n=4)
    assert not {s.text for s in validation} & pool
