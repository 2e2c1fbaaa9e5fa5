"""MoVA's paper size on the meta device: Llama-3-8B + CLIP-L/14 at 672 px + the release's seven experts."""
import pytest

from zoo.models.mova.presets import PRESETS, counts


def test_the_paper_preset_builds_on_meta_and_prints_its_parameter_count(single_thread, capsys):
    parts = counts("paper")
    with capsys.disabled():
        print(f"\nMoVA-8B (meta): total {parts['total'] / 1e9:.2f}B = LLM {parts['language_model'] / 1e9:.3f}B + base "
              f"{parts['base_encoder'] / 1e6:.1f}M + experts {parts['experts_total'] / 1e9:.2f}B {parts['experts']} + "
              f"MoV-Adapter {parts['mov_adapter'] / 1e6:.1f}M + BERT {parts['question_encoder'] / 1e6:.1f}M + downsample "
              f"{parts['downsample'] / 1e6:.1f}M + projector {parts['projector'] / 1e6:.1f}M")
    assert parts["language_model"] == parts["reference"]["language_model"]  # Llama-3-8B's 8,030,261,248
    assert 303e6 < parts["base_encoder"] < 307e6  # CLIP-L/14 303.5M + its position table at 48 x 48
    assert 1.13e9 < parts["experts"]["DINOv2"] < 1.14e9 and 85e6 < parts["experts"]["BiomedCLIP"] < 87e6
    assert 630e6 < parts["experts"]["SAM"] < 640e6  # SAM ViT-H's image encoder
    assert 330e6 < parts["question_encoder"] < 340e6  # BERT-large without its pooler
    # the adapter by hand: per block 7 cross-attentions (q, proj: C x C; k, v: C_j -> C), self-attention, SwiGLU, gate
    c, inner, experts = 1024, int(8 * 1024 / 3), [1536, 512, 256, 1536, 768, 768, 256]
    ln = 2 * c
    cross = sum(2 * (c * c + c) + 2 * (cj * c + c) + ln + ln + 2 * cj for cj in experts)  # + norm1 (C), norm2 (C_j)
    block = cross + (4 * (c * c + c) + ln) + 2 * (c * inner + inner) + 2 * inner + (inner * c + c) + 2 * ln \
        + (2048 * c + c) + (c * 7 + 7)
    assert parts["mov_adapter"] == 3 * block + 48 * 48 * c
    assert parts["total"] == sum(v for k, v in parts.items() if k not in ("total", "experts", "reference"))


def test_mutating_a_preset_does_not_change_the_next_lookup():
    fields, _ = PRESETS["paper"]
    fields["vision_experts"].clear()
    assert len(PRESETS["paper"][0]["vision_experts"]) == 7
    with pytest.raises(KeyError, match="unknown MoVA preset 'huge'"):
        PRESETS["huge"]
