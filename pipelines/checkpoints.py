"""Training checkpoints every recipe shares: one self-consistent file per save, written atomically, the
last good ones kept, and a resume that refuses what it cannot trust.

    checkpoints = Checkpoints(directory, fingerprint={"steps": 200, "lr": 1e-3, ...})
    start, extra = checkpoints.resume(model_or_params, optimizer, scheduler, required=options.resume)
    ...
    checkpoints.save(step, weights, optimizer, scheduler, losses=losses)       # every `every` steps

A save writes `checkpoint-<step>.pt` as

    MAGIC (8 bytes) | SHA-256 of the payload (32 bytes) | payload = torch.save({weights, optimizer, scheduler,
                                                                               step, rng, fingerprint, extra})

to a hidden temporary file, fsyncs it, renames it into place (atomic on POSIX) and only then deletes the
older checkpoints beyond `keep`. So a kill at any moment leaves either the previous checkpoint or the new
one whole, never a mix: the step counter lives in the same file as the weights, the optimizer and the RNG
state, which is what makes a resumed run end exactly where an uninterrupted one does.

Resume takes the newest checkpoint. It refuses, with an error naming the file, one whose digest does not
match (damaged after it was written: the error names the earlier intact one to fall back to by deleting the
damaged file), one written by another run (its fingerprint differs: other steps, settings or trainable
tensors), and, when `required` (`--resume`), a directory without any checkpoint.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.core.validation import check_positive_int

MAGIC = b"ZOOCKPT1"
DIGEST_BYTES = 32
NAME = re.compile(r"checkpoint-(\d+)\.pt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted (damaged, or written by another run) or is missing."""


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:])}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path`, or the file as it was: a temporary file beside it, fsynced, renamed over it."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def checkpoint_steps(directory: str | Path) -> list[int]:
    """Steps of the checkpoints in `directory`, oldest first (temporary files of an interrupted save excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = (NAME.fullmatch(p.name) for p in directory.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


class Checkpoints:
    """The checkpoints of one training loop in `directory` (see the module docstring).

    `fingerprint`: JSON-serialisable facts the run's result depends on (step count, settings, trainable
    tensor names, the batch schedule); a checkpoint whose fingerprint differs is refused on resume.
    `keep`: how many of the newest checkpoints stay on disk (>= 2, so an earlier one survives a damaged newest)."""

    def __init__(self, directory: str | Path, fingerprint: Mapping, keep: int = 2):
        check_positive_int("Checkpoints", keep=keep)
        if keep < 2:
            raise ValueError(f"Checkpoints.keep must be at least 2 (the last good checkpoint stays), got {keep}")
        self.directory = Path(directory)
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)
        self.keep = keep

    # -- what is on disk ----------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return checkpoint_steps(self.directory)

    def path(self, step: int) -> Path:
        return self.directory / f"checkpoint-{step}.pt"

    def exists(self) -> bool:
        return bool(self.steps())

    def clear(self) -> None:
        """Delete this loop's checkpoints: a run started afresh must not leave an older run's newer step behind
        for a later --resume to pick up."""
        for step in self.steps():
            self.path(step).unlink()
        self._remove_stale_temporaries()

    # -- save -----------------------------------------------------------------------------------------
    def save(self, step: int, weights: Mapping[str, torch.Tensor], optimizer, scheduler, **extra) -> Path:
        """One whole checkpoint of `step` (weights: name -> tensor; `extra`: what the loop needs to continue,
        e.g. recent losses), then the older checkpoints beyond `keep` go."""
        check_positive_int("checkpoint", step=step)
        buffer = io.BytesIO()
        torch.save({"step": step, "fingerprint": self.fingerprint,
                    "weights": {name: tensor.detach().clone() for name, tensor in weights.items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(), "extra": extra}, buffer)
        payload = buffer.getvalue()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(step)
        write_atomically(path, MAGIC + hashlib.sha256(payload).digest() + payload)
        self._prune()
        return path

    def _prune(self) -> None:
        for old in self.steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        for stale in self.directory.glob(".checkpoint-*.pt.tmp"):  # left by a save that was killed
            stale.unlink(missing_ok=True)

    # -- load -----------------------------------------------------------------------------------------
    def load(self, step: int, check_fingerprint: bool = True) -> dict:
        """The checkpoint of `step`, verified (digest, and the fingerprint unless only inspecting it);
        CheckpointError naming the file otherwise."""
        path = self.path(step)
        raw = path.read_bytes()
        header = len(MAGIC) + DIGEST_BYTES
        if len(raw) < header or not raw.startswith(MAGIC):
            raise CheckpointError(f"{path} is not a zoo training checkpoint (no {MAGIC.decode()} header){self._fallback(step)}")
        payload = raw[header:]
        if hashlib.sha256(payload).digest() != raw[len(MAGIC):header]:
            raise CheckpointError(f"{path} is damaged (its SHA-256 does not match the one written with it)"
                                  f"{self._fallback(step)}")
        state = torch.load(io.BytesIO(payload), weights_only=True)
        if check_fingerprint and state["fingerprint"] != self.fingerprint:
            raise CheckpointError(f"{path} was written by another run (other steps, settings, trainable tensors or "
                                  "batches); delete it or run without --resume")
        if state["step"] != step:
            raise CheckpointError(f"{path} holds step {state['step']}, not {step} (renamed by hand?)")
        return state

    def _fallback(self, step: int) -> str:
        earlier = [s for s in self.steps() if s < step]
        if earlier:
            return f"; the earlier {self.path(earlier[-1]).name} is kept: delete the damaged file to resume from it"
        return "; no earlier checkpoint: run without --resume"

    def resume(self, into: nn.Module | Mapping[str, torch.Tensor], optimizer, scheduler, required: bool) -> tuple[int, dict]:
        """Restore the newest checkpoint into `into` (a module: its whole state dict, strictly; a mapping:
        those tensors, copied in place), the optimizer, the scheduler and the RNG states -> (step, extra).
        Without a checkpoint: (0, {}), or FileNotFoundError when `required`."""
        steps = self.steps()
        if not steps:
            if required:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.directory} (nothing to resume; "
                                        "run without --resume to start)")
            return 0, {}
        state = self.load(steps[-1])
        _restore_weights(into, state["weights"], self.path(steps[-1]))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        return state["step"], state["extra"]


@torch.no_grad()
def _restore_weights(into, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    if isinstance(into, nn.Module):
        into.load_state_dict(weights, strict=True)
        return
    if set(into) != set(weights):
        missing, unexpected = sorted(set(into) - set(weights)), sorted(set(weights) - set(into))
        raise CheckpointError(f"{path}: tensors do not match the run's (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in into.items():
        if tensor.shape != weights[name].shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(weights[name].shape)}, the run's {tuple(tensor.shape)}")
        tensor.copy_(weights[name])


__all__ = ["CheckpointError", "Checkpoints", "checkpoint_steps", "write_atomically"]
