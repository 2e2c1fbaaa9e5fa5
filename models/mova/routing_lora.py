"""Pass LoRAs: low-rank deltas on the LLM's Linear layers that act in one of MoVA's two passes only.

    routing LoRA    y = W x + (alpha / r) * B A x   in the routing pass (forward(..., routing_pass=True)), else y = W x
    answer LoRA     y = W x + (alpha / r) * B A x   in the answer pass (every other forward), else y = W x

The answer LoRA stands in for the paper's fine-tuning of the LLM in its SFT stage (the LLM here stays frozen);
being off in the routing pass, it leaves the routing LoRA's pass alone.

MoVA's arXiv v1 trained an "expert-routing LoRA" on the routing annotations; the NeurIPS text mixes the
routing samples into SFT instead and the released inference uses one set of LLM weights for both passes
(models_b.md §1d). Here the LoRA is optional (MovaConfig.routing_lora_rank) and starts as a no-op (B = 0).

Why not PEFT's adapter enable / disable: `disable_adapter()` flips a flag on the modules, so two requests
served by one model object at once (one routing, one answering) would see each other's switch, and
`get_peft_model` renames every LLM key. Here the deltas are forward hooks on the LLM's own Linear layers
(its keys stay as they are; the LoRA weights live under `routing_lora.*`), and whether the current call is a
routing pass is a `contextvars.ContextVar` (per thread / asyncio task), as the zoo passes per-call inputs.
A PEFT LoRA on top of the whole model (zoo.lora presets) still works as for any other zoo model.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
from torch import nn

# True while this thread / task runs a routing pass (every MoVA model reads the same flag: one call at a time
# per thread, and nested calls of two MoVA models do not happen inside a forward)
_ROUTING_PASS: ContextVar[bool] = ContextVar("mova_routing_pass", default=False)


@contextlib.contextmanager
def routing_pass(active: bool = True) -> Iterator[None]:
    token = _ROUTING_PASS.set(active)
    try:
        yield
    finally:
        _ROUTING_PASS.reset(token)


def in_routing_pass() -> bool:
    return _ROUTING_PASS.get()


def _key(module_name: str) -> str:
    return module_name.replace(".", "__")  # ModuleDict keys cannot hold dots


class LoRAPair(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.lora_B._zero_init = True  # read by MovaPreTrainedModel._init_weights: a no-op at start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype)))


class PassLoRA(nn.Module):
    """LoRA pairs for every Linear of `language_model` whose name ends with one of `targets`, on in one pass only:
    `active_in` "routing" or "answer" (`field` names the config fields in errors)."""

    PASSES = ("routing", "answer")

    def __init__(self, language_model: nn.Module, rank: int, alpha: float, targets: Sequence[str],
                 active_in: str = "routing", field: str = "routing_lora_targets"):
        super().__init__()
        if active_in not in self.PASSES:
            raise ValueError(f"PassLoRA.active_in must be one of {self.PASSES}, got {active_in!r}")
        self.in_routing_pass = active_in == "routing"
        self.scaling = alpha / rank
        self.pairs = nn.ModuleDict()
        found = [(name, m) for name, m in language_model.named_modules()
                 if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]
        if not found:
            raise ValueError(f"MovaConfig.{field} {list(targets)} match no Linear layer of the language model")
        for name, linear in found:
            self.pairs[_key(name)] = LoRAPair(linear.in_features, linear.out_features, rank)
            # a partial of a bound method: deepcopy / pickle of the model rebinds it to the copied RoutingLoRA
            linear.register_forward_hook(functools.partial(self._add_delta, _key(name)))

    def _add_delta(self, key: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if _ROUTING_PASS.get() != self.in_routing_pass:
            return None
        return output + self.scaling * self.pairs[key](inputs[0]).to(output.dtype)


RoutingLoRA = PassLoRA  # the name this module first had (its default is the routing pass)

__all__ = ["PassLoRA", "RoutingLoRA", "in_routing_pass", "routing_pass"]
