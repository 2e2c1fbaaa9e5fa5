"""Uni-MoE's released sizes on the meta device (never materialised) against the reference figures, and the
config's validation (each error names the field)."""
import pytest

from tests.tiny_unimoe import tiny_config, tiny_processor
from zoo.models.unimoe import UniMoeConfig
from zoo.models.unimoe.presets import PRESETS, counts

pytestmark = pytest.mark.usefixtures("single_thread")
FFN = 3 * 4096 * 11008  # one Llama-2 7B FFN
LORA = 8 * (4096 + 2 * 11008) + 8 * (11008 + 4096)  # r 8 over [gate; up] and down


@pytest.mark.parametrize("name, experts", [("v1-4e", 4), ("8e", 8)])
def test_preset_counts_match_the_reference_figures(name, experts):
    c = counts(name)
    reference = PRESETS[name][1]
    assert c["language_model_active"] == pytest.approx(reference["active"], rel=0.01)  # 11.1B
    assert c["language_model"] == pytest.approx(reference["total"], rel=0.01)  # 19.7B / 37B
    # exact: the 4E and 8E models differ by 4 full experts (frozen FFN + LoRA) and 4 router rows per layer
    non_moe = c["language_model"] - 32 * experts * (FFN + LORA) - 32 * experts * 4096
    assert non_moe == 32000 * 4096 * 2 + 32 * (4 * 4096 * 4096 + 2 * 4096) + 4096  # embeddings, head, attention, norms
    assert c["language_model_active"] == non_moe + 32 * (2 * (FFN + LORA) + experts * 4096)
    assert c["expert_lora"] == 32 * experts * LORA
    assert c["vision_tower"] == pytest.approx(303.5e6, rel=1e-3) and c["audio_tower"] == pytest.approx(88.2e6, rel=1e-3)


def test_presets_are_built_on_the_meta_device():
    from zoo.models.unimoe import UniMoeForConditionalGeneration
    from zoo.models.unimoe.presets import preset_config
    from zoo.multimodal.modeling import build_on_meta

    model = build_on_meta(UniMoeForConditionalGeneration, preset_config("v1-4e"))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.moe_feed_forwards()[0].moe.experts.gate_up_proj.shape == (4, 2 * 11008, 4096)


@pytest.mark.parametrize("fields, message", [
    (dict(expert_sources=["a", "b"]), r"UniMoeConfig.expert_sources names 2 sources, one per expert is needed"),
    (dict(expert_sources=["a", "", "c", "d"]), r"UniMoeConfig.expert_sources must be a list of source names"),
    (dict(audio_expert_indices=[4]), r"UniMoeConfig.audio_expert_indices must list experts in \[0, num_experts=4\)"),
    (dict(video_expert_indices=[-1]), r"UniMoeConfig.video_expert_indices\[0\] must be an integer >= 0"),
    (dict(modality_l1_loss_coef=0.1), r"UniMoeConfig.modality_l1_loss_coef > 0 needs designated experts"),
    (dict(modality_kl_loss_coef=-0.1), r"UniMoeConfig.modality_kl_loss_coef must be a finite number >= 0"),
    (dict(expert_lora_alpha=0), r"UniMoeConfig.expert_lora_alpha must be a finite number > 0"),
    (dict(capacity_factor=0.0), r"UniMoeConfig.capacity_factor must be a finite number > 0 or None"),
    (dict(audio_tower={"kind": "beats"}), r"UniMoeConfig.audio_tower must be a spec dict with kind 'whisper'"),
    (dict(text_config={"model_type": "gpt2", "n_layer": 2}), r"UniMoeConfig.text_config: .* gated \(SwiGLU\) decoder"),
    (dict(num_audio_query_tokens=0), r"UniMoeConfig.num_audio_query_tokens must be a positive integer"),
])
def test_a_bad_config_field_is_refused_naming_it(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tiny_processor(), **fields)


def test_defaults_are_the_v1_4e_architecture():
    config = UniMoeConfig()
    assert (config.text_config.hidden_size, config.text_config.intermediate_size, config.text_config.num_hidden_layers) == \
        (4096, 11008, 32)
    assert config.vision_tower["config"]["image_size"] == 336 and config.audio_tower["config"]["d_model"] == 768
    assert (config.num_experts, config.num_experts_per_tok, config.expert_lora_rank, config.expert_lora_alpha) == (4, 2, 8, 16)
    assert config.moe_layers == "all" and config.capacity_factor is None and config.num_audio_query_tokens == 50
