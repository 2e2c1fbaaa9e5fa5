"""SmolLM2-135M-Instruct upcycled to an XMoE: every FFN split into fine-grained experts with a
threshold router, plus the trained routers that ship with the package.

    model, tokenizer = load_xmoe_smollm2()          # UpcycledMoeForCausalLM + the chat tokenizer

The routers (the only trained part: the experts are the dense FFN's own hidden units) are produced
by `python -m benchmarks.xmoe` and stored in `models/xmoe/trained/smollm2-routers.safetensors`
together with the plan they were trained for (safetensors metadata), so loading needs no hub and
the plan can never disagree with the weights.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from zoo.integrations.assets import load_smollm2
from zoo.models import trained_dir
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.upcycling.plan import PLANS, UpcyclePlan

ROUTERS_FILE = trained_dir("xmoe") / "smollm2-routers.safetensors"  # the shipped routers
ROUTER_SUFFIX = ".router.weight"


def xmoe_plan(num_experts: int = 16, threshold: float | None = None) -> UpcyclePlan:
    """The zoo's "xmoe" preset (split experts, threshold routing, zero-init router) at `num_experts`
    experts of intermediate_size / num_experts hidden units each."""
    base = PLANS["xmoe"]
    return base.replace(num_experts=num_experts, threshold=base.threshold if threshold is None else threshold)


def router_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every router weight of an upcycled model, keyed by its parameter name."""
    return {n: p.detach().float().contiguous() for n, p in model.named_parameters() if n.endswith(ROUTER_SUFFIX)}


def save_routers(model: UpcycledMoeForCausalLM, path: str | Path, **metadata: object) -> Path:
    """Write the routers of `model` with the plan (and any figures in `metadata`) as safetensors metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"plan": json.dumps(model.config.plan)} | {k: json.dumps(v) for k, v in metadata.items()}
    save_file(router_state(model), str(path), metadata=meta)
    return path


def read_routers(path: str | Path) -> tuple[dict[str, torch.Tensor], UpcyclePlan, dict[str, object]]:
    """(router weights, the plan they belong to, the other metadata) from a routers file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"router weights {path} not found; train them with `python -m benchmarks.xmoe`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        weights = load_file(str(path))
    except Exception as error:  # safetensors reports truncation as its own error type
        raise ValueError(f"cannot read router weights {path}: {error}") from error
    if "plan" not in meta:
        raise ValueError(f"{path} has no 'plan' metadata: it was not written by save_routers")
    extra = {k: json.loads(v) for k, v in meta.items() if k != "plan"}
    return weights, UpcyclePlan.from_dict(json.loads(meta["plan"])), extra


def load_routers(model: UpcycledMoeForCausalLM, weights: dict[str, torch.Tensor], source: str = "router weights") -> None:
    """Load router weights into `model`; every router must be covered, with matching shapes."""
    expected = router_state(model)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source} do not fit the model: {len(missing)} router weights missing (e.g. {missing[:2]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{source}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}")
    model.load_state_dict(weights, strict=False)


def load_xmoe_smollm2(
    routers: str | Path | None = ROUTERS_FILE,
    dtype: torch.dtype = torch.float32,
    progress: bool | Callable[..., object] = True,
) -> tuple[UpcycledMoeForCausalLM, object, dict[str, object]]:
    """(model in eval mode, tokenizer, metadata of the routers file). `routers=None` gives the
    untrained XMoE (zero routers: uniform probabilities) built from `xmoe_plan()`."""
    report = progress if callable(progress) else (lambda *a, **k: None)
    if routers is not None:
        weights, plan, meta = read_routers(routers)
    else:
        weights, plan, meta = None, xmoe_plan(), {}
    base, tokenizer = load_smollm2(dtype=dtype, progress=progress)
    report(0.9, f"upcycling SmolLM2 into {plan.num_experts} fine-grained experts per layer")
    model = UpcycledMoeForCausalLM.from_dense(base, plan)
    if weights is not None:
        load_routers(model, weights, source=str(routers))
    return model.eval(), tokenizer, meta
