"""Password hashes for console users: stdlib scrypt in a self-describing string.

Format: ``scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>`` (standard base64, padded).
``n`` is the CPU/memory cost (a power of two), ``r`` the block size, ``p`` the parallelism;
the hash is 32 bytes, the salt 16 random bytes. Parameters travel with each hash, so raising
the defaults later leaves existing hashes valid.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass
from functools import cache

#: Defaults: 32 MiB and about 0.1 s per check on a small box; raise ``n`` on faster ones.
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**15, 8, 1
#: Bounds accepted from a config, so a typo cannot make each sign-in take minutes.
MAX_N, MAX_R, MAX_P = 2**20, 32, 16
HASH_BYTES, SALT_BYTES = 32, 16

#: The demo sign-ins (name, password, actor, role): printed by ``gatewayd demo``.
DEMO_SIGNINS = (
    ("office", "demo-office", "demo-operator", "operator"),
    ("principal", "demo-principal", "demo-administrator", "administrator"),
    ("officer", "demo-officer", "demo-responder", "responder"),
)
# Demo hashes use a public salt, so they are the same strings everywhere and easy to spot.
_DEMO_SALT = b"gatewayd DEMO!!!"


@dataclass(frozen=True, slots=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # scrypt needs 128 * r * n bytes; hashlib's default cap (32 MiB) is too tight for n=2**15.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=HASH_BYTES
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(
    password: str,
    *,
    n: int = DEFAULT_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
    salt: bytes | None = None,
) -> str:
    """Hash a password into the ``scrypt$n$r$p$salt$hash`` form."""
    if not password:
        raise ValueError("an empty password is not a password")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _derive(password, salt, n, r, p)
    text = f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"
    parse_hash(text)
    return text


def parse_hash(text: str) -> ScryptHash:
    """Decode a stored hash; ``ValueError`` says what is wrong (config validation)."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("password_hash must look like scrypt$n$r$p$salt_b64$hash_b64")
    try:
        n, r, p = (int(v) for v in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"password_hash is malformed: {exc}") from exc
    if n < 2 or n & (n - 1) or n > MAX_N:
        raise ValueError(f"scrypt n must be a power of two up to {MAX_N}, not {n}")
    if not (1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise ValueError(f"scrypt r must be 1..{MAX_R} and p 1..{MAX_P}")
    if len(salt) < 8 or len(digest) != HASH_BYTES:
        raise ValueError(f"password_hash needs a salt of 8+ bytes and a {HASH_BYTES}-byte hash")
    return ScryptHash(n, r, p, salt, digest)


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; compares in constant time."""
    parsed = parse_hash(stored)
    candidate = _derive(password, parsed.salt, parsed.n, parsed.r, parsed.p)
    return hmac.compare_digest(candidate, parsed.digest)


@cache
def demo_hashes() -> dict[str, str]:
    """Hashes of the demo passwords by user name (the same on every machine)."""
    return {
        name: hash_password(password, salt=_DEMO_SALT)
        for name, password, _actor, _role in DEMO_SIGNINS
    }


def is_demo_hash(text: str) -> bool:
    """A hash of a published demo password: refused outside demo mode."""
    try:
        salt = parse_hash(text).salt
    except ValueError:
        return False
    return salt == _DEMO_SALT


# --- ``gatewayd console-passwd`` ------------------------------------------------------------


def add_passwd_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``console-passwd`` on the CLI."""
    p = sub.add_parser(
        "console-passwd",
        help="hash a password for a [[console.users]] entry",
        description="Ask for a password (twice) and print its scrypt hash.",
    )
    p.add_argument(
        "--cost",
        type=int,
        default=DEFAULT_N.bit_length() - 1,
        metavar="LOG2N",
        help=f"scrypt n = 2**LOG2N (default {DEFAULT_N.bit_length() - 1})",
    )
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(handler=_passwd)


def _passwd(args: argparse.Namespace) -> int:
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("gatewayd: the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 8:
        print("gatewayd: use at least 8 characters", file=sys.stderr)
        return 1
    try:
        print(hash_password(password, n=2**args.cost))
    except ValueError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        return 2
    return 0
