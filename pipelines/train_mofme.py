"""`zoo train mofme --recipe tiny`: train MoFME and its conventional MoE counterpart the same way on
CPU, then evaluate both on the held-out photos (pipelines.evaluate_mofme).

Per step, for each of `batch` samples (all drawn from a generator seeded by (seed, step), so a resumed
run sees exactly the batches it would have seen): a TRAIN photo, a random scale (1 or 1/2), a random
crop, a random flip, one of the four weather effects at severity U(0.2, 0.8). Loss: `loss` ("l2" =
squared error, the tiny recipe's default, or "l1" = the paper's) to the clean crop (+ `perceptual` x L1
between MobileNetV2 features of output and target, when > 0; the paper uses 0.04 x VGG16).

Why not the paper's L1 here: the tiny models predict a residual correction, and under L1 the
conventional MoE counterpart settled on "correction = 0" for rain, snow and raindrops (its output
equalled its input; mean |correction| 0.0006 on those vs 0.13 on haze), and MoFME left that plateau
only late. Rain streaks change ~20% of a photo's pixels and raindrops ~33% at severity 0.5, so the
L1-optimal correction of a network that cannot yet tell affected from clean pixels is their median
change, 0; the squared error's optimum is the mean change, which is not. Same recipe, only the loss
changed (counterpart, 1200 steps, gain over the input on held-out centre crops): L1 +0.24 dB on rain,
squared error +5.06 dB; switching to L1 after 600 squared-error steps fell back from +2.89 to +0.99 dB
overall within 600 steps, so the recipe keeps the squared error throughout (for both models). The full
3000-step run still ends well below those 1200-step snapshots on rain (README, "MoFME"). AdamW, linear warmup then cosine decay, through accelerate. A checkpoint
(model, optimizer, scheduler, RNG and the step in one file, written atomically: pipelines.checkpoints)
is written every `checkpoint_every` steps; `--resume` continues from the newest one.

Switches (`--set key=value`): steps, batch, crop, lr, warmup, loss, perceptual, clip (gradient-norm
clipping, 0 = off), checkpoint_every, pause_after (stop
after that step with a checkpoint; `--resume` continues), ship (copy the trained weights + held-out
figures into the package, models/mofme/trained/, for the gallery).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .evaluate_mofme import VARIANTS, evaluate_models, format_results, save_results, shipped_weights_dir
from .photos import photos
from zoo.core.validation import check_non_negative, check_non_negative_int, check_number, check_positive_int

from .checkpoints import Checkpoints
from .train import TrainOptions, cpu_accelerator, recipe, release
from .weather import DEGRADATIONS, degrade

TINY_DEFAULTS = {"steps": 2000, "batch": 8, "crop": 64, "lr": 1e-3, "warmup": 50, "loss": "l2",
                 "perceptual": 0.0, "clip": 1.0, "checkpoint_every": 500, "pause_after": None}
EFFECTS = tuple(DEGRADATIONS)


def sample_batch(step: int, seed: int, batch: int, crop: int, train_photos: list[np.ndarray]):
    """-> degraded, clean: [batch, 3, crop, crop] float32 tensors, a pure function of (seed, step)."""
    rng = np.random.default_rng((seed, step))
    degraded, clean = [], []
    for _ in range(batch):
        photo = train_photos[rng.integers(len(train_photos))]
        if rng.random() < 0.5:  # half scale: more context per crop, like the paper's crop ratios
            photo = photo[::2, ::2]
        y, x = rng.integers(0, photo.shape[0] - crop + 1), rng.integers(0, photo.shape[1] - crop + 1)
        patch = np.ascontiguousarray(photo[y:y + crop, x:x + crop])
        if rng.random() < 0.5:
            patch = np.ascontiguousarray(patch[:, ::-1])
        effect = EFFECTS[rng.integers(len(EFFECTS))]
        degraded.append(degrade(patch, effect, float(rng.uniform(0.2, 0.8)), seed=int(rng.integers(2**31))))
        clean.append(patch)
    to_tensor = lambda arrays: torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())  # noqa: E731
    return to_tensor(degraded), to_tensor(clean)


class MobileNetPerceptualLoss(torch.nn.Module):
    """L1 between frozen MobileNetV2 (ImageNet, packaged weights) features up to stride 8."""

    def __init__(self):
        super().__init__()
        from zoo.integrations.assets import IMAGENET_MEAN_STD, load_mobilenet_v2

        self.features = load_mobilenet_v2().features[:7].eval().requires_grad_(False)
        mean, std = IMAGENET_MEAN_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        embed = lambda x: self.features((x - self.mean) / self.std)  # noqa: E731
        return F.l1_loss(embed(prediction), embed(target))


def lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return float(0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))  # a numpy scalar would not reload
    return factor


def check_settings(settings: dict) -> None:
    """The tiny recipe's settings, each named when wrong (checkpoint_every=0 would divide by zero mid-run)."""
    owner = "mofme/tiny"
    check_positive_int(owner, steps=settings["steps"], batch=settings["batch"], crop=settings["crop"],
                       checkpoint_every=settings["checkpoint_every"])
    check_positive_int(owner, allow_none=True, pause_after=settings["pause_after"])
    check_non_negative_int(owner, warmup=settings["warmup"])
    check_number(owner, "lr", settings["lr"], low=0, low_open=True)
    check_non_negative(owner, perceptual=settings["perceptual"], clip=settings["clip"])
    if settings["loss"] not in ("l1", "l2"):
        raise ValueError(f"{owner}.loss must be 'l1' or 'l2', got {settings['loss']!r}")


def train_model(config, output_dir: Path, settings: dict, options: TrainOptions, desc: str,
                require_checkpoint: bool = True):
    """Train one model to `settings['steps']` (or `pause_after`); returns it (eval mode), the seconds
    spent and whether it reached the last step. With `options.resume` it continues from the newest
    checkpoint under output_dir/checkpoints (refusing to start over when `require_checkpoint` and there
    is none); without, earlier checkpoints there are deleted first, so none of them is resumed later."""
    from zoo.models.mofme import MoFMEForImageRestoration

    check_settings(settings)
    accelerator = cpu_accelerator()
    torch.manual_seed(options.seed)
    model = MoFMEForImageRestoration(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.0)
    steps = settings["steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings["warmup"], steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    perceptual = MobileNetPerceptualLoss() if settings["perceptual"] > 0 else None
    fingerprint = {"config": config.to_dict(), "seed": options.seed,
                   **{k: v for k, v in settings.items() if k != "pause_after"}}  # pausing does not change the run
    checkpoints = Checkpoints(output_dir / "checkpoints", fingerprint)
    if not options.resume:
        checkpoints.clear()
    start, _ = checkpoints.resume(model, optimizer, scheduler, required=options.resume and require_checkpoint)
    train_photos = list(photos("train").values())
    model.train()
    began = time.perf_counter()
    stop = steps if settings["pause_after"] is None else min(steps, settings["pause_after"])
    bar = tqdm(range(start, stop), initial=start, total=steps, desc=desc, mininterval=2.0)
    for step in bar:
        degraded, clean = sample_batch(step, options.seed, settings["batch"], settings["crop"], train_photos)
        out = model(pixel_values=degraded, labels=clean, reconstruction_loss=settings["loss"])
        loss = out.loss
        if perceptual is not None:
            loss = loss + settings["perceptual"] * perceptual(out.reconstruction, clean)
        accelerator.backward(loss)
        if settings["clip"] > 0:  # the counterpart's loss jumped 6x mid-run at lr 2e-3 without it
            accelerator.clip_grad_norm_(model.parameters(), settings["clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        done = step + 1
        if done % settings["checkpoint_every"] == 0 or done == stop:
            checkpoints.save(done, model.state_dict(), optimizer, scheduler)
    model = release(accelerator, model).eval()
    return model, time.perf_counter() - began, stop == steps


@recipe("mofme", "tiny")
def train_tiny(options: TrainOptions) -> dict:
    from zoo.integrations.assets import cache_dir
    from zoo.models.mofme import MoFMEImageProcessor
    from zoo.models.mofme.presets import PRESETS

    unknown = set(options.extra) - set(TINY_DEFAULTS) - {"ship"}
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for mofme/tiny; known: {sorted(TINY_DEFAULTS) + ['ship']}")
    settings = {**TINY_DEFAULTS, **{k: v for k, v in options.extra.items() if k != "ship"}}
    if options.max_steps is not None:
        settings["steps"] = options.max_steps
    output_dir = Path(options.output_dir) if options.output_dir else cache_dir() / "train" / "mofme-tiny"
    processor = MoFMEImageProcessor(patch_size=PRESETS["tiny-fme"].patch_size, tile_size=240, tile_overlap=32)
    models, seconds = {}, {}
    check_settings(settings)  # before anything is trained
    for index, (variant, label) in enumerate(VARIANTS.items()):
        folder = output_dir / variant
        folder.mkdir(parents=True, exist_ok=True)
        # --resume needs the first model's checkpoint; a later model without one had not started (a kill
        # between two models), so it starts afresh, as in an uninterrupted run
        model, seconds[label], finished = train_model(PRESETS[f"tiny-{variant}"], folder, settings, options, desc=label,
                                                      require_checkpoint=index == 0)
        if not finished:
            print(f"{label}: paused after step {settings['pause_after']}; continue with --resume")
            return {"paused_after": settings["pause_after"]}
        model.save_pretrained(folder / "final")
        processor.save_pretrained(folder / "final")
        models[label] = model
    results = evaluate_models(models, processor)
    results["training"] = {"settings": settings, "seconds": seconds}
    save_results(results, output_dir / "eval.json")
    print(format_results({k: v for k, v in results.items() if k != "training"}))
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    if options.extra.get("ship"):
        ship(output_dir, shipped_weights_dir())
    return results


def ship(output_dir: Path, package_dir: Path) -> None:
    """Copy final weights (+ processor) and eval.json into the package folder the gallery loads from."""
    package_dir.mkdir(parents=True, exist_ok=True)
    (package_dir / "__init__.py").touch()  # package data is shipped per package folder (setup.py)
    for variant in VARIANTS:
        target = package_dir / f"tiny-{variant}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(output_dir / variant / "final", target)
        (target / "__init__.py").touch()
    shutil.copy(output_dir / "eval.json", package_dir / "eval.json")
    print(f"shipped weights to {package_dir}")
