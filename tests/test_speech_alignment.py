"""Stage 0 of the speech recipes (zoo.pipelines.speech_alignment): the token-CTC alignment of a projector to the
LLM's embedding rows learns (the CTC loss falls and greedy CTC decoding recovers the words of frames that encode
them), resumes exactly after a kill, rescales to the embedding norm, and initialises every rate's projector."""
from __future__ import annotations

import pytest
import torch

from tests.tiny_mome import RATES, tiny_model, tiny_processor
from zoo.multimodal.matryoshka import MatryoshkaCompressor
from zoo.pipelines import speech_alignment as sa
from zoo.pipelines import train_mome as tm

SENTENCES = ["hello world", "one two three", "yes no", "four five six", "seven eight nine ten", "the speech is on"]
SETTINGS = {"align_steps": 60, "align_batch_size": 6, "align_lr": 1e-2, "align_rate": 2, "save_every": 20}


def word_speech(tokenizer, channels: int = 16, frames_per_word: int = 6, n: int = 24) -> tm.EncodedSpeech:
    """Clips whose frames spell their words: each word is `frames_per_word` noisy copies of that word's own vector,
    with silence frames between, so a projector can learn the mapping."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(len(tokenizer), channels, generator=generator)
    silence = torch.zeros(2, channels)
    frames, texts = [], []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        parts = []
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            parts += [silence, codes[token] + 0.1 * torch.randn(frames_per_word, channels, generator=generator)]
        frames.append(torch.cat(parts + [silence]))
        texts.append(text)
    return tm.EncodedSpeech(frames, texts, [f"words:{i}" for i in range(n)])


def setup():
    torch.manual_seed(0)
    processor = tiny_processor()
    model = tiny_model(trained=False)
    embeddings = model.get_input_embeddings().weight.detach()
    data = word_speech(processor.tokenizer, channels=model.audio_projectors.in_features)
    compressor = MatryoshkaCompressor(in_features=model.audio_projectors.in_features,
                                      out_features=model.audio_projectors.out_features, rates=[SETTINGS["align_rate"]])
    return processor, model, embeddings, data, compressor


def greedy(head, data, tokenizer) -> list[str]:
    with torch.no_grad():
        logits, lengths = head(*sa.padded_frames(data, range(len(data))))
    texts = []
    for best, length in zip(logits.argmax(-1), lengths):
        labels = [k for k in torch.unique_consecutive(best[: int(length)]).tolist() if k]
        texts.append(head.text(labels, tokenizer))
    return texts


def test_the_alignment_learns_the_words_and_rescales_to_the_embedding_norm(tmp_path):
    processor, model, embeddings, data, compressor = setup()
    head = sa.TokenCtcHead(compressor, embeddings, sa.vocabulary_of(data.texts, processor.tokenizer), SETTINGS["align_rate"])
    before = head.ctc_loss(*sa.padded_frames(data, range(len(data))), data.texts, processor.tokenizer).item()
    state = sa.aligned_projector(tmp_path / "aligned.safetensors", compressor, data, processor.tokenizer, embeddings,
                                 SETTINGS, resume=False, seed=0, checkpoint_dir=tmp_path / "ckpt", head=head)
    after = head.ctc_loss(*sa.padded_frames(data, range(len(data))), data.texts, processor.tokenizer).item()
    assert after < 0.3 * before
    hits = sum(h == t for h, t in zip(greedy(head, data, processor.tokenizer), data.texts))
    assert hits >= len(data) // 2, greedy(head, data, processor.tokenizer)[:4]
    projector = compressor.projectors["2"]
    with torch.no_grad():
        merged, lengths = compressor.compress(*sa.padded_frames(data, range(len(data))), 2)
        out = projector(merged)
        norms = out[torch.arange(out.shape[1]) < lengths[:, None]].norm(dim=-1)
    assert norms.mean().item() == pytest.approx(embeddings.norm(dim=-1).mean().item(), rel=0.1)
    assert set(state) == set(projector.state_dict())
    # a second call reuses the saved projector instead of training again
    again = sa.aligned_projector(tmp_path / "aligned.safetensors", compressor, data, processor.tokenizer, embeddings,
                                 SETTINGS, resume=False, seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert all(torch.equal(again[k], state[k]) for k in state)


class Killed(Exception):
    pass


def test_a_killed_alignment_resumes_to_the_same_projector(tmp_path, monkeypatch):
    def aligned(folder, **kwargs):
        processor, _, embeddings, data, compressor = setup()
        return sa.aligned_projector(folder / "aligned.safetensors", compressor, data, processor.tokenizer, embeddings,
                                    SETTINGS, seed=0, checkpoint_dir=folder / "ckpt", **kwargs)

    straight = aligned(tmp_path / "straight", resume=False)
    real, calls = sa.padded_frames, [0]

    def dying(*args):
        calls[0] += 1
        if calls[0] == 45:  # after the checkpoint of step 40
            raise Killed
        return real(*args)

    monkeypatch.setattr(sa, "padded_frames", dying)
    with pytest.raises(Killed):
        aligned(tmp_path / "run", resume=False)
    monkeypatch.undo()
    resumed = aligned(tmp_path / "run", resume=True)
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def test_every_rate_starts_from_the_aligned_projector():
    _, model, _, _, compressor = setup()
    state = compressor.projectors["2"].state_dict()
    sa.initialise_projectors_(model.audio_projectors, state)
    for rate in RATES:
        for name, value in model.audio_projectors.projectors[str(rate)].state_dict().items():
            assert torch.equal(value, state[name]), (rate, name)
    stacked = MatryoshkaCompressor(in_features=4, out_features=8, rates=[2], mode="stack")
    with pytest.raises(ValueError, match="average-pooling"):
        sa.initialise_projectors_(stacked, state)
