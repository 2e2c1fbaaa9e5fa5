"""Training on several processes with accelerate: one global batch, split across the ranks.

    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m zoo.pipelines.distributed --steps 30

    step s:  global batch = train_mofme.sample_batch(s, seed, batch)      the recipe's batch, a pure function of (seed, step)
             rank r of R takes rows [r * batch/R, (r+1) * batch/R)      equal shards, so the mean of the ranks' mean
                                                                         losses is the global mean loss
             DDP / FSDP average the gradients over the ranks            = the gradient of the global mean loss
             logged loss = accelerator.reduce(loss, "mean")             the curve a single process would log

One process (plain `python -m zoo.pipelines.distributed`) takes every row, so the same command gives the
single-process reference. The model, optimizer, schedule, clipping and batches are the MoFME tiny recipe's
(pipelines.train_mofme); what differs under R ranks is only what is not a mean over rows: the router's
load-balancing loss and the uncertainty router's running statistics are computed per shard (DDP keeps
rank 0's buffers), so curves agree to a tolerance, not bit for bit (tests/test_distributed_training.py).

Why a separate entry point and not `zoo train mofme --recipe tiny` under `accelerate launch`: the recipes
are not rank-aware yet. Each rank would draw the whole batch (the same gradient R times: correct, but no
faster), write the same checkpoint file and run the evaluation R times. Making them rank-aware needs, in
pipelines/train_mofme.py (and alike in the other recipes): `sample_batch(...)` rows `rank_rows(...)` of the
batch, `checkpoints.save` and the evaluation on the main process only, and `accelerator.wait_for_everyone()`
before `--resume` reads a checkpoint.

FSDP on CPU: accelerate 1.15 turns its FSDP plugin on only for accelerator devices (accelerate/state.py,
`AcceleratorState.__init__`: `DistributedType.FSDP` is set only when the distributed type is MULTI_GPU,
MULTI_NPU, MULTI_XPU, ...; never MULTI_CPU). On CPU an FSDP accelerate config would run as plain DDP
without a word, so `parallel="ddp"` refuses it (`check_no_accelerate_fsdp`), and `parallel="fsdp"`
shards with torch's own FSDP2 (`torch.distributed.fsdp.fully_shard` on a gloo CPU mesh), which torch
2.14 runs on CPU. FSDP2 refuses 0-dim parameters (torch/distributed/fsdp/_fully_shard/_fsdp_init.py,
`_verify_managed_param`); MoFME's uncertainty router has one (`log_temperature`), so those stay
replicated and their gradients are averaged here. The GPU configurations, configs/accelerate/fsdp.yaml
and deepspeed_zero{2,3}.yaml, go through accelerate's plugins (README, "Training on several processes").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from accelerate.utils import DistributedType

from zoo.core.validation import check_positive_int

from .train import cpu_accelerator, release
from .train import lr_lambda
from .train_mofme import TINY_DEFAULTS, sample_batch

PARALLEL = ("ddp", "fsdp")
DEFAULTS = {"steps": 30, "batch": 8, "crop": 32, "lr": TINY_DEFAULTS["lr"], "warmup": 5, "clip": TINY_DEFAULTS["clip"],
            "seed": 0, "variant": "fme", "parallel": "ddp"}


def rank_rows(global_batch: int, num_processes: int, process_index: int) -> slice:
    """The rows of a global batch this rank trains on. Unequal shards would weight the ranks' mean losses
    unequally (DDP averages gradients, not rows), so a batch that does not split evenly is refused."""
    check_positive_int("distributed", batch=global_batch, num_processes=num_processes)
    if global_batch % num_processes:
        raise ValueError(f"distributed: batch={global_batch} does not split evenly over {num_processes} processes; "
                         f"use a multiple of {num_processes}")
    if not 0 <= process_index < num_processes:
        raise ValueError(f"distributed: process_index={process_index} is not in [0, {num_processes})")
    per_rank = global_batch // num_processes
    return slice(process_index * per_rank, (process_index + 1) * per_rank)


def run_accelerator():
    """On a GPU machine the launch config decides (DDP, FSDP, DeepSpeed); without one, the recipes' CPU
    Accelerator, which joins the launched processes over gloo."""
    if torch.cuda.is_available():
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)  # as cpu_accelerator does
        return Accelerator()
    return cpu_accelerator()


def check_no_accelerate_fsdp(accelerator) -> None:
    """An FSDP accelerate config on CPU would silently train as DDP (see the module docstring): refuse it."""
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if asked and accelerator.distributed_type != DistributedType.FSDP:
        raise ValueError(
            f"an FSDP accelerate config was given, but accelerate runs FSDP only on GPU-type devices; on CPU it would "
            f"train as {accelerator.distributed_type.value} without sharding anything. On CPU launch with "
            "configs/accelerate/cpu_ddp.yaml and pass --parallel fsdp (torch's fully_shard over gloo)")


def shard_fully(model: torch.nn.Module, num_processes: int) -> list[torch.nn.Parameter]:
    """FSDP2 over a CPU mesh of all processes; -> the parameters left replicated (0-dim: FSDP2 refuses them)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    replicated = [p for p in model.parameters() if p.dim() == 0]
    device_type = next(model.parameters()).device.type
    fully_shard(model, mesh=init_device_mesh(device_type, (num_processes,)), ignored_params=set(replicated))
    return replicated


def average_gradients(parameters: list[torch.nn.Parameter], num_processes: int) -> None:
    for parameter in parameters:
        if parameter.grad is not None:
            torch.distributed.all_reduce(parameter.grad)
            parameter.grad /= num_processes


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ over sharded (DTensor) and replicated gradients together: the sharded
    norms are full norms (one all-reduce each), so every rank scales by the same factor."""
    norms = [(p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).float().norm()
             for p in parameters if p.grad is not None]
    total = torch.stack(norms).norm()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.mul_(scale)


def train_curve(settings: dict) -> tuple[list[float], dict[str, torch.Tensor], dict]:
    """Train MoFME tiny for settings['steps'] steps on this process's shard of each global batch.
    -> (global mean loss per step, the trained state dict on every rank, what ran: processes, distributed type)."""
    from zoo.models.mofme import MoFMEForImageRestoration
    from zoo.models.mofme.presets import PRESETS

    from .photos import photos

    owner = "distributed"
    check_positive_int(owner, steps=settings["steps"], batch=settings["batch"], crop=settings["crop"])
    if settings["variant"] not in ("fme", "ffn"):
        raise ValueError(f"{owner}: variant must be 'fme' or 'ffn', got {settings['variant']!r}")
    if settings["parallel"] not in PARALLEL:
        raise ValueError(f"{owner}: parallel must be one of {PARALLEL}, got {settings['parallel']!r}")
    accelerator = run_accelerator()
    check_no_accelerate_fsdp(accelerator)
    rows = rank_rows(settings["batch"], accelerator.num_processes, accelerator.process_index)
    torch.manual_seed(settings["seed"])  # every rank starts from the same weights (DDP also broadcasts rank 0's)
    model = MoFMEForImageRestoration(PRESETS[f"tiny-{settings['variant']}"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings["warmup"], settings["steps"]))
    # The scheduler stays out of `prepare`: accelerate's prepared scheduler steps `num_processes` times per
    # optimizer step (it assumes every rank brings its own batch), so under 2 ranks the warmup and cosine
    # decay would run twice as fast as in the single-process run. Here the ranks share one global batch.
    fsdp = settings["parallel"] == "fsdp" and accelerator.num_processes > 1
    if fsdp:
        replicated = shard_fully(model.to(accelerator.device), accelerator.num_processes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.0)  # over the shards
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings["warmup"], settings["steps"]))
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    train_photos = list(photos("train").values())
    model.train()
    losses = []
    for step in range(settings["steps"]):
        degraded, clean = sample_batch(step, settings["seed"], settings["batch"], settings["crop"], train_photos)
        degraded, clean = degraded[rows].to(accelerator.device), clean[rows].to(accelerator.device)
        loss = model(pixel_values=degraded, labels=clean, reconstruction_loss="l2").loss
        accelerator.backward(loss)
        if fsdp:
            average_gradients(replicated, accelerator.num_processes)
            if settings["clip"] > 0:
                clip_gradients(list(model.parameters()), settings["clip"])
        elif settings["clip"] > 0:
            accelerator.clip_grad_norm_(model.parameters(), settings["clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
    if fsdp:
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}
    else:
        state = release(accelerator, model).state_dict()
    ran = {"num_processes": accelerator.num_processes, "parallel": "fsdp" if fsdp else str(accelerator.distributed_type.value)}
    accelerator.end_training()
    return losses, state, ran


def parse_arguments(argv: list[str] | None) -> tuple[dict, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m zoo.pipelines.distributed", description=__doc__.split("\n")[0])
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key}", type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=None, help="write the loss curve (and what ran) as JSON here")
    parser.add_argument("--save-state", type=Path, default=None, help="torch.save the trained state dict here")
    args = vars(parser.parse_args(argv))
    out, save_state = args.pop("out"), args.pop("save_state")
    return args, (out, save_state)


def main(argv: list[str] | None = None) -> int:
    settings, (out, save_state) = parse_arguments(argv)
    losses, state, ran = train_curve(settings)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one writer: every rank holds the same curve and weights
        print(json.dumps({"losses": [round(x, 6) for x in losses], **ran}))
        if out is not None:
            out.write_text(json.dumps({"losses": losses, "settings": settings, **ran}))
        if save_state is not None:
            torch.save({k: v.detach().cpu() for k, v in state.items()}, save_state)
    if torch.distributed.is_initialized():
        # every rank waits for the writer, then the gloo group is torn down before the interpreter exits: left to
        # interpreter shutdown, a rank's gloo threads sometimes aborted it ("terminate called without an active
        # exception", exit -6) in a fresh-clone CI run
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
