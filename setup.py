"""Package layout: the top-level folders models/, pipelines/, apps/ and model_cards/ become
zoo.models, zoo.pipelines, zoo.apps and zoo.model_cards. Subpackages are found by walking the
folders, so a new model folder needs no edit here."""
import os

from setuptools import setup

ROOTS = {"zoo": "zoo", "zoo.models": "models", "zoo.pipelines": "pipelines", "zoo.apps": "apps",
         "zoo.model_cards": "model_cards"}
DATA = [f"{folder}{ext}" for folder in ("", "*/") for ext in ("*.md", "*.json", "*.safetensors", "*.txt", "*.jinja")]


def find(namespace: str, folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
        if "__init__.py" in filenames:
            rel = os.path.relpath(dirpath, folder)
            found.append(namespace if rel == "." else namespace + "." + rel.replace(os.sep, "."))
    return found


packages = [p for ns, folder in ROOTS.items() for p in find(ns, folder)]
setup(
    packages=packages,
    package_dir=ROOTS,
    package_data={p: DATA for p in packages},
    include_package_data=True,
)
