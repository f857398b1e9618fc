"""One typed registry for methods, tasks and suites.

Imitates lm-eval's registry: duplicates are refused, an unknown name lists the known ones and
suggests the nearest, and a registry can be frozen once discovery is done.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from benchmark.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` Did you mean 'x'?` for the known name nearest to `name` (difflib), or "" when none is near."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class UnknownNameError(UserError, KeyError):
    """A name that no entry of the registry bears; the message lists what exists.

    A UserError (the CLI prints it as one line) and still a KeyError for callers that look names up.
    """

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain prose.
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object mapping with helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._frozen = False

    def add(self, name: str, entry: T) -> T:
        if self._frozen:
            raise RuntimeError(f"the {self.kind} registry is frozen; cannot add {name!r}")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        return f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} Known: {', '.join(known) or '(none)'}."

    def freeze(self) -> None:
        self._frozen = True

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
