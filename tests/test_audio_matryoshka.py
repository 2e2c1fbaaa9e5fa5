"""Matryoshka compression against a naive loop over clips and groups; one Llama-MTSK projector per rate."""
import math

import pytest
import torch

from zoo.multimodal.matryoshka import MatryoshkaCompressor, average_pool, compressed_lengths, stack_frames

pytestmark = pytest.mark.usefixtures("single_thread")


def naive(features: torch.Tensor, lengths: list[int], rate: int, mode: str) -> list[torch.Tensor]:
    """Per clip, per group of `rate` real frames: their mean, or their concatenation padded with zeros."""
    out = []
    for b, length in enumerate(lengths):
        rows = []
        for start in range(0, length, rate):
            group = [features[b, t] for t in range(start, min(start + rate, length))]
            if mode == "avg":
                rows.append(sum(group) / len(group))
            else:
                group += [torch.zeros_like(group[0])] * (rate - len(group))
                rows.append(torch.cat(group))
        out.append(torch.stack(rows) if rows else torch.zeros(0, features.shape[-1] * (rate if mode == "stack" else 1)))
    return out


@pytest.mark.parametrize("mode, fn", [("avg", average_pool), ("stack", stack_frames)])
@pytest.mark.parametrize("rate", [1, 2, 3, 4, 7])
def test_compression_matches_a_naive_loop(mode, fn, rate):
    lengths = [11, 4, 1, 9]  # ragged: last groups partial, frames past each length hold junk
    features = torch.randn(4, 11, 5, generator=torch.Generator().manual_seed(rate))
    got, new_lengths = fn(features, torch.tensor(lengths), rate)
    assert new_lengths.tolist() == [math.ceil(n / rate) for n in lengths]
    assert got.shape == (4, math.ceil(11 / rate), 5 * (rate if mode == "stack" else 1))
    for b, want in enumerate(naive(features, lengths, rate, mode)):
        torch.testing.assert_close(got[b, : want.shape[0]], want, rtol=1e-6, atol=1e-6)
        assert torch.all(got[b, want.shape[0]:] == 0)


def test_stacking_keeps_time_order():
    features = torch.arange(10.0).reshape(1, 5, 2)  # frame t = [2t, 2t + 1]
    got, lengths = stack_frames(features, torch.tensor([5]), 2)
    assert got.tolist() == [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]] and lengths.tolist() == [3]


@pytest.mark.parametrize("mode", ["avg", "stack"])
def test_one_llama_mtsk_projector_per_rate(mode):
    torch.manual_seed(0)
    compressor = MatryoshkaCompressor(in_features=6, out_features=8, rates=(4, 1, 2), mode=mode, intermediate_size=10)
    assert list(compressor.projectors) == ["1", "2", "4"] and compressor.rates == (1, 2, 4)
    features, lengths = torch.randn(2, 9, 6), torch.tensor([9, 5])
    for rate in (1, 2, 4):
        projector = compressor.projectors[str(rate)]
        c_in = 6 * (rate if mode == "stack" else 1)
        assert [type(m).__name__ for m in projector] == ["Linear", "ReLU", "Linear", "LayerNorm"]
        assert projector[0].in_features == c_in and projector[0].out_features == 10 and projector[2].out_features == 8
        got, new_lengths = compressor(features, lengths, rate)
        merged = naive(features, lengths.tolist(), rate, mode)
        for b, rows in enumerate(merged):
            hidden = torch.relu(rows @ projector[0].weight.T + projector[0].bias) @ projector[2].weight.T + projector[2].bias
            want = torch.nn.functional.layer_norm(hidden, (8,), projector[3].weight, projector[3].bias)
            torch.testing.assert_close(got[b, : rows.shape[0]], want, rtol=1e-5, atol=1e-5)
            assert torch.all(got[b, rows.shape[0]:] == 0)
        assert new_lengths.tolist() == [compressed_lengths(9, rate), compressed_lengths(5, rate)]


def test_bad_settings_name_the_field():
    compressor = MatryoshkaCompressor(in_features=4, out_features=4, rates=(1, 2))
    with pytest.raises(ValueError, match=r"rate 3 has no projector; this compressor has rates \[1, 2\]"):
        compressor(torch.zeros(1, 4, 4), torch.tensor([4]), 3)
    with pytest.raises(ValueError, match=r"\[batch, frames, 4\]"):
        compressor(torch.zeros(1, 4, 5), torch.tensor([4]), 1)
    with pytest.raises(ValueError, match="lengths must lie in"):
        compressor(torch.zeros(1, 4, 4), torch.tensor([5]), 1)
    with pytest.raises(ValueError, match="mode must be one of"):
        MatryoshkaCompressor(in_features=4, out_features=4, mode="max")
    with pytest.raises(ValueError, match="distinct"):
        MatryoshkaCompressor(in_features=4, out_features=4, rates=(2, 2))
    with pytest.raises(ValueError, match="positive integer, got 0"):
        MatryoshkaCompressor(in_features=4, out_features=4, rates=(0,))
    with pytest.raises(ValueError, match="out_features must be a positive integer"):
        MatryoshkaCompressor(in_features=4, out_features=0)
