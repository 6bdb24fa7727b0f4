"""Actor key files: ``gatewayd keygen``, loading a private key, and the shipped DEMO keys.

Private keys are PKCS#8 PEM, unencrypted, mode 0600 (``openssl pkey -in NAME.key`` reads them);
public keys travel as the base64 of their raw 32 bytes, one line, as the config expects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewayd.kernel.errors import ErrorCode, GatewayError
from gatewayd.security.actors import ACTOR_ID_PATTERN

#: The demo actors, one per role, as shipped in ``configs/demo-keys/``.
DEMO_ACTORS = ("demo-operator", "demo-administrator", "demo-responder")
#: Demo keys derive from public seeds, so anyone can rebuild them: never trust them on a site.
_DEMO_SEED_PREFIX = b"gatewayd DEMO key, public, never use on a real site: "


class KeyFileError(GatewayError):
    """A key file is missing, unreadable or not an Ed25519 private key."""

    code: str = ErrorCode.BAD_KEY


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """Where ``keygen`` wrote a pair, and the public key line for the config."""

    private: Path
    public: Path
    public_key: str


def public_key_text(private_key: Ed25519PrivateKey) -> str:
    """The config form of a key's public half: base64 of the raw 32 bytes."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key, as ``keygen`` writes it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    mode = Path(path).stat().st_mode & 0o777
    if mode & 0o077 and not is_demo_key(public_key_text(key)):
        # Whoever else can read it can sign as this actor: refuse before it is used.
        raise KeyFileError(
            f"{path} may be read by other users (mode {mode:04o}); a private key must be"
            f" 0600: chmod 600 {path}"
        )
    return key


def write_key_pair(
    private_key: Ed25519PrivateKey, out_dir: Path | str, name: str, *, overwrite: bool = False
) -> KeyFiles:
    """Write ``NAME.key`` (0600, created that way, never widened) and ``NAME.pub``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(private_path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{private_path} exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as f:
        # O_CREAT's mode does not apply to an existing file being overwritten.
        os.fchmod(f.fileno(), 0o600)
        f.write(private_key_pem(private_key))
        f.flush()
        os.fsync(f.fileno())
    text = public_key_text(private_key)
    public_path.write_text(text + "\n", encoding="ascii")
    return KeyFiles(private_path, public_path, text)


def keygen(out_dir: Path | str, name: str) -> KeyFiles:
    """Generate a fresh Ed25519 pair for actor ``name`` into ``out_dir``."""
    # The name becomes a file name: no separators, no dot-dot.
    if not re.fullmatch(ACTOR_ID_PATTERN, name) or ".." in name:
        raise KeyFileError(f"actor id {name!r} must match {ACTOR_ID_PATTERN}")
    return write_key_pair(Ed25519PrivateKey.generate(), out_dir, name)


def config_snippet(actor: str, public_key: str, roles: list[str]) -> str:
    """The ``[[security.actors]]`` entry to paste into a campus file."""
    role_list = ", ".join(f'"{r}"' for r in roles)
    return (
        f'[[security.actors]]\nid = "{actor}"\npublic_key = "{public_key}"\nroles = [{role_list}]\n'
    )


# --- DEMO keys --------------------------------------------------------------------------------


def demo_private_key(actor: str) -> Ed25519PrivateKey:
    """The DEMO key of a demo actor (derived from a public seed: anyone can compute it)."""
    seed = hashlib.sha256(_DEMO_SEED_PREFIX + actor.encode("utf-8")).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


@cache
def _demo_raw_keys() -> frozenset[bytes]:
    return frozenset(base64.b64decode(public_key_text(demo_private_key(a))) for a in DEMO_ACTORS)


def is_demo_key(public_key: str) -> bool:
    """Whether a config public key (base64, raw 32 bytes) is one of the shipped DEMO keys."""
    try:
        raw = base64.b64decode(public_key.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return raw in _demo_raw_keys()


def write_demo_keys(out_dir: Path | str) -> list[KeyFiles]:
    """(Re)write the DEMO key files, as committed in ``configs/demo-keys/``."""
    return [write_key_pair(demo_private_key(a), out_dir, a, overwrite=True) for a in DEMO_ACTORS]


# --- keys a server holds ----------------------------------------------------------------------


class ServerKeys:
    """Private keys a server (the console) holds to sign for its users: ``<folder>/<actor>.key``.

    In demo mode the DEMO actors' keys need no folder: they are derived from public seeds.
    """

    def __init__(self, folder: Path | str | None, *, demo: bool) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.demo = demo
        self._cache: dict[str, Ed25519PrivateKey] = {}

    def key_for(self, actor: str) -> Ed25519PrivateKey:
        """The private key of ``actor``; :class:`KeyFileError` if the server holds none."""
        key = self._cache.get(actor)
        if key is not None:
            return key
        if not re.fullmatch(ACTOR_ID_PATTERN, actor) or ".." in actor:
            raise KeyFileError(f"actor id {actor!r} cannot name a key file")
        if self.folder is not None and (self.folder / f"{actor}.key").exists():
            key = load_private_key(self.folder / f"{actor}.key")
        elif self.demo and actor in DEMO_ACTORS:
            key = demo_private_key(actor)
        else:
            where = self.folder if self.folder is not None else "no security.console_keys"
            raise KeyFileError(f"no key for actor {actor!r} ({where})")
        self._cache[actor] = key
        return key
