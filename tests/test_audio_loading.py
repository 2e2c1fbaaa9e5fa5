"""zoo.multimodal.audio: decode, mix down, resample to 16 kHz, chunk, refuse bad input."""
import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.multimodal.audio import CHUNK_SAMPLES, chunk_waveform, load_audio, load_audio_chunks

pytestmark = pytest.mark.usefixtures("single_thread")


def sine(rate: int, seconds: float = 1.0, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resampled_sine_matches_the_analytic_16k_signal(rate, tmp_path):
    path = tmp_path / f"sine{rate}.wav"
    sf.write(path, sine(rate), rate, subtype="FLOAT")
    got = load_audio(path)
    assert got.dtype == torch.float32 and got.numel() == 16000  # 1 s at 16 kHz
    want = torch.from_numpy(sine(16000))
    interior = slice(200, -200)  # the sinc filter's edge effects at the clip boundaries
    torch.testing.assert_close(got[interior], want[interior], rtol=0, atol=5e-3)


def test_stereo_is_mixed_down_to_the_channel_mean(tmp_path):
    left, right = sine(16000), -0.5 * sine(16000, freq=300.0)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    torch.testing.assert_close(load_audio(path), torch.from_numpy((left + right) / 2), rtol=0, atol=1e-7)


def test_gradio_tuple_bytes_path_and_array_agree(tmp_path):
    stereo = (np.stack([sine(22050), sine(22050, freq=200.0)], axis=1) * 32767).astype(np.int16)  # [N, 2]
    path = tmp_path / "pcm16.wav"
    sf.write(path, stereo, 22050, subtype="PCM_16")
    from_path = load_audio(path)
    assert torch.equal(load_audio(path.read_bytes()), from_path)
    assert torch.equal(load_audio(str(path)), from_path)
    torch.testing.assert_close(load_audio((22050, stereo)), from_path, rtol=0, atol=1e-6)  # gradio: (rate, int16)
    float_stereo = stereo.astype(np.float32) / 32768
    for layout in (float_stereo, float_stereo.T, torch.from_numpy(float_stereo)):  # [N, C], [C, N], tensor
        torch.testing.assert_close(load_audio(layout, sampling_rate=22050), from_path, rtol=0, atol=1e-6)
    mono = load_audio(float_stereo[:, 0], sampling_rate=22050)
    assert mono.numel() == from_path.numel()


def test_long_clips_are_chunked_into_30_s_windows_not_truncated(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "long.wav"
    sf.write(path, (0.1 * rng.standard_normal(8000 * 75)).astype(np.float32), 8000, subtype="FLOAT")
    waveform = load_audio(path)
    chunks = load_audio_chunks(path)
    assert [c.numel() for c in chunks] == [CHUNK_SAMPLES, CHUNK_SAMPLES, 16000 * 15]
    assert torch.equal(torch.cat(chunks), waveform)
    assert [c.numel() for c in chunk_waveform(torch.zeros(CHUNK_SAMPLES))] == [CHUNK_SAMPLES]


def test_real_8k_prompt_is_upsampled_to_16k():
    path = "/usr/share/asterisk/sounds/en_US_f_Allison/hello-world.wav"
    import os
    assert os.path.isfile(path), "apt-get install asterisk-core-sounds-en-wav (scripts/install.sh does)"
    info = sf.info(path)
    assert info.samplerate == 8000
    assert load_audio(path).numel() == 2 * info.frames


def test_bad_audio_raises_naming_the_file_and_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(ValueError, match=r"notes\.wav.* not audio that soundfile can read"):
        load_audio(text)
    with pytest.raises(ValueError, match="audio bytes .* not audio"):
        load_audio(b"\x00\x01garbage")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match=r"empty\.wav.* no samples"):
        load_audio(empty)
    nan = sine(16000)
    nan[100] = np.nan
    nan[200] = np.inf
    with pytest.raises(ValueError, match="2 non-finite"):
        load_audio(nan, sampling_rate=16000)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(8000 * 61, np.float32), 8000)
    with pytest.raises(ValueError, match=r"long\.wav' is 61\.0 s long, more than the maximum of 60 s"):
        load_audio(long, max_seconds=60)
    assert load_audio(long, max_seconds=None).numel() == 16000 * 61
    with pytest.raises(ValueError, match="96000 Hz is outside the supported 8000-48000 Hz"):
        load_audio(sine(96000), sampling_rate=96000)
    with pytest.raises(ValueError, match="pass sampling_rate"):
        load_audio(sine(16000))
    with pytest.raises(ValueError, match="read from the file"):
        load_audio(long, sampling_rate=8000)
    with pytest.raises(ValueError, match=r"got shape \(100, 200\)"):
        load_audio(np.zeros((100, 200), np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="got dict"):
        load_audio({"array": sine(16000)})
