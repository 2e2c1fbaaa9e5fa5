"""Do the frozen Whisper tiny.en frames carry the words? A CTC probe on the MoME recipe's cached frames.

    python -m benchmarks.speech_ctc_probe                       # characters, rate 2, linear head (~1 min + caching)
    python -m benchmarks.speech_ctc_probe --target tokens --rates 2,4,8,16   # SmolLM2 word pieces (slow)

frames [B, T, 384] (trimmed encoder output of the espeak training utterances, cached by the recipe)
    --average pooling at rate r--> [B, T/r, 384]
    --chars:  LayerNorm -> Linear(384, 29)                               (blank + space + a-z + ')
    --tokens: the rate's MoME projector -> cosine to SmolLM2's embedding rows of the training texts' tokens
              (zoo.pipelines.speech_alignment.TokenCtcHead, the recipe's stage 0)
    --> CTC against the transcript; greedy CTC decoding on espeak validation and the Asterisk prompts (real voice).

A probe, not a model: it says whether a connector has something to read, and how hard the word pieces are
to learn from 2000 utterances. Printed: CTC loss every 100 steps, word error rate and one example per set.
"""
from __future__ import annotations

import argparse
import random
import time

import torch
from torch import nn
from torch.nn import functional as F

from zoo.multimodal.matryoshka import average_pool
from zoo.pipelines import speech_data
from zoo.pipelines import train_mome as recipe
from zoo.pipelines.speech_alignment import TokenCtcHead, padded_frames as padded, vocabulary_of
from zoo.pipelines.speech_metrics import wer

CHARS = " abcdefghijklmnopqrstuvwxyz'"


class CharacterHead(nn.Module):
    """Characters from pooled frames: index 0 is the CTC blank."""

    def __init__(self, channels: int, rate: int):
        super().__init__()
        self.rate = rate
        self.norm, self.classify = nn.LayerNorm(channels), nn.Linear(channels, len(CHARS) + 1)

    def forward(self, frames, lengths):
        pooled, pooled_lengths = average_pool(frames, lengths, self.rate)
        return self.classify(self.norm(pooled)), pooled_lengths

    def targets(self, text: str, tokenizer) -> list[int]:
        return [CHARS.index(c) + 1 for c in text.lower() if c in CHARS]

    def text(self, labels: list[int], tokenizer) -> str:
        return "".join(CHARS[k - 1] for k in labels)


def greedy_texts(head, encoded, tokenizer, batch_size: int = 64) -> list[str]:
    texts = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            logits, lengths = head(*padded(encoded, range(start, min(start + batch_size, len(encoded)))))
            for best, length in zip(logits.argmax(-1), lengths):
                labels = torch.unique_consecutive(best[: int(length)])
                texts.append(speech_data.spoken_text(head.text([k for k in labels.tolist() if k], tokenizer)))
    return texts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("chars", "tokens"), default="chars")
    parser.add_argument("--rates", default="2", help="comma-separated compression rates, one head each")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="default 3e-3 (chars) / 2e-3 (tokens)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rates = [int(r) for r in args.rates.split(",")]
    lm, processor = recipe.load_bases()
    model = recipe.build_mome(lm, processor, {**recipe.TINY, "rates": rates})
    tower, features, tokenizer = model.audio_tower, processor.feature_extractor, processor.tokenizer
    train = recipe._data(recipe.TINY, tower, features, 0)
    held_out = {"espeak validation": recipe.cached_encoding(
                    "validation-100", speech_data.synthetic_speech("validation", n=100, seed=0), tower, features),
                "asterisk": recipe.cached_encoding("asterisk", speech_data.asterisk_prompts(), tower, features)}
    if args.target == "chars":
        heads = {rate: CharacterHead(train.frames[0].shape[1], rate) for rate in rates}
    else:
        vocabulary = vocabulary_of(train.texts, tokenizer)
        embeddings = lm.get_input_embeddings().weight.detach()
        model.audio_projectors.requires_grad_(True)
        heads = {rate: TokenCtcHead(model.audio_projectors, embeddings, vocabulary, rate) for rate in rates}
    params = list({id(p): p for head in heads.values() for p in head.parameters() if p.requires_grad}.values())
    optimizer = torch.optim.AdamW(params, lr=args.lr or (3e-3 if args.target == "chars" else 2e-3), weight_decay=0.0)
    draws, started = random.Random(1), time.time()
    for step in range(1, args.steps + 1):
        rows = draws.sample(range(len(train)), args.batch_size)
        frames, lengths = padded(train, rows)
        loss = 0.0
        for head in heads.values():
            logits, out_lengths = head(frames, lengths)
            targets = [torch.tensor(head.targets(train.texts[i], tokenizer)) for i in rows]
            loss = loss + F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.cat(targets), out_lengths,
                                     torch.tensor([len(t) for t in targets]), zero_infinity=True) / len(heads)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step}: CTC loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    for rate, head in heads.items():
        for name, encoded in held_out.items():
            texts = greedy_texts(head, encoded, tokenizer)
            print(f"{args.target} rate {rate} {name}: WER {wer(encoded.texts, texts):.3f}   e.g. "
                  f"{encoded.texts[3]!r} -> {texts[3]!r}", flush=True)


if __name__ == "__main__":
    main()
