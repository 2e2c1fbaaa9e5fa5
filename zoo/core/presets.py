"""Named presets (upcycling plans, paper-sized configs) as a read-only mapping that hands out copies.

    PLANS = Presets("upcycling plan", {"top2-of-4": UpcyclePlan(...)}, renames={"old-name": "new_name"})
    plan = PLANS["top2-of-4"]      # a deep copy: editing it never changes what the next caller gets
    PLANS["x"] = ...               # TypeError: read-only; add entries with PLANS.register(name, value)

An old spelling in `renames` still looks up its preset, with a FutureWarning naming the new one; it is
not listed (iteration, `sorted(PLANS)`, `len` see the current names only).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from .validation import renamed

T = TypeVar("T")


class Presets(Mapping[str, T], Generic[T]):
    def __init__(self, what: str, presets: Mapping[str, T] | None = None, renames: Mapping[str, str] | None = None):
        self.what = what  # "upcycling plan": the word the errors use
        self._presets: dict[str, T] = {name: copy.deepcopy(value) for name, value in (presets or {}).items()}
        self._renames = dict(renames or {})

    def __getitem__(self, name: str) -> T:
        current = renamed(name, self._renames, self.what)
        if current not in self._presets:
            raise KeyError(f"unknown {self.what} {name!r}; known: {sorted(self._presets)}")
        return copy.deepcopy(self._presets[current])

    def __contains__(self, name) -> bool:
        return name in self._presets or name in self._renames

    def __iter__(self) -> Iterator[str]:
        return iter(self._presets)

    def __len__(self) -> int:
        return len(self._presets)

    def register(self, name: str, value: T) -> None:
        """Add (or replace) a preset; it is stored as a copy, so later edits of `value` do not reach it."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} names are non-empty strings, got {name!r}")
        self._presets[name] = copy.deepcopy(value)

    def __repr__(self) -> str:
        return f"Presets({self.what!r}, {sorted(self._presets)})"


__all__ = ["Presets"]
