"""Scopes: where an SRP state or a command applies (the campus, a building, a zone, a door)."""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.kernel.errors import CommandError, ErrorCode

SCOPE_KINDS = ("campus", "building", "zone", "door")


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """``campus``, ``building/<id>``, ``zone/<id>`` or ``door/<id>``."""

    kind: str
    ident: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "campus" else f"{self.kind}/{self.ident}"

    @property
    def rank(self) -> int:
        """0 for the campus up to 3 for one door: higher is more specific."""
        return SCOPE_KINDS.index(self.kind)

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, _, ident = text.partition("/")
        if kind == "campus" and not ident:
            return cls("campus")
        if kind in SCOPE_KINDS[1:] and ident and "/" not in ident:
            return cls(kind, ident)
        raise CommandError(
            ErrorCode.BAD_SCOPE,
            f"scope {text!r} is not one of: campus, building/<id>, zone/<id>, door/<id>",
        )


CAMPUS = Scope("campus")
