"""WhisperAudioTower against transformers' own WhisperEncoder, and the trimmed encoder against each
clip run alone (a plain loop over the same modules)."""
import pytest
import torch
from torch.nn import functional as F
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from zoo.multimodal.audio_tower import WhisperAudioTower, build_audio_tower, encoder_lengths, mel_frames

TINY = dict(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
            decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=64, num_mel_bins=80)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return WhisperEncoder(WhisperConfig(**TINY)).eval()


def mels(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(seed))


def solo_reference(encoder, features: torch.Tensor) -> torch.Tensor:
    """One clip [80, L] alone through the encoder's modules at its own length (no padding anywhere)."""
    h = F.gelu(encoder.conv1(features[None]))
    h = F.gelu(encoder.conv2(h)).transpose(1, 2)
    h = h + encoder.embed_positions.weight[: h.shape[1]]
    for layer in encoder.layers:
        h = layer(h, None)
    return encoder.layer_norm(h)[0]


def test_padded_tower_is_transformers_whisper_encoder(encoder):
    tower = WhisperAudioTower(encoder, trim=False)
    x, lengths = mels(2, 3000), torch.tensor([3000, 701])
    with torch.no_grad():
        want = encoder(x).last_hidden_state  # [2, 1500, 16]
        got, out_lengths = tower(x, lengths)
    assert out_lengths.tolist() == [1500, 351] and got.shape == (2, 1500, 16)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1, :351], want[1, :351], rtol=0, atol=0)
    assert torch.all(got[1, 351:] == 0)


def test_trimmed_tower_at_full_length_equals_the_padded_one(encoder):
    x = mels(1, 3000, seed=1)
    with torch.no_grad():
        want = encoder(x).last_hidden_state
        got, _ = WhisperAudioTower(encoder, trim=True)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_trimmed_batch_gives_each_clip_what_it_gets_alone(encoder):
    tower = WhisperAudioTower(encoder, trim=True)
    lengths = torch.tensor([37, 120, 64, 1])
    x = mels(4, 130, seed=2)  # frames past each length are arbitrary (other clips' padding)
    with torch.no_grad():
        got, out_lengths = tower(x, lengths)
        assert out_lengths.tolist() == [19, 60, 32, 1] and got.shape == (4, 60, 16)
        for b, length in enumerate(lengths.tolist()):
            want = solo_reference(encoder, x[b, :, :length])
            torch.testing.assert_close(got[b, : want.shape[0]], want, rtol=1e-5, atol=1e-5)
            assert torch.all(got[b, want.shape[0]:] == 0)


def test_length_formulas_match_the_modules():
    conv2 = torch.nn.Conv1d(1, 1, kernel_size=3, stride=2, padding=1)
    for frames in (1, 2, 3, 150, 2999, 3000):
        assert encoder_lengths(frames) == conv2(torch.zeros(1, 1, frames)).shape[-1]
    assert encoder_lengths(torch.tensor([1, 2, 3])).tolist() == [1, 1, 2]
    assert [mel_frames(n) for n in (1, 160, 161, 16000, 480000, 10**7)] == [1, 1, 2, 100, 3000, 3000]


def test_tower_is_frozen_and_reports_its_geometry(encoder):
    tower = WhisperAudioTower(encoder)
    assert tower.trim is False  # the measured-safe default (benchmarks/audio_encoder.py)
    assert tower.hidden_size == 16 and tower.frames_per_second == 50
    assert not any(p.requires_grad for p in tower.parameters())
    tower.train()
    assert tower.training and not tower.encoder.training


def test_bad_inputs_name_the_problem(encoder):
    padded, trimmed = WhisperAudioTower(encoder), WhisperAudioTower(encoder, trim=True)
    with pytest.raises(ValueError, match="80 mel bins"):
        padded(torch.zeros(1, 128, 3000))
    with pytest.raises(ValueError, match="needs 3000 mel frames"):
        padded(torch.zeros(1, 80, 200))
    with pytest.raises(ValueError, match="more than one Whisper window"):
        trimmed(torch.zeros(1, 80, 3002))
    with pytest.raises(ValueError, match=r"feature_lengths must lie in \[1, 200\]"):
        trimmed(torch.zeros(2, 80, 200), torch.tensor([0, 200]))
    with pytest.raises(ValueError, match="one entry per clip"):
        trimmed(torch.zeros(2, 80, 200), torch.tensor([5]))


def test_spec_builds_config_and_named_architectures_without_weights():
    tower = build_audio_tower({"kind": "whisper", "config": TINY, "trim": True})
    assert tower.hidden_size == 16 and tower.trim
    with torch.device("meta"):  # paper-size check: the packaged architecture, no package read
        base = build_audio_tower({"kind": "whisper", "name": "base", "weights": "packaged"})
    assert base.hidden_size == 512 and len(base.encoder.layers) == 6
    assert sum(p.numel() for p in base.parameters()) == 20_590_592  # Whisper base's encoder
    tiny = build_audio_tower({"kind": "whisper", "name": "tiny.en"}, load_weights=False)
    assert tiny.hidden_size == 384 and len(tiny.encoder.layers) == 4
    for spec, message in [({"kind": "clap"}, "kind must be 'whisper'"),
                          ({"kind": "whisper"}, "exactly one of 'name'"),
                          ({"kind": "whisper", "name": "large"}, "packaged Whisper 'large' unknown"),
                          ({"kind": "whisper", "name": "tiny.en", "weights": "hub"}, "weights must be 'packaged'"),
                          ({"kind": "whisper", "config": TINY, "layers": 3}, "unknown keys"),
                          ({"kind": "whisper", "config": TINY, "trim": "yes"}, "'trim' must be true or false")]:
        with pytest.raises(ValueError, match=message):
            build_audio_tower(spec)
