"""The paper-size MoME-23/4 presets on the meta device: counts against the formulas written out by hand
(the paper's sizes: Llama 3.2-1B, Whisper-medium, 23 routed + 1 shared bottleneck-12 experts, top-4)."""
from __future__ import annotations

import pytest

from zoo.models.mome.presets import PRESETS, build_on_meta, counts, parameter_counts, preset_config

H, LAYERS, B, ROUTED, SHARED, K = 2048, 16, 12, 23, 1, 4


def projector(in_features=1024, hidden=2048, out=2048):  # Linear + ReLU + Linear + LayerNorm
    return in_features * hidden + hidden + hidden * out + out + 2 * out


def test_avsr_preset_counts_match_the_formulas_and_name_the_gap_to_the_paper():
    model = build_on_meta(preset_config("mome-23/4-avsr"))
    assert all(p.is_meta for p in model.parameters())  # nothing was materialised
    c = parameter_counts(model)
    expert = 2 * B * H
    assert c["mome_total"] == LAYERS * (ROUTED * H + (ROUTED + SHARED) * expert) == 19_628_032
    assert c["mome_active"] == LAYERS * (ROUTED * H + (SHARED + K) * expert) == 4_685_824
    assert c["audio_projector_per_rate"] == c["video_projector_per_rate"] == projector() == 6_299_648
    assert c["trainable"] == 4 * projector() + c["mome_total"]
    assert c["active_trainable"] == 2 * projector() + c["mome_active"] == 17_285_120
    assert c["language_model"] == 1_235_814_400  # Llama 3.2-1B as published (tied embeddings)
    assert c["audio_tower"] == 307_216_384  # Whisper-medium's encoder
    # the published 12.7 M active sits between projector widths 1024 and 2048 (see presets.py)
    narrow = counts("mome-23/4-avsr", projector_hidden_size=1024)
    assert narrow["active_trainable"] < PRESETS["mome-23/4-avsr"][1] < c["active_trainable"]


@pytest.mark.parametrize("placement", ["ffn", "layer"])
def test_every_placement_has_the_same_mome_size(placement):
    c = counts("mome-23/4-asr", mome_placement=placement)
    assert c["mome_total"] == 19_628_032 and c["mome_active"] == 4_685_824
    assert c["audio_projectors"] == 5 * projector() and c["video_projectors"] == 0
