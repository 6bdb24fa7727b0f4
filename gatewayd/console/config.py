"""``[console]`` of the campus file: where the web console listens and who may sign in."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatewayd.console.passwords import DEMO_SIGNINS, demo_hashes, parse_hash
from gatewayd.security.actors import ACTOR_ID_PATTERN
from gatewayd.security.roles import Role

#: Roles a person signing in may hold; ``system`` and ``district`` never sign in locally.
CONSOLE_ROLES = frozenset({Role.OPERATOR, Role.ADMINISTRATOR, Role.RESPONDER})


class ConsoleUser(BaseModel):
    """One local sign-in: ``[[console.users]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: What the person types to sign in.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    #: ``scrypt$n$r$p$salt_b64$hash_b64`` (``gatewayd console-passwd`` prints one).
    password_hash: str
    #: The actor every command of this person carries (audit trail, security roles).
    actor: str = Field(pattern=ACTOR_ID_PATTERN)
    roles: frozenset[Role] = Field(min_length=1)
    #: Shown on the page ("Front office").
    display: str = ""

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        parse_hash(value)
        return value

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: frozenset[Role]) -> frozenset[Role]:
        extra = value - CONSOLE_ROLES
        if extra:
            raise ValueError(f"console users may hold {sorted(CONSOLE_ROLES)}, not {sorted(extra)}")
        return value


class ConsoleConfig(BaseModel):
    """The web console: address, TLS, allowed origins, sessions, sign-in throttling, users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Address to listen on; the school network's interface, or 127.0.0.1 behind a proxy.
    host: str = "127.0.0.1"
    #: TCP port; 0 picks a free one (tests).
    port: int = Field(default=8443, ge=0, le=65535)
    #: PEM certificate chain and key: HTTPS when both are set.
    cert: str | None = None
    key: str | None = None
    #: Serve plain HTTP on a non-loopback ``host`` anyway: passwords and session cookies then
    #: cross the school network in clear. Refused unless set; loopback is always allowed.
    allow_plain_http: bool = False
    #: The address people type (``https://console.school.example:8443``), when it is not
    #: ``host:port`` (a DNS name, a TLS proxy); its origin is the one POSTs may come from.
    public_url: str | None = None
    #: More origins POSTs may come from (``scheme://host[:port]``), besides the public URL.
    allowed_origins: tuple[str, ...] = ()
    users: tuple[ConsoleUser, ...] = ()
    #: A session unused this long ends (the cookie itself ends with the browser).
    session_idle_s: float = Field(default=900.0, gt=0, le=86_400)
    #: A session ends this long after sign-in, however busy.
    session_max_s: float = Field(default=12 * 3600.0, gt=0, le=7 * 86_400)
    #: Sessions one user may hold at once; signing in past this ends that user's oldest.
    sessions_per_user: int = Field(default=8, ge=1, le=256)
    #: Wrong passwords from one address for one name before each try waits.
    signin_free_failures: int = Field(default=3, ge=1, le=100)
    #: Wrong passwords from one address, whatever the names, before each try waits.
    signin_address_free_failures: int = Field(default=10, ge=1, le=1000)
    #: The first wait; each further failure doubles it, up to ``signin_max_delay_s``.
    signin_base_delay_s: float = Field(default=1.0, gt=0, le=3600)
    signin_max_delay_s: float = Field(default=300.0, gt=0, le=86_400)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None:
            origin_of(value)
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            origin_of(origin)
            parts = urlsplit(origin)
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{origin!r} is not an origin like https://host[:port]")
        return value

    @model_validator(mode="after")
    def _check(self) -> ConsoleConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("console.cert and console.key go together (HTTPS needs both)")
        problem = self.plain_http_problem()
        if problem:
            raise ValueError(problem)
        if _is_wildcard(self.host) and self.public_url is None and not self.allowed_origins:
            raise ValueError(
                f"console.host {self.host} listens everywhere, so no origin follows from it:"
                " set console.public_url (the address people type)"
            )
        if self.signin_max_delay_s < self.signin_base_delay_s:
            raise ValueError("console.signin_max_delay_s is below signin_base_delay_s")
        names = [u.name for u in self.users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"console user names used twice: {', '.join(dupes)}")
        return self

    @property
    def https(self) -> bool:
        return self.cert is not None

    @property
    def loopback(self) -> bool:
        """Listening only where no other machine can reach the console."""
        return is_loopback(self.host)

    def plain_http_problem(self) -> str | None:
        """Why this config may not serve plain HTTP, or None when it may."""
        if self.https or self.loopback or self.allow_plain_http:
            return None
        return (
            f"console.host {self.host} without console.cert and console.key would serve"
            " passwords and session cookies in clear on the network: set cert and key, listen"
            " on 127.0.0.1 behind a TLS proxy, or set console.allow_plain_http = true"
        )

    def origins(self, port: int) -> frozenset[str]:
        """Origins POSTs may come from, for a console listening on ``port``."""
        configured = list(self.allowed_origins)
        if self.public_url is not None:
            configured.append(self.public_url)
        if not configured:
            scheme = "https" if self.https else "http"
            hosts = [self.host]
            if self.loopback:
                hosts += ["127.0.0.1", "localhost", "::1"]
            configured = [f"{scheme}://{_bracket(h)}:{port}" for h in hosts]
        return frozenset(origin_of(o) for o in configured)

    def user(self, name: str) -> ConsoleUser | None:
        return next((u for u in self.users if u.name == name), None)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``); names are not trusted."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower case, default ports left out."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s)://host[:port] URL")
    default = {"http": 80, "https": 443}[parts.scheme]
    host = _bracket(parts.hostname.lower())
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def demo_console_config(host: str = "127.0.0.1", port: int = 0) -> ConsoleConfig:
    """The demo's console: one user per role, with the published demo passwords."""
    hashes = demo_hashes()
    return ConsoleConfig(
        host=host,
        port=port,
        users=tuple(
            ConsoleUser(
                name=name,
                password_hash=hashes[name],
                actor=actor,
                roles=frozenset({Role(role)}),
                display=f"{name.title()} (demo)",
            )
            for name, _password, actor, role in DEMO_SIGNINS
        ),
    )


def demo_signins_text(url: str | None) -> str:
    """What ``gatewayd demo`` prints about the console."""
    lines = [f"  console   {url or '(not started)'}  sign in as"]
    lines += [
        f"            {name:<10} password {password:<15} {role}"
        for name, password, _actor, role in DEMO_SIGNINS
    ]
    return "\n".join(lines)
