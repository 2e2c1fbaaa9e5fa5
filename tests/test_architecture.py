"""The house rules, checked on the source: imports only point down, no import cycles, the routing
core names no system and imports light, and every model type is known to the Auto classes."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"zoo": "zoo", "models": "zoo.models", "pipelines": "zoo.pipelines", "apps": "zoo.apps"}
# lower number = lower layer; a module may import its own layer and the layers below it
LAYERS = {"zoo.core": 0, "zoo.experts": 1, "zoo.upcycling": 2, "zoo.integrations": 3, "zoo.multimodal": 4,
          "zoo.models": 5, "zoo.pipelines": 6, "zoo.apps": 7}
FACADE = {"zoo", "zoo.auto_registration"}  # `import zoo`: names every room lazily; nothing in the layers imports it
SYSTEM_NAMES = re.compile(r"\b(moiie|mova|mome|mofme|mote|xmoe|uni-moe|unimoe|moe-llava|moe_llava)\b", re.IGNORECASE)


def module_files() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is package)"""
    found = {}
    for folder, namespace in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join([namespace, *parts])] = (path, is_package)
    return found


MODULES = module_files()


def layer_of(module: str) -> str | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


def imports_of(module: str, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported zoo module) for each import statement of `module`, relative ones resolved."""
    path, is_package = MODULES[module]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports inside top-level if/try blocks run at import time too
        nodes = [n for stmt in tree.body for n in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name == "zoo" or a.name.startswith("zoo.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "zoo" and not target.startswith("zoo."):
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if candidate in MODULES else target))
    return found


def test_imports_point_down():
    wrong = []
    for module in MODULES:
        if module in FACADE:
            continue
        own = LAYERS[layer_of(module)]
        for line, target in sorted(set(imports_of(module))):
            if target in FACADE:
                wrong.append(f"{module}:{line} imports the facade {target!r}; import from a room (e.g. zoo.core)")
            elif (room := layer_of(target)) is not None and LAYERS[room] > own:
                wrong.append(f"{module}:{line} imports {target} ({room}) from a lower layer ({layer_of(module)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: sorted({t for _, t in imports_of(m, top_level_only=True) if t in MODULES and t != m}) for m in MODULES}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            # a package importing its own submodules is not a cycle unless a submodule imports back
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The two checks above find a planted upward import and a planted cycle."""
    core, room = tmp_path / "core.py", tmp_path / "room.py"
    core.write_text("from ..upcycling.plan import UpcyclePlan\n")
    room.write_text("from ..core.fake_core import x\n")
    monkeypatch.setitem(MODULES, "zoo.core.fake_core", (core, False))
    monkeypatch.setitem(MODULES, "zoo.upcycling.plan_twin", (room, False))
    with pytest.raises(AssertionError, match="from a lower layer"):
        test_imports_point_down()
    core.write_text("from ..upcycling.plan_twin import y\n")
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


def test_the_core_names_no_system():
    mentions = [f"{path.name}:{n}: {line.strip()}" for path in sorted((ROOT / "zoo" / "core").glob("*.py"))
                for n, line in enumerate(path.read_text().splitlines(), 1)
                if SYSTEM_NAMES.search(line)]
    assert not mentions, "zoo/core must describe mechanisms, not systems:\n" + "\n".join(mentions)


HEAVY = ("gradio", "timm", "open_clip", "peft", "zoo.models", "zoo.pipelines", "zoo.apps", "zoo.multimodal",
         "transformers.modeling_utils")


def loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", ["import zoo.core", "import zoo"])
def test_importing_the_core_or_the_facade_stays_light(statement):
    loaded = loaded_after(statement)
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"`{statement}` imported {heavy}"


def test_every_model_type_is_known_to_the_auto_classes_after_import_zoo():
    code = """
import json, zoo
from zoo.auto_registration import MODEL_PACKAGES
from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
resolved = {t: type(AutoConfig.for_model(t)).__module__ for t in MODEL_PACKAGES}
import zoo.models
registered = sorted(k for k, v in CONFIG_MAPPING._extra_content.items() if v.__module__.startswith("zoo."))
print(json.dumps({"resolved": resolved, "registered": registered}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    from zoo.auto_registration import MODEL_PACKAGES

    assert sorted(result["registered"]) == sorted(MODEL_PACKAGES), "zoo.auto_registration.MODEL_PACKAGES is out of date"
    for model_type, module in result["resolved"].items():
        assert module.startswith("zoo."), (model_type, module)  # the zoo's class, found through the lazy table
