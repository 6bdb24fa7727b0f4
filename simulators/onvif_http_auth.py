"""HTTP basic and digest (RFC 7616, MD5, qop=auth) checks for the camera's snapshot URL."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections import deque
from typing import Literal

from aiohttp import web

REALM = "onvif-sim"
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
#: Nonces we handed out and still accept (bounded: the oldest are forgotten).
NONCE_LIMIT = 256


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 7616 digest: MD5 by design


class HttpAuth:
    """Checks a request's ``Authorization`` header; ``mode`` says which schemes it accepts."""

    def __init__(
        self, username: str, password: str, mode: Literal["digest", "basic", "any"]
    ) -> None:
        self.username = username
        self.password = password
        self.mode = mode
        self._nonces: deque[str] = deque(maxlen=NONCE_LIMIT)

    def check(self, request: web.Request) -> web.Response | None:
        """None if the request is authorised, else the 401 reply with a challenge."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic" and self.mode != "digest" and self._basic_ok(value):
            return None
        if (
            scheme.lower() == "digest"
            and self.mode != "basic"
            and self._digest_ok(request.method, value)
        ):
            return None
        return self._challenge()

    def _basic_ok(self, value: str) -> bool:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.username}:{self.password}"

    def _digest_ok(self, method: str, value: str) -> bool:
        params = {m[0]: m[1] or m[2] for m in _PARAM.findall(value)}
        if params.get("username") != self.username or params.get("nonce") not in self._nonces:
            return False
        ha1 = _md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = _md5(f"{method}:{params.get('uri', '')}")
        if params.get("qop") == "auth":
            expected = _md5(
                f"{ha1}:{params['nonce']}:{params.get('nc', '')}:{params.get('cnonce', '')}"
                f":auth:{ha2}"
            )
        else:
            expected = _md5(f"{ha1}:{params['nonce']}:{ha2}")
        return secrets.compare_digest(expected, params.get("response", ""))

    def _challenge(self) -> web.Response:
        headers: dict[str, str] = {}
        if self.mode != "basic":
            nonce = secrets.token_hex(16)
            self._nonces.append(nonce)
            headers["WWW-Authenticate"] = (
                f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'
            )
        else:
            headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
        return web.Response(status=401, headers=headers, text="unauthorized")
