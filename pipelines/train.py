"""Training recipes by (system, recipe) name, for `zoo train SYSTEM --recipe NAME`, and held-out
evaluations by system, for `zoo eval SYSTEM`.

A system's recipe module registers its entries when imported; `RECIPE_MODULES` says which module to
import for a system so the CLI stays cheap until a recipe is asked for. To add a system, append one
line to RECIPE_MODULES and decorate its recipes with `@recipe("system", "name")`.

A recipe is `fn(options: TrainOptions) -> dict` (the figures it measured, printed by the CLI).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.core.validation import check_positive_int, renamed


@dataclass
class TrainOptions:
    output_dir: Path | None = None  # None: the recipe's default under the user cache
    resume: bool = False  # continue from the last checkpoint in output_dir
    max_steps: int | None = None  # override the recipe's step count (smoke tests)
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)  # recipe-specific switches (--set key=value)

    def __post_init__(self):
        # 0 or fewer steps would ship the untrained model as if it were trained (and exit 0)
        check_positive_int(None, allow_none=True, **{"--max-steps": self.max_steps})


Recipe = Callable[[TrainOptions], dict]
RECIPES: dict[tuple[str, str], Recipe] = {}
RECIPE_MODULES: dict[str, str] = {
    "mofme": "zoo.pipelines.train_mofme",
    "mome": "zoo.pipelines.train_mome",
    "unimoe": "zoo.pipelines.train_unimoe",
    "mova": "zoo.pipelines.train_mova",
    "xmoe": "zoo.pipelines.train_xmoe",  # from scratch and dense-to-sparse (issue 16)
    **{s: "zoo.pipelines.train_vl" for s in ("moiie", "mote", "moe_llava", "dense_vl")},  # vision-language (issue 4)
}
# A system's name is its model_type (and its package under models/). Old spellings still work on the
# command line and in scripts, with a FutureWarning naming the new one.
RENAMED_SYSTEMS: dict[str, str] = {"moe-llava": "moe_llava", "dense-vl": "dense_vl"}


def system_name(system: str) -> str:
    """The current spelling of a system name ("moe-llava" -> "moe_llava", with a FutureWarning)."""
    return renamed(system, RENAMED_SYSTEMS, "system name", stacklevel=4)


def recipe(system: str, name: str):
    def register(fn: Recipe) -> Recipe:
        RECIPES[(system, name)] = fn
        return fn
    return register


def get_recipe(system: str, name: str) -> Recipe:
    system = system_name(system)
    if system not in RECIPE_MODULES:
        raise ValueError(f"no training recipes for system {system!r}; known systems: {sorted(RECIPE_MODULES)}")
    importlib.import_module(RECIPE_MODULES[system])
    if (system, name) not in RECIPES:
        names = sorted(r for s, r in RECIPES if s == system)
        raise ValueError(f"system {system!r} has no recipe {name!r}; known: {names}")
    return RECIPES[(system, name)]


def parse_extra(pairs: list[str]) -> dict[str, object]:
    """['perceptual=0.04', 'ship=true'] -> {'perceptual': 0.04, 'ship': True}."""
    extra: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        lowered = value.lower()
        if lowered in ("true", "false"):
            extra[key] = lowered == "true"
        else:
            try:
                extra[key] = int(value)
            except ValueError:
                try:
                    extra[key] = float(value)
                except ValueError:
                    extra[key] = value
    return extra


# -- evaluations: `zoo eval SYSTEM` ---------------------------------------------------------------
Evaluation = Callable[[Path | None], dict]
EVALUATIONS: dict[str, Evaluation] = {}


def evaluation(system: str):
    def register(fn: Evaluation) -> Evaluation:
        EVALUATIONS[system] = fn
        return fn
    return register


def get_evaluation(system: str) -> Evaluation:
    system = system_name(system)
    if system in RECIPE_MODULES:
        importlib.import_module(RECIPE_MODULES[system])
    if system not in EVALUATIONS:
        raise ValueError(f"no evaluation for system {system!r}; known: {sorted(EVALUATIONS) or sorted(RECIPE_MODULES)}")
    return EVALUATIONS[system]


def cpu_accelerator(mixed_precision: str = "no"):
    """A CPU `accelerate.Accelerator` with this recipe's precision. accelerate keeps one process-wide
    state and refuses a second Accelerator with another precision, so two recipes run in one process
    (a notebook, the test suite: MoFME in fp32, then a VL recipe in bf16) would fail; the state is
    reset first, as accelerate's own tests do."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=True, mixed_precision=mixed_precision)


def release(accelerator, model):
    """The trained module as a plain module again (in place, and returned). With mixed precision,
    `accelerator.prepare` patches `model.forward` with bf16 autocast for good: every later call (evaluation,
    the gallery, a test comparing two paths through the model) would run in bf16 unasked, while direct calls
    to its submodules stay fp32. Evaluations ask for their precision themselves (zoo.core.precision)."""
    return accelerator.unwrap_model(model, keep_fp32_wrapper=False)


def lr_lambda(warmup: int, total: int):
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total` (a LambdaLR factor)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return float(0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))  # a numpy scalar would not reload
    return factor
