"""Hub-shaped export of upcycled models: a folder that loads where `zoo` is not installed.

    zoo.hub.export(model, "out/")          # safetensors + config (auto_map) + bundled runtime code + README.md
    AutoModelForCausalLM.from_pretrained("out/", trust_remote_code=True)      # any machine with transformers
    zoo.hub.export(model, "out/", native=True)  # Mixtral / Qwen3-MoE format: no remote code at all
    zoo.hub.push("out/", "me/my-moe")      # huggingface_hub upload

transformers copies a remote-code model's file and the same-folder files it imports with
`from .x import y` (nothing else). The runtime code of an upcycled model lives in two packages
(zoo/ and zoo/models/upcycled/), so export bundles a flat copy: the modeling and configuration
modules and every zoo module they import, transitively, each rewritten to import its siblings as
`from .x import y`.
"""
from __future__ import annotations

import ast
import importlib
import importlib.resources
import json
import re
import string
import sys
from pathlib import Path

import torch
from torch import nn

from .native_export import decoder_and_plan, export_native
from ..experts.registry import EXPERT_KINDS
from ..upcycling.layer import upcycled_layers

def entry_points(model: nn.Module) -> dict[str, tuple[str, str]]:
    """auto_map entries: the model's own config and model classes (UpcycledMoe*, XMoE*, ...)."""
    return {"AutoConfig": (type(model.config).__module__, type(model.config).__name__),
            "AutoModelForCausalLM": (type(model).__module__, type(model).__name__)}

CARD_TEMPLATE = "upcycled_moe.md"  # in zoo.model_cards
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# -- bundling ------------------------------------------------------------------------------------
def _resolve(module: str, level: int, name: str | None) -> str:
    package = module.rsplit(".", level)[0] if level else ""
    return f"{package}.{name}" if name else package


def _zoo_imports(module_name: str) -> list[tuple[int, int, str]]:
    """(line, end line, absolute module) of every relative import in a zoo module's source."""
    source = Path(sys.modules[module_name].__file__).read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module is None:
                raise ValueError(f"{module_name}: 'from . import x' cannot be bundled for remote code; import names from the module")
            found.append((node.lineno, node.end_lineno, _resolve(module_name, node.level, node.module)))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if any(n == "zoo" or n.startswith("zoo.") for n in names):
                raise ValueError(f"{module_name}: absolute 'zoo' imports cannot be bundled for remote code")
    return found


def runtime_modules(modules: list[str]) -> dict[str, str]:
    """{flat file stem: source rewritten to flat imports} for `modules` and everything they import
    from zoo, transitively."""
    todo = list(modules)
    sources: dict[str, str] = {}
    owners: dict[str, str] = {}
    while todo:
        name = todo.pop()
        stem = name.rsplit(".", 1)[-1]
        if stem in owners:
            if owners[stem] != name:
                raise ValueError(f"cannot bundle both {owners[stem]} and {name}: same file name {stem}.py")
            continue
        importlib.import_module(name)
        owners[stem] = name
        lines = Path(sys.modules[name].__file__).read_text().splitlines(keepends=True)
        for start, end, target in _zoo_imports(name):
            if not target.startswith("zoo."):
                raise ValueError(f"{name} imports {target}, outside the zoo package")
            first = lines[start - 1]
            lines[start - 1] = re.sub(r"from\s+\.+[\w.]*\s+import", f"from .{target.rsplit('.', 1)[-1]} import", first, count=1)
            todo.append(target)
        sources[stem] = "".join(lines)
    return sources


def _plugin_modules(model: nn.Module) -> list[str]:
    """Modules defining the expert kinds this model uses (other helpers register kinds, e.g. ternary)."""
    decoder, plan = decoder_and_plan(model)
    kinds = {plan.expert_kind} if plan.expert_kind else set()
    modules = [EXPERT_KINDS[k].__module__ for k in kinds]
    for _, ffn in upcycled_layers(decoder):
        modules.append(type(ffn.moe.experts).__module__)
    return sorted(set(m for m in modules if m.startswith("zoo.")))


def write_runtime_code(model: nn.Module, folder: Path) -> list[str]:
    plugins = _plugin_modules(model)
    entries = entry_points(model)
    sources = runtime_modules([m for m, _ in entries.values()] + plugins)
    entry = entries["AutoModelForCausalLM"][0].rsplit(".", 1)[-1]
    for module in plugins:  # the modeling file imports the plugin, so transformers copies it and it registers itself
        stem = module.rsplit(".", 1)[-1]
        if not any(re.search(rf"^\s*from \.{stem} import", src, re.MULTILINE) for src in sources.values()):
            sources[entry] += f"\nfrom .{stem} import *  # noqa: E402,F401,F403  (registers its expert kinds)\n"
    for stem, source in sources.items():
        (folder / f"{stem}.py").write_text(source)
    return sorted(f"{stem}.py" for stem in sources)


# -- model card ----------------------------------------------------------------------------------
def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def active_parameters(model: nn.Module) -> int:
    """Parameters a token can touch: everything except the experts it is not routed to (top-k: k of E;
    threshold routers: up to max_k, else all)."""
    decoder, plan = decoder_and_plan(model)
    total = sum(p.numel() for p in model.parameters())
    per_token = plan.num_experts_per_tok if plan.router != "threshold" else (plan.max_k or plan.num_experts)
    for _, ffn in upcycled_layers(decoder):
        bank = ffn.moe.experts
        stacked = sum(p.numel() for p in bank.parameters(recurse=False) if p.dim() >= 2 and p.shape[0] == bank.num_experts)
        total -= stacked * (bank.num_experts - min(per_token, bank.num_experts)) // bank.num_experts
    return total


def render_model_card(model: nn.Module, base_model: str, license: str = "apache-2.0",
                      figures: dict[str, str] | None = None, native: bool = False, extra_tags: list[str] = ()) -> str:
    """The README.md: YAML metadata + a description computed from the model. `figures` maps a
    measured quantity to its value *and how it was measured* (e.g. {"held-out loss": "3.21 (python
    -m benchmarks.xmoe)"}); the card shows none it was not given."""
    decoder, plan = decoder_and_plan(model)
    layers = upcycled_layers(decoder)
    router = {"top_k": f"softmax top-{plan.num_experts_per_tok}" + (", renormalised" if plan.normalize else ", raw probabilities"),
              "threshold": f"cumulative threshold {plan.threshold} (XMoE; variable experts per token)",
              "modality": f"per-modality top-{plan.num_experts_per_tok} over {plan.modality_experts} + shared {plan.shared_experts}"}[plan.router]
    expert_init = "copies" if plan.experts == "copy" else f"1/{plan.num_experts} slices (split hidden units)"
    preservation = ("with renormalised top-k over identical copies the model computed the dense function at step 0."
                    if plan.experts == "copy" and plan.router == "top_k" and plan.normalize and not plan.shared_ffn else
                    "split experts are scaled by E and the router starts uniform, so with threshold 1.0 the model "
                    "computed the dense function at step 0." if plan.experts == "split" else
                    "this plan does not preserve the dense function at step 0.")
    if native:
        usage = ("```python\nfrom transformers import AutoModelForCausalLM\n"
                 "model = AutoModelForCausalLM.from_pretrained(\"<this repo>\")  # native transformers MoE, no extra code\n```")
    else:
        usage = ("```python\nfrom transformers import AutoModelForCausalLM\n"
                 "model = AutoModelForCausalLM.from_pretrained(\"<this repo>\", trust_remote_code=True)\n"
                 "out = model(input_ids, output_router_logits=True)   # out.aux_loss, out.router_logits\n```\n\n"
                 "With moe-zoo installed (`import zoo`), `trust_remote_code` is not needed.")
    if figures:
        rows = "\n".join(f"| {name} | {value} |" for name, value in figures.items())
        figures_md = "| quantity | value (and how it was measured) |\n|---|---|\n" + rows
    else:
        figures_md = "No evaluation figures were supplied with this export."
    values = dict(
        base_model=base_model, license=license, extra_tags="".join(f"- {t}\n" for t in extra_tags).rstrip("\n"),
        title=f"{base_model.rsplit('/', 1)[-1]} upcycled to {plan.num_experts} experts",
        plan_summary=f"{plan.num_experts} experts, {router}.", architecture=decoder.config.model_type,
        moe_layers=len(layers), num_layers=decoder.config.num_hidden_layers,
        layer_choice=f"layers={plan.layers!r}", num_experts=plan.num_experts, expert_init=expert_init,
        expert_kind=type(layers[0][1].moe.experts).__name__, router=router,
        total_params=_count(sum(p.numel() for p in model.parameters())), active_params=_count(active_parameters(model)),
        dtype=str(decoder.dtype).replace("torch.", ""), usage=usage, figures=figures_md, preservation=preservation,
        router_init=plan.router_init,
    )
    template = importlib.resources.files("zoo.model_cards").joinpath(CARD_TEMPLATE).read_text()
    return string.Template(template).substitute(values)


# -- export / push -------------------------------------------------------------------------------
def check_finite_weights(model: nn.Module) -> None:
    """Refuse NaN/inf weights before they reach a Hub folder: a model whose experts never loaded held such
    values (StrictMoeLoading now refuses that load; this catches whatever else produced them)."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not tensor.is_meta and not bool(torch.isfinite(tensor).all())]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ValueError(f"refusing to export {type(model).__name__}: non-finite (NaN/inf) values in "
                         f"{', '.join(bad[:3])}{more}")


def export(model: nn.Module, folder: str | Path, *, native: bool = False, base_model: str | None = None,
           license: str = "apache-2.0", figures: dict[str, str] | None = None, tokenizer=None, **save_kwargs) -> Path:
    """Write a Hub-ready folder: weights (safetensors), config, model card, tokenizer if given, and
    either the bundled runtime code (`trust_remote_code=True`, default) or a native Mixtral/Qwen3-MoE
    checkpoint (`native=True`)."""
    check_finite_weights(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    decoder, _ = decoder_and_plan(model)
    base_model = base_model or getattr(decoder.config, "_name_or_path", "") or "unknown"
    if native:
        export_native(model, folder, **save_kwargs)
    else:
        if not hasattr(model.config, "upcycle_plan"):
            raise ValueError("export needs an UpcycledMoeForCausalLM (wrap a zoo.upcycle'd model with UpcycledMoeForCausalLM.from_dense)")
        model.save_pretrained(folder, **save_kwargs)
        write_runtime_code(model, folder)
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        config["auto_map"] = {auto: f"{module.rsplit('.', 1)[-1]}.{cls}" for auto, (module, cls) in entry_points(model).items()}
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    card = render_model_card(model, base_model, license, figures, native=native)
    (folder / "README.md").write_text(card)
    return folder


def push(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
         commit_message: str = "Upload upcycled MoE (moe-zoo)") -> str:
    """Upload an exported folder to the Hub (creates the repo if needed). Returns the commit URL."""
    folder = Path(folder)
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder {folder} does not exist")
    missing = [f for f in ("config.json", "README.md") if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} is not an exported model folder: missing {missing} (run zoo.hub.export first)")
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder} holds no .safetensors weights")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message))


__all__ = ["active_parameters", "check_finite_weights", "entry_points", "export", "push", "render_model_card", "runtime_modules", "write_runtime_code"]
