"""The ``gatewayd`` command: run the daemon, check a config, operate doors over MQTT."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd.app.reload import add_reload_command, schedule_lines
from gatewayd.kernel.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gatewayd.app.opconfig import OperatorConfig
    from gatewayd.service.config import Config
    from gatewayd.uplink.config import MqttConfig

# Operator commands (lockdown, status, ...) read only the site and the broker
# (app/opconfig.py) and never import a driver; the whole campus is loaded, in the handlers,
# only by the commands that need it (run, check, audit verify).

DEFAULT_CONFIG = os.environ.get("GATEWAYD_CONFIG", "/etc/gatewayd/campus.toml")
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    # pydantic looks for plugins (the ``pydantic`` entry-point group) when it builds its first
    # model, which reads every installed distribution's metadata: ~20 ms of each operator
    # command, for a group nothing of gatewayd's uses. An operator who runs one sets the
    # variable (empty enables them all) and this default steps aside.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    # Forty subcommands' parsers (~0.3 MB) would otherwise live as long as the daemon.
    del parser
    try:
        code: int = args.handler(args)
        # Flushed here, where a closed pipe is caught, not at exit, where it is a traceback.
        sys.stdout.flush()
    except BrokenPipeError:
        # Piped to `head`, which has read enough: not an error, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewayd", description=__doc__)
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "-c",
            "--config",
            default=DEFAULT_CONFIG,
            help=f"campus config file (default: {DEFAULT_CONFIG})",
        )
        return p

    p = command("run", "run the daemon in the foreground")
    p.add_argument("--log-level", default="info")
    _log_format(p)
    p.set_defaults(handler=_run)

    p = command("check", "validate a campus config and print a summary")
    p.set_defaults(handler=_check)

    add_reload_command(command)

    p = sub.add_parser("demo", help="run the demo campus: simulators, a private broker, daemon")
    p.add_argument("-c", "--config", default=None, help="campus file (default: the demo campus)")
    p.add_argument("--mqtt", default=None, help="use this broker instead of a private Mosquitto")
    p.add_argument("--log-level", default="info")
    _log_format(p)
    p.add_argument(
        "--control",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="serve the simulators' control interface here (docs/simulators.md; port 0: any)",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="keep the gateway's state here (default: a temporary folder removed at exit)",
    )
    p.set_defaults(handler=_demo)

    _door_commands(command)

    p = command("drill", "run a drill: scoped, timed, dry-run unless --live")
    p.add_argument(
        "--state", required=True, choices=["hold", "secure", "lockdown", "evacuate", "shelter"]
    )
    p.add_argument("--scope", required=True, help="campus, building/<id> or zone/<id>")
    p.add_argument("--duration", type=float, required=True, metavar="SECONDS")
    p.add_argument("--live", action="store_true", help="actuate doors (default: dry run)")
    p.add_argument("--hazard", default=None, help="for a shelter drill")
    _operator_options(p)
    p.set_defaults(handler=_operate, action="drill")

    p = command("status", "show the campus state and doors as the broker holds them")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--mqtt", default=None, help="broker URL (default: from the config)")
    p.add_argument("--all", action="store_true", help="list every door, not only exceptions")
    p.set_defaults(handler=_status)
    _security_commands(sub)
    _district_commands(sub)
    _report_commands(sub)
    return parser


def _door_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The SRP states, ``release``, ``lock`` and ``unlock``: one signed command each."""
    for action, help_text in (
        ("lockdown", "LOCKDOWN a scope: classroom, interior (and perimeter) doors locked"),
        ("secure", "SECURE a scope: exterior doors locked"),
        ("hold", "HOLD a scope: classroom doors locked"),
        ("evacuate", "EVACUATE a scope: egress (and interior) doors released"),
        ("shelter", "SHELTER a scope for a hazard: per-hazard door actions"),
        ("release", "release the state held on a scope, or one door (per-room release)"),
    ):
        p = command(action, help_text)
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--scope", help="campus, building/<id> or zone/<id>")
        target.add_argument("--door", help="a door id")
        if action == "shelter":
            p.add_argument(
                "--hazard",
                required=True,
                choices=["tornado", "hazmat", "earthquake", "severe_weather", "bomb"],
            )
        _operator_options(p)
        p.set_defaults(handler=_operate, action=action)
    for action in ("lock", "unlock"):
        p = command(action, f"{action} one door")
        p.add_argument("--door", required=True)
        if action == "unlock":
            p.add_argument(
                "--duration",
                type=float,
                default=None,
                metavar="SECONDS",
                help="responder override: unlocked this long, then relocked",
            )
            p.add_argument(
                "--momentary",
                action="store_true",
                help="responder override for the site's momentary time",
            )
        _operator_options(p)
        p.set_defaults(handler=_operate, action=action)


def _report_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``report``: after-action reports and the responder pack (gatewayd.app.reports)."""
    from gatewayd.app.reports import add_report_command

    add_report_command(sub)


def _district_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bridge-config`` and ``district ...`` (gatewayd.app.bridge, gatewayd.app.district_cli)."""
    from gatewayd.app.bridge import add_bridge_command
    from gatewayd.app.district_cli import add_district_commands

    add_bridge_command(sub)
    add_district_commands(sub)


def _security_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gatewayd.console.passwords import add_passwd_command

    add_passwd_command(sub)
    p = sub.add_parser("keygen", help="make an actor's Ed25519 key pair, print its config entry")
    p.add_argument("--actor", required=True, help="actor id, as in [[security.actors]]")
    p.add_argument("--out", required=True, help="directory for ACTOR.key (0600) and ACTOR.pub")
    p.add_argument(
        "--role",
        action="append",
        default=None,
        help="role in the printed entry (repeatable; default operator)",
        choices=["operator", "administrator", "responder", "district"],
    )
    p.set_defaults(handler=_keygen)
    audit = sub.add_parser("audit", help="audit log tools").add_subparsers(metavar="ACTION")
    p = audit.add_parser("verify", help="check the audit log's hash chain; exit 1 at a fault")
    source = p.add_mutually_exclusive_group()
    source.add_argument("-c", "--config", default=None, help=f"campus file ({DEFAULT_CONFIG})")
    source.add_argument("--file", default=None, help="an audit log file")
    p.add_argument(
        "--heads",
        default=None,
        metavar="FILE",
        help="published heads (JSON lines from event/audit) the log must still hold",
    )
    p.set_defaults(handler=_audit_verify)


def _operator_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        default=os.environ.get("GATEWAYD_KEY"),
        metavar="PATH",
        help="your private key file (default $GATEWAYD_KEY; in demo mode the DEMO"
        " key of the action's role)",
    )
    p.add_argument(
        "--actor",
        default=os.environ.get("GATEWAYD_ACTOR"),
        help="your actor id (default $GATEWAYD_ACTOR, else the key file's name)",
    )
    p.add_argument("--json", action="store_true", help="print the raw reply")
    p.add_argument(
        "--print",
        action="store_true",
        dest="print_only",
        help="print the signed command body and send nothing (for mosquitto_pub -m, scripts)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    p.add_argument("--mqtt", default=None, help="broker URL (default: from the config)")


def _mqtt(config: OperatorConfig, url: str | None) -> MqttConfig:
    """The broker: ``--mqtt``, else ``$GATEWAYD_MQTT`` (the demo prints it), else the file's."""
    url = url or os.environ.get("GATEWAYD_MQTT") or None
    return config.mqtt if url is None else config.mqtt.model_copy(update={"url": url})


# --- handlers -------------------------------------------------------------------------------


#: Installed for the operator tools (``district lockdown``'s live table), imported by
#: structlog merely because they are there, and never used by a daemon that logs lines: rich
#: and pygments for its console and tracebacks, greenlet for its thread-local shim. About 5 MB
#: of the daemon's resident memory (bench.floor, "idle").
DAEMON_UNUSED = ("rich", "pygments", "greenlet")


def _run(args: argparse.Namespace) -> int:
    if "structlog" not in sys.modules:
        for name in DAEMON_UNUSED:
            # An import of it now raises ImportError, which structlog takes as "not installed".
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from gatewayd.app.daemon import run_daemon
    from gatewayd.app.logs import configure
    from gatewayd.service.config import load_config

    configure(args.log_level, json=_json_logs(args))
    config = load_config(args.config)
    return run_daemon(config)


def _check(args: argparse.Namespace) -> int:
    from gatewayd.rules.rulefile import load_rules
    from gatewayd.service.config import load_config

    config = load_config(args.config)
    print(summary(config))
    if config.policy.rules:
        rules = load_rules(config.policy.rules)
        print(f"rules     {len(rules)} from {config.policy.rules}")
    if config.policy.fire_verification_s:
        print(f"WARNING   fire alarm verification delay {config.policy.fire_verification_s} s")
    for warning in check_warnings(config):
        print(f"WARNING   {warning}")
    _check_plans(config)
    for line in schedule_lines(config):
        print(line)
    return _check_security(config)


def _check_plans(config: Config) -> None:
    """Floor plans (``[[buildings]] plan``): read and matched to the doors, or each problem."""
    from gatewayd.console.plans import load_plans

    try:
        plans = load_plans(config)
    except ConfigError as exc:
        # A plan is for people: a wrong one is loud here, and never keeps the doors from
        # running (the console shows the buildings without it).
        for problem in exc.problems:
            print(f"WARNING   {problem}")
        return
    if plans:
        doors = sum(len(p.doors) for p in plans.values())
        print(f"plans     {len(plans)} buildings, {doors} door markers")


def check_warnings(config: Config) -> list[str]:
    """What is valid but probably not meant: a site nobody can command, unverifiable doors."""
    warnings = []
    if not config.security.actors:
        warnings.append("no [[security.actors]]: nobody can send this gateway a command"
                        " (gatewayd keygen NAME prints one to paste)")  # fmt: skip
    if config.console is not None and not config.console.users:
        warnings.append("[console] has no [[console.users]]: nobody can sign in")
    for what, missing, why in (
        ("lock sense", [d.id for d in config.doors if d.sense is None],
         "'locked' is only the output read back, not the bolt"),
        ("position switch", [d.id for d in config.doors if d.position is None],
         "a propped-open door cannot be seen"),
    ):  # fmt: skip
        if missing:
            named = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            doors = f"{len(missing)} doors have" if len(missing) > 1 else "1 door has"
            warnings.append(f"{doors} no {what} ({named}): {why}")
    return warnings


def _check_security(config: Config) -> int:
    """Print what ``run`` would refuse: warnings in demo mode, errors (exit 78) elsewhere."""
    from gatewayd.app.daemon import start_problems
    from gatewayd.security.startup import EX_CONFIG

    # Demo mode skips the refusals; show them anyway, so nobody copies a demo into service.
    problems = start_problems(
        config.model_copy(update={"site": config.site.model_copy(update={"demo": False})})
    )
    print(
        f"security  {len(config.security.actors)} actors;"
        f" audit log {Path(config.state_dir) / config.security.audit_log}"
    )
    word = "WARNING " if config.site.demo else "ERROR   "
    for problem in problems:
        print(f"{word}  {problem}" + ("  (allowed in demo mode)" if config.site.demo else ""))
    return EX_CONFIG if problems and not config.site.demo else EXIT_OK


def summary(config: Config) -> str:
    """A short human description of a valid config."""
    lines = [
        f"{config.source}: OK",
        f"site      {config.site.id} ({config.site.name})"
        + ("  [DEMO MODE]" if config.site.demo else ""),
        f"mqtt      {config.mqtt.url} prefix {config.mqtt.prefix}/{config.site.id}",
    ]
    for building in config.buildings:
        doors = [d for d in config.doors if d.building == building.id]
        kinds = Counter(str(d.kind) for d in doors)
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        lines.append(f"building  {building.id:<6} {building.name}: {len(doors)} doors ({detail})")
    drivers = Counter(d.driver for d in config.devices)
    lines.append("devices   " + ", ".join(f"{n} x {name}" for name, n in sorted(drivers.items())))
    lines.append(
        f"doors     {len(config.doors)} in {len(config.zones)} zones;"
        f" {len(config.inputs)} alarm inputs"
    )
    if config.air_handlers:
        hazards = ", ".join(sorted(config.policy.shelter_air_hazards)) or "no hazard"
        lines.append(f"air       {len(config.air_handlers)} air handlers; SHELTER for {hazards}"
                     " stops their fans and closes outside air")  # fmt: skip
    return "\n".join(lines)


def _operate(args: argparse.Namespace) -> int:
    from gatewayd.app.opconfig import load_operator_config
    from gatewayd.kernel.command import Action
    from gatewayd.security.roles import least_role
    from gatewayd.security.signing import signed
    from gatewayd.uplink.client import request

    config = load_operator_config(args.config)
    params = _params(args)
    actor, key = _signer(args, config, str(least_role(Action(args.action), params)))
    body: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "ts": time.time(),
        "actor": actor,
        "action": args.action,
        "params": params,
    }
    if getattr(args, "scope", None) and args.action != "drill":
        body["scope"] = args.scope
    if getattr(args, "door", None):
        body["door"] = args.door
    body = signed(body, key, site=config.site.id)
    if args.print_only:
        # One line, valid for timestamp_window_s from now: paste it at once.
        print(json.dumps(body, separators=(",", ":")))
        return EXIT_OK
    reply = asyncio.run(request(_mqtt(config, args.mqtt), config.site.id, body, args.timeout))
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print(format_reply(reply))
    return EXIT_OK if reply.get("ok") else EXIT_REFUSED


def _signer(
    args: argparse.Namespace, config: OperatorConfig, role: str
) -> tuple[str, Ed25519PrivateKey]:
    """Who signs, and with which key: ``--key``, else the DEMO key of ``role`` in demo mode."""
    from gatewayd.security.keys import DEMO_ACTORS, KeyFileError, demo_private_key, load_private_key

    if args.key:
        return args.actor or Path(args.key).stem, load_private_key(args.key)
    actor = args.actor or f"demo-{role}"
    if config.site.demo and actor in DEMO_ACTORS:
        # Byte-identical to configs/demo-keys/<actor>.key, from any working folder.
        return actor, demo_private_key(actor)
    raise KeyFileError(
        "commands are signed: pass --key PATH (or set GATEWAYD_KEY) to your"
        " private key; `gatewayd keygen` makes one"
    )


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The command's ``params`` from the subcommand's options."""
    if args.action == "drill":
        params: dict[str, Any] = {
            "state": args.state,
            "scope": args.scope,
            "duration_s": args.duration,
            "dry_run": not args.live,
        }
        if args.hazard:
            params["hazard"] = args.hazard
        return params
    if getattr(args, "hazard", None):
        return {"hazard": args.hazard}
    if getattr(args, "duration", None) is not None:
        return {"duration_s": args.duration}
    if getattr(args, "momentary", False):
        return {"momentary": True}
    return {}


def format_reply(reply: dict[str, Any]) -> str:
    """One status line, then a table of doors that failed, for operators."""
    if not reply.get("ok") and not reply.get("doors"):
        return f"REFUSED  {reply.get('error')}: {reply.get('message')}"
    if reply.get("dry_run"):
        return f"DRILL    dry run {reply.get('scope')}: {reply.get('message')}"
    doors = reply.get("doors", {})
    lat = reply.get("latency_ms") or {}
    head = "OK      " if reply.get("ok") else "PARTIAL "
    lines = [f"{head} {reply.get('action')} {reply.get('scope')}: {reply.get('message')}"]
    timings = [f"{name} {lat[key]} ms" for key, name in (("on_wire", "on the wire"),
               ("confirmed", "confirmed")) if lat.get(key) is not None]  # fmt: skip
    if timings:
        lines.append("         " + ", ".join(timings))
    failed = doors.get("failed") or {}
    if failed:
        lines.append(f"{'DOOR':<12} PROBLEM")
        lines += [f"{door:<12} {why}" for door, why in failed.items()]
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    from gatewayd.app.opconfig import load_operator_config
    from gatewayd.uplink.client import snapshot

    config = load_operator_config(args.config)
    mqtt = _mqtt(config, args.mqtt)
    retained = asyncio.run(snapshot(mqtt, config.site.id, 2.0))
    if args.json:
        print(json.dumps(retained, indent=2, sort_keys=True))
    else:
        print(format_status(retained, show_all=args.all))
    if retained.get("availability") != "online":
        where = f"{mqtt.url}, {mqtt.prefix}/{config.site.id}"
        said = retained.get("availability")
        print(f"gatewayd: the gateway is {said or 'unknown: nothing retained'} on {where}"
              + ("" if said else " (is this its broker? --mqtt URL names another)"),
              file=sys.stderr)  # fmt: skip
        return EXIT_REFUSED
    return EXIT_OK


def _needs_attention(door: dict[str, Any]) -> bool:
    """A fault, a lock that did not confirm, or a door told to lock that is not secured.

    The last is a propped door: its bolt threw, so the lock confirms, but it stands open.
    """
    return bool(
        door.get("fault")
        or not door.get("confirmed")
        or (door.get("commanded") == "locked" and door.get("status") != "secured")
    )


def format_status(retained: dict[str, Any], *, show_all: bool = False) -> str:
    lines = [f"gateway   {retained.get('availability', 'unknown (no retained availability)')}"]
    lines.append(f"{'SCOPE':<16} {'STATE':<10} {'SOURCE':<14} SECURED  UNSECURED  FAULTED  UNKNOWN")
    states = [(t, s) for t, s in retained.items() if t.startswith("state/") and isinstance(s, dict)]
    # Campus first, then buildings, then zones, as an operator reads a site.
    order = {"campus": 0, "building": 1, "zone": 2}
    states.sort(key=lambda ts: (order.get(ts[0].split("/")[1], 3), ts[0]))
    for topic, state in states:
        counts = state.get("doors", {})
        lines.append(
            f"{state.get('scope', topic[6:]):<16} {state.get('state', '?'):<10}"
            f" {state.get('source') or '-':<14} {counts.get('secured', 0):>7}"
            f"  {counts.get('unsecured', 0):>9}  {counts.get('faulted', 0):>7}"
            f"  {counts.get('unknown', 0):>7}" + ("  DRILL" if state.get("drill") else "")
        )
    doors = [
        v for k, v in sorted(retained.items()) if k.startswith("door/") and isinstance(v, dict)
    ]
    shown = [d for d in doors if show_all or _needs_attention(d)]
    if shown:
        lines.append("")
        lines.append(f"{'DOOR':<10} {'COMMANDED':<10} {'LOCKED':<7} {'POSITION':<8} REASON / FAULT")
        for d in shown:
            lines.append(
                f"{d.get('door', '?'):<10} {d.get('commanded') or '-':<10}"
                f" {_yes_no(d.get('locked')):<7} {d.get('position') or '?':<8}"
                f" {d.get('reason', '')}{'  ! ' + d['fault'] if d.get('fault') else ''}"
            )
    return "\n".join(lines)


def _yes_no(value: object) -> str:
    """A read-back for people: yes, no, or ? when the board has not said."""
    return "yes" if value is True else "no" if value is False else "?"


def _host_port(text: str) -> tuple[str, int]:
    # Loaded only when --control is given: the simulators are the demo's, not the daemon's.
    from gatewayd.simulators.control import host_port

    return host_port(text)


def _log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        default="auto",
        help="console lines for people, JSON for journald and log shippers"
        " (auto: console on a terminal, JSON otherwise)",
    )
    # Kept for the unit files and scripts that say it.
    p.add_argument("--log-json", action="store_const", const="json", dest="log_format",
                   help=argparse.SUPPRESS)  # fmt: skip


def _json_logs(args: argparse.Namespace) -> bool | None:
    return {"json": True, "console": False}.get(args.log_format)


def _demo(args: argparse.Namespace) -> int:
    from gatewayd.app.demo import run_demo
    from gatewayd.app.logs import configure

    configure(args.log_level, json=_json_logs(args))
    return run_demo(args.config, args.mqtt, control=args.control, state_dir=args.state_dir)


def _keygen(args: argparse.Namespace) -> int:
    from gatewayd.security.keys import config_snippet, keygen

    files = keygen(args.out, args.actor)
    print(f"wrote {files.private} (private: keep it secret) and {files.public}", file=sys.stderr)
    print(config_snippet(args.actor, files.public_key, args.role or ["operator"]), end="")
    return EXIT_OK


def _audit_verify(args: argparse.Namespace) -> int:
    from gatewayd.security.anchor import check_heads, public_key_of, read_heads
    from gatewayd.security.audit import verify
    from gatewayd.service.config import load_config

    if args.file is not None:
        path = Path(args.file)
        index = path.parent / "journal.sqlite"
    else:
        config = load_config(args.config or DEFAULT_CONFIG)
        path = Path(config.state_dir) / config.security.audit_log
        index = Path(config.state_dir) / config.security.journal_index
    # A used state directory (its index exists) with an empty log and no head was emptied.
    result = verify(path, expect_records=index.exists())
    print(f"{path}: {result}")
    ok = result.ok
    if args.heads is not None:
        try:
            heads = read_heads(Path(args.heads))
        except (OSError, ValueError) as exc:
            print(f"{args.heads}: cannot read published heads: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        checked = check_heads(path, heads, key=public_key_of(path.parent))
        for problem in checked.problems:
            print(f"FAIL {problem}")
        print(f"{args.heads}: {checked.checked} published heads checked,"
              f" {len(checked.problems)} problems")  # fmt: skip
        ok = ok and checked.ok and checked.checked > 0
    return EXIT_OK if ok else EXIT_REFUSED


if __name__ == "__main__":
    raise SystemExit(main())
