"""``[console]`` of the campus file: where the web console listens and who may sign in."""

from __future__ import annotations

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
    """The web console: address, optional TLS, sessions, sign-in limits and users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Address to listen on; the school network's interface, or 127.0.0.1 behind a proxy.
    host: str = "127.0.0.1"
    #: TCP port; 0 picks a free one (tests).
    port: int = Field(default=8443, ge=0, le=65535)
    #: PEM certificate chain and key: HTTPS when both are set.
    cert: str | None = None
    key: str | None = None
    users: tuple[ConsoleUser, ...] = ()
    #: A session unused this long ends.
    session_idle_s: float = Field(default=900.0, gt=0, le=86_400)
    #: A session ends this long after sign-in, however busy.
    session_max_s: float = Field(default=12 * 3600.0, gt=0, le=7 * 86_400)
    #: Failed sign-ins (per name, and per client address) before a lockout.
    signin_max_failures: int = Field(default=5, ge=1, le=100)
    #: Window in which failures count, and how long a lockout lasts.
    signin_lockout_s: float = Field(default=300.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _check(self) -> ConsoleConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("console.cert and console.key go together (HTTPS needs both)")
        names = [u.name for u in self.users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"console user names used twice: {', '.join(dupes)}")
        return self

    @property
    def https(self) -> bool:
        return self.cert is not None

    def user(self, name: str) -> ConsoleUser | None:
        return next((u for u in self.users if u.name == name), None)


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
