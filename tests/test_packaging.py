"""The distribution ships the mapped folders: zoo/, models/ -> zoo.models, pipelines/ -> zoo.pipelines,
apps/ -> zoo.apps, model_cards/ -> zoo.model_cards (a built wheel and the editable install), and every
shipped trained artefact lives in models/<system>/trained/, where zoo.models.trained_dir finds it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"zoo": "zoo", "zoo/models": "models", "zoo/pipelines": "pipelines", "zoo/apps": "apps",
          "zoo/model_cards": "model_cards"}


TRAINED_SUFFIXES = (".safetensors", ".json", ".txt", ".md")
SYSTEMS_WITH_TRAINED = {"moiie", "mote", "moe_llava", "dense_vl", "mofme", "xmoe", "mome", "unimoe", "mova"}


def source_files(folder: str, suffixes=(".py", ".md", ".json", ".safetensors", ".txt")) -> set[str]:
    """Files under a top-level folder that belong to a package (its directory has an __init__.py):
    code, model cards, and the shipped trained weights with their configs."""
    found = set()
    for path in (ROOT / folder).rglob("*"):
        if path.suffix in suffixes and "__pycache__" not in path.parts and (path.parent / "__init__.py").exists():
            found.add(path.relative_to(ROOT / folder).as_posix())
    return found


@pytest.mark.slow
def test_wheel_contains_every_mapped_package(tmp_path):
    # build from a copy so the test never writes build/ or egg-info into the repo
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in MAPPED.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "whl"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "whl").glob("moe_zoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, folder in MAPPED.items():
        assert f"{package}/__init__.py" in names, f"{folder}/ is not shipped as {package}"
        missing = {f for f in source_files(folder) if f"{package}/{f}" not in names}
        assert not missing, f"not in the wheel: {sorted(missing)[:5]}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "zoo = zoo.apps.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # the trained artefacts are in the wheel, and trained_dir finds them there (not in this checkout)
    trained = {f for f in source_files("models", TRAINED_SUFFIXES) if "/trained/" in f}
    assert trained and all(f"zoo/models/{f}" in names for f in trained)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    code = ("import json; from zoo.models import trained_dir; "
            f"print(json.dumps({{s: str(trained_dir(s)) for s in {sorted(SYSTEMS_WITH_TRAINED)}}}))")
    env = {**os.environ, "PYTHONPATH": str(unpacked)}  # found before the editable install's finder
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=tmp_path, timeout=300)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    for system, folder in found.items():
        assert Path(folder) == unpacked / "zoo" / "models" / system / "trained", (system, folder)
        assert any(Path(folder).iterdir())


def test_trained_artefacts_live_only_in_models_system_trained():
    """One place: every weights file of the package is under models/<system>/trained/ (none in pipelines/,
    apps/, zoo/ or a system's own folder), and each trained folder is a package trained_dir resolves."""
    weights = [p.relative_to(ROOT) for folder in MAPPED.values() for p in (ROOT / folder).rglob("*")
               if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf") and "__pycache__" not in p.parts]
    assert weights
    elsewhere = [w.as_posix() for w in weights if not (w.parts[0] == "models" and len(w.parts) > 3 and w.parts[2] == "trained")]
    assert not elsewhere, f"trained artefacts outside models/<system>/trained/: {elsewhere}"
    from zoo.models import trained_dir

    folders = {p.parent.parent.name for p in (ROOT / "models").glob("*/trained/__init__.py")}
    assert folders == SYSTEMS_WITH_TRAINED
    for system in folders:
        assert trained_dir(system).resolve() == (ROOT / "models" / system / "trained").resolve()
    assert trained_dir("moe-llava") == trained_dir("moe_llava")  # the command-line spelling
    with pytest.raises(ValueError, match="ships no trained artefacts"):
        trained_dir("upcycled")


def test_editable_install_maps_folders_into_zoo():
    """`zoo.models` etc. resolve to the top-level folders (no zoo/models folder exists to shadow them)."""
    import zoo
    import zoo.apps
    import zoo.model_cards
    import zoo.models
    import zoo.pipelines

    for module, folder in zip((zoo, zoo.models, zoo.pipelines, zoo.apps, zoo.model_cards), MAPPED.values()):
        assert Path(module.__file__).resolve() == (ROOT / folder / "__init__.py").resolve(), module.__name__
