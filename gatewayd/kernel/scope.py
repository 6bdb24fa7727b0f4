"""Scopes: where an SRP state or a command applies (the campus, a building, a zone, a door)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gatewayd.kernel.driver import ID_PATTERN
from gatewayd.kernel.errors import CommandError, ErrorCode

SCOPE_KINDS = ("campus", "building", "zone", "door")
#: What an id in a scope may be: exactly what the campus file allows for ids.
_IDENT = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))


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
        """The scope ``text`` names, which must be written exactly as ``str(scope)`` writes it.

        Only the canonical spelling is accepted (no ``campus/``, no spaces, no empty ids), so
        a check that compares scopes can never be walked around by another way of writing one.
        """
        kind, sep, ident = text.partition("/")
        scope: Scope | None = None
        if kind == "campus" and not sep:
            scope = cls("campus")
        elif kind in SCOPE_KINDS[1:] and _IDENT.fullmatch(ident):
            scope = cls(kind, ident)
        if scope is None or str(scope) != text:
            raise CommandError(
                ErrorCode.BAD_SCOPE,
                f"scope {text[:80]!r} is not one of: campus, building/<id>, zone/<id>,"
                " door/<id> (written exactly so)",
            )
        return scope


CAMPUS = Scope("campus")
