"""The signed bytes of a command (docs/security.md, section 3), signing and verifying them."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.security.canonical import canonical

#: Ed25519 signatures are 64 bytes: 88 characters of padded base64.
SIGNATURE_BYTES = 64


def signing_bytes(body: Mapping[str, Any], site: str) -> bytes:
    """What ``sig`` and ``params.cosig`` sign: the body without them, bound to ``site``.

    The destination site is part of the signed object even when the envelope does not carry
    it, so a command signed for one school cannot be replayed onto another school's topic.
    """
    signed = {k: v for k, v in body.items() if k != "sig"}
    params = signed.get("params")
    if isinstance(params, Mapping) and "cosig" in params:
        signed["params"] = {k: v for k, v in params.items() if k != "cosig"}
    signed["site"] = site
    return canonical(signed)


def sign(body: Mapping[str, Any], private_key: Ed25519PrivateKey, *, site: str) -> str:
    """The base64 ``sig`` (or ``params.cosig``) of a command body for ``site``."""
    return base64.b64encode(private_key.sign(signing_bytes(body, site))).decode("ascii")


def signed(body: Mapping[str, Any], private_key: Ed25519PrivateKey, *, site: str) -> dict[str, Any]:
    """A copy of ``body`` with its ``sig`` set."""
    return {**body, "sig": sign(body, private_key, site=site)}


def verify(key: Ed25519PublicKey, sig: object, message: bytes, what: str) -> None:
    if not isinstance(sig, str) or not sig:
        raise CommandError(ErrorCode.BAD_SIGNATURE, f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandError(ErrorCode.BAD_SIGNATURE, f"{what} is not valid base64") from exc
    if len(raw) != SIGNATURE_BYTES:
        raise CommandError(
            ErrorCode.BAD_SIGNATURE, f"{what} is {len(raw)} bytes, not {SIGNATURE_BYTES}"
        )
    try:
        key.verify(raw, message)
    except InvalidSignature as exc:
        raise CommandError(ErrorCode.BAD_SIGNATURE, f"{what} does not verify") from exc


def raw_body(payload: bytes) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            # Two parsers could keep different copies; a signature over either is ambiguous.
            raise CommandError(ErrorCode.BAD_REQUEST, "command repeats a member name")
        return dict(pairs)

    try:
        body = json.loads(payload.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CommandError(ErrorCode.BAD_REQUEST, "command is not a UTF-8 JSON object") from exc
    if not isinstance(body, dict):
        raise CommandError(ErrorCode.BAD_REQUEST, "command must be a JSON object")
    return body
