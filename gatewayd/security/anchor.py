"""The audit chain anchored off the box: signed heads, published, and checked against the log.

The hash chain proves that no record inside the log was changed; it cannot prove that the
last records were not cut, nor that a whole log was not replaced by a shorter one, by
someone who can write the state directory. So the gateway signs its head (``seq`` and
``hash`` of the newest record) with a key of its own and publishes it as a life-safety event
on an interval (``<prefix>/<site>/event/audit``, ``data.type = "audit_head"``); whoever keeps
those messages (the district, a logger on the broker) can later run ``gatewayd audit verify
--heads FILE`` and learn whether the log on the box still holds every record it once
published.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatewayd.security.audit import read_records
from gatewayd.security.canonical import canonical
from gatewayd.security.files import write_private

HEAD_TYPE = "audit_head"
#: The gateway's own signing key, in the state directory (0600; made at first start).
KEY_NAME = "head-signing.key"


@dataclass(frozen=True, slots=True)
class HeadSigner:
    """Signs heads for one site with the gateway's key."""

    site: str
    key: Ed25519PrivateKey

    @classmethod
    def load_or_create(cls, state_dir: Path, site: str) -> HeadSigner:
        path = state_dir / KEY_NAME
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            return cls(site, loaded)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem)
        return cls(site, key)

    @property
    def public_key(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    def head(self, seq: int, record_hash: str) -> dict[str, Any]:
        """The signed head for the newest record, as published."""
        body = {
            "type": HEAD_TYPE,
            "site": self.site,
            "seq": seq,
            "hash": record_hash,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key": self.public_key,
        }
        sig = self.key.sign(canonical(body))
        return {**body, "sig": base64.b64encode(sig).decode("ascii")}


def check_signature(head: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``head`` is signed by the key it names."""
    body = {k: v for k, v in head.items() if k != "sig"}
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(head["key"])))
        key.verify(base64.b64decode(str(head["sig"])), canonical(body))
    except (KeyError, ValueError, InvalidSignature) as exc:
        raise ValueError("its signature does not verify") from exc


@dataclass
class HeadCheck:
    """What checking a log against published heads found."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_heads(path: Path) -> list[dict[str, Any]]:
    """Published heads from a file: one JSON object per line, an event or a bare head."""
    heads = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        head = obj.get("data", obj) if isinstance(obj, dict) else None
        if isinstance(head, dict) and head.get("type") == HEAD_TYPE:
            heads.append(head)
    return heads


def check_heads(
    log_path: Path, heads: Iterable[Mapping[str, Any]], *, key: str | None = None
) -> HeadCheck:
    """Whether the log still holds, unchanged, the record each published head names.

    ``key``: the gateway's public key when known (from its state directory); a head signed by
    another key is then a forgery, whoever published it.
    """
    wanted: dict[int, list[Mapping[str, Any]]] = {}
    result = HeadCheck()
    for head in heads:
        try:
            check_signature(head)
        except ValueError as exc:
            result.problems.append(f"head seq {head.get('seq')}: {exc}")
            continue
        if key is not None and head.get("key") != key:
            result.problems.append(f"head seq {head.get('seq')}: signed by another key")
            continue
        wanted.setdefault(int(head["seq"]), []).append(head)
    last = 0
    for record in read_records(log_path):
        seq = int(record["seq"])
        last = seq
        for head in wanted.pop(seq, []):
            result.checked += 1
            if head["hash"] != record["hash"]:
                result.problems.append(f"record {seq} differs from the head published at"
                                       f" {head.get('at')}: the log was rewritten")  # fmt: skip
    for seq in sorted(wanted):
        result.checked += len(wanted[seq])
        result.problems.append(
            f"a head was published for record {seq} but the log ends at {last}:"
            f" records {last + 1}..{seq} were cut"
            if seq > last
            else f"record {seq} is missing from the log (its file was rotated away or removed)"
        )
    return result


def public_key_of(state_dir: Path) -> str | None:
    """The gateway's head-signing public key, if its state directory holds one."""
    path = state_dir / KEY_NAME
    if not path.exists() or not os.access(path, os.R_OK):
        return None
    return HeadSigner.load_or_create(state_dir, "").public_key
