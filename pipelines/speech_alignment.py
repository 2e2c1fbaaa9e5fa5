"""Stage 0 of the speech recipes: a projector whose audio tokens already point at the LLM's word embeddings.

A frozen LLM given freshly initialised audio tokens learns to ignore them: trained on the LM loss alone, the MoME
recipe's loss sat on the text prior's plateau (3.7-3.9 for 300 steps, README). So the connector is first aligned
without the LLM, by CTC over the transcript's own LLM tokens:

    frames [B, T, C] --average pooling at `rate`--> --projector--> tokens [B, T_r, D]
    logits = scale * cos(token, [blank; E[v] for v in the training texts' vocabulary])     [B, T_r, 1 + V]
    loss   = CTC(logits, the transcript's token ids)

(LegoSLM and SLAM-ASR's CTC-compressed connectors use the same idea.) The aligned projector then initialises every
compression rate's projector (average pooling keeps the frames' space, so one alignment serves all rates), its
LayerNorm rescaled so the tokens enter the LLM at the mean norm of its embedding rows (the LayerNorm's output norm is
sqrt(D) ~ 24 against ~2.9 for SmolLM2's embeddings).

    head = TokenCtcHead(projector, embeddings, vocabulary, rate)      # benchmarks.speech_ctc_probe uses it too
    state = aligned_projector(path, compressor, data, tokenizer, embeddings, settings, resume)
"""
from __future__ import annotations

import random

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checkpoints import Checkpoints


class TokenCtcHead(nn.Module):
    """LLM word pieces from a Matryoshka projector: cosine to the embedding rows, a learned blank and scale."""

    def __init__(self, projectors, embeddings: torch.Tensor, vocabulary: list[int], rate: int):
        super().__init__()
        self.rate, self.projectors, self.vocabulary = rate, projectors, list(vocabulary)
        self.index = {token: k + 1 for k, token in enumerate(self.vocabulary)}  # 0 is the CTC blank
        self.register_buffer("rows", F.normalize(embeddings[self.vocabulary].float(), dim=-1), persistent=False)  # [V, D]
        self.blank = nn.Parameter(torch.randn(embeddings.shape[1]) * 0.02)
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor):
        tokens, token_lengths = self.projectors(frames, lengths, self.rate)  # [B, T_r, D]
        unit = F.normalize(tokens.float(), dim=-1)
        blank = unit @ F.normalize(self.blank, dim=0)[:, None]  # [B, T_r, 1]
        return self.scale * torch.cat([blank, unit @ self.rows.T], dim=-1), token_lengths  # [B, T_r, 1 + V]

    def targets(self, text: str, tokenizer) -> list[int]:
        return [self.index[t] for t in tokenizer(text, add_special_tokens=False)["input_ids"] if t in self.index]

    def text(self, labels: list[int], tokenizer) -> str:
        return tokenizer.decode([self.vocabulary[k - 1] for k in labels])

    def ctc_loss(self, frames, lengths, texts: list[str], tokenizer) -> torch.Tensor:
        logits, out_lengths = self(frames, lengths)
        targets = [torch.tensor(self.targets(text, tokenizer), dtype=torch.long) for text in texts]
        return F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.cat(targets), out_lengths,
                          torch.tensor([len(t) for t in targets]), zero_infinity=True)


def vocabulary_of(texts: list[str], tokenizer) -> list[int]:
    return sorted({t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"]})


def padded_frames(encoded, rows) -> tuple[torch.Tensor, torch.Tensor]:
    frames = [encoded.frames[i] for i in rows]
    return torch.nn.utils.rnn.pad_sequence(frames, batch_first=True), torch.tensor([len(f) for f in frames])


def rescale_to_embeddings_(projector: nn.Sequential, compress, encoded, embeddings: torch.Tensor, rate: int) -> float:
    """Scale the projector's final LayerNorm so its tokens' mean norm (64 training clips) is the embedding rows'."""
    with torch.no_grad():
        merged, lengths = compress(*padded_frames(encoded, range(min(64, len(encoded)))), rate)
        out = projector(merged.to(projector[0].weight.dtype))
        valid = torch.arange(out.shape[1]) < lengths[:, None]
        factor = float(embeddings.float().norm(dim=-1).mean() / out[valid].norm(dim=-1).mean())
        norm = projector[-1]
        norm.weight.mul_(factor)
        norm.bias.mul_(factor)
    return factor


def aligned_projector(path, compressor, data, tokenizer, embeddings: torch.Tensor, settings: dict, resume: bool,
                      seed: int, checkpoint_dir, head: TokenCtcHead | None = None) -> dict[str, torch.Tensor]:
    """The aligned, rescaled projector of `compressor` (a MatryoshkaCompressor with the rate settings["align_rate"])
    as a state dict; trained once (checkpointed, resumable) and kept at `path` for every later run that asks.
    `head`: the TokenCtcHead on `compressor` to train (default: a new one over the training texts' vocabulary)."""
    rate = settings["align_rate"]
    projector = compressor.projectors[str(rate)]
    if path.is_file():
        return load_file(str(path))
    head = head or TokenCtcHead(compressor, embeddings, vocabulary_of(data.texts, tokenizer), rate)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings["align_lr"], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    steps, batch_size = settings["align_steps"], min(settings["align_batch_size"], len(data))  # smoke runs: few clips
    weights = dict(head.named_parameters())
    checkpoints = Checkpoints(checkpoint_dir, fingerprint={"steps": steps, "batch_size": batch_size, "rate": rate,
                                                           "lr": settings["align_lr"], "seed": seed})
    if not resume:
        checkpoints.clear()
    step, _ = checkpoints.resume(weights, optimizer, scheduler, required=False)
    draws = random.Random(seed * 1000 + 11)
    for _ in range(step):  # replay the draws already taken
        draws.sample(range(len(data)), batch_size)
    bar = tqdm(total=steps, initial=step, desc=f"stage 0 (projector CTC, rate {rate})", unit="step")
    while step < steps:
        rows = draws.sample(range(len(data)), batch_size)
        loss = head.ctc_loss(*padded_frames(data, rows), [data.texts[i] for i in rows], tokenizer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(ctc=f"{loss.item():.3f}")
        if step % settings["save_every"] == 0 or step == steps:
            checkpoints.save(step, weights, optimizer, scheduler)
    bar.close()
    rescale_to_embeddings_(projector, compressor.compress, data, embeddings, rate)
    state = {k: v.detach().clone().contiguous() for k, v in projector.state_dict().items()}
    save_file(state, str(path))
    return state


def initialise_projectors_(compressor, state: dict[str, torch.Tensor]) -> None:
    """Every rate's projector starts as the aligned one (same widths: average pooling)."""
    if compressor.mode != "avg":
        raise ValueError(f"the aligned projector initialises average-pooling compressors only, got mode {compressor.mode!r}")
    with torch.no_grad():
        for projector in compressor.projectors.values():
            projector.load_state_dict(state)
