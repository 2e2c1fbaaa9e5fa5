"""The distribution ships the mapped folders: zoo/, models/ -> zoo.models, pipelines/ -> zoo.pipelines,
apps/ -> zoo.apps, model_cards/ -> zoo.model_cards (a built wheel and the editable install)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"zoo": "zoo", "zoo/models": "models", "zoo/pipelines": "pipelines", "zoo/apps": "apps",
          "zoo/model_cards": "model_cards"}


def source_files(folder: str, suffixes=(".py", ".md", ".json", ".safetensors")) -> set[str]:
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


def test_editable_install_maps_folders_into_zoo():
    """`zoo.models` etc. resolve to the top-level folders (no zoo/models folder exists to shadow them)."""
    import zoo
    import zoo.apps
    import zoo.model_cards
    import zoo.models
    import zoo.pipelines

    for module, folder in zip((zoo, zoo.models, zoo.pipelines, zoo.apps, zoo.model_cards), MAPPED.values()):
        assert Path(module.__file__).resolve() == (ROOT / folder / "__init__.py").resolve(), module.__name__
