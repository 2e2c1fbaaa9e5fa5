"""`import zoo` makes every zoo model type known to transformers' Auto classes without importing
the model packages up front (so `import zoo.core` stays light).

transformers resolves a checkpoint's `model_type` through `CONFIG_MAPPING`; the zoo's model types
are added to it as names that import their model package on first lookup. Importing a model
package registers its config, model, processor and pipeline classes the usual way
(`AutoConfig.register`, `AutoModel*.register`), so everything after the lookup is transformers' own
path. Until transformers' auto module is imported nothing is touched: a post-import hook adds the
names then.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# model_type -> the package that registers it. A new system adds its line; tests check the table
# against what the packages register.
MODEL_PACKAGES: dict[str, str] = {
    "zoo_upcycled_moe": "zoo.models.upcycled",
    "xmoe": "zoo.models.xmoe",
    "moiie": "zoo.models.moiie",
    "mote": "zoo.models.mote",
    "moe_llava": "zoo.models.moe_llava",
    "dense_vl": "zoo.models.moe_llava",  # the dense VL baseline (zoo.multimodal's MultimodalMoeConfig)
    "vl_dense": "zoo.models.moe_llava",  # its old spelling: saved configs still load, with a FutureWarning
    "mofme": "zoo.models.mofme",
    "mome": "zoo.models.mome",
    "unimoe": "zoo.models.unimoe",
    "mova": "zoo.models.mova",
}
_AUTO_MODULE = "transformers.models.auto.configuration_auto"


class LazyZooConfigs(dict):
    """transformers' `CONFIG_MAPPING._extra_content` (registered configs), extended with the zoo's
    model types: looking one up imports its package, which registers the real config class."""

    def _load(self, key) -> None:
        if key in MODEL_PACKAGES and not dict.__contains__(self, key):
            importlib.import_module(MODEL_PACKAGES[key])

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or key in MODEL_PACKAGES

    def __getitem__(self, key):
        self._load(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def _load_all(self) -> None:
        for key in MODEL_PACKAGES:
            self._load(key)

    def keys(self):
        self._load_all()
        return dict.keys(self)

    def values(self):
        self._load_all()
        return dict.values(self)

    def items(self):
        self._load_all()
        return dict.items(self)

    def __iter__(self):
        self._load_all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        return len(dict.keys(self) | MODEL_PACKAGES.keys())


def _install(auto_module) -> None:
    mapping = auto_module.CONFIG_MAPPING
    if not isinstance(mapping._extra_content, LazyZooConfigs):
        mapping._extra_content = LazyZooConfigs(mapping._extra_content)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `_install` right after transformers' auto-config module has been executed."""

    def find_spec(self, name, path, target=None):
        if name != _AUTO_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _install(module)

        loader.exec_module = exec_module
        return spec


def register_lazily() -> None:
    if _AUTO_MODULE in sys.modules:
        _install(sys.modules[_AUTO_MODULE])
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
