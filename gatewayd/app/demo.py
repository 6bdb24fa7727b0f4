"""``gatewayd demo``: the demo campus with simulated boards, a private broker and the daemon."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from gatewayd.app.daemon import serve
from gatewayd.console.config import demo_console_config, demo_signins_text
from gatewayd.console.server import Console
from gatewayd.kernel.errors import ConfigError
from gatewayd.service.config import Config, load_config, with_state_dir
from gatewayd.service.gateway import Gateway
from gatewayd.simulators.broker import Mosquitto

DEMO_FILE = "configs/demo-campus.toml"


def demo_config_path() -> Path:
    """The demo campus shipped in the repository (found from here or the working folder)."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = base / DEMO_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(DEMO_FILE, ["the demo campus file was not found; pass -c FILE"])


def run_demo(
    config_path: str | None,
    mqtt_url: str | None,
    *,
    control: tuple[str, int] | None = None,
    state_dir: str | None = None,
) -> int:
    """The demo; ``control`` serves the simulators' control interface, ``state_dir`` keeps
    the gateway's state there instead of in a temporary folder removed at exit."""
    path = Path(config_path) if config_path else demo_config_path()
    kept = Path(state_dir) if state_dir else None
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(path, mqtt_url, control, kept))


async def _demo(
    path: Path, mqtt_url: str | None, control: tuple[str, int] | None, kept: Path | None
) -> int:
    # Imported here: the core never needs the simulators, only the demo does.
    from gatewayd.simulators.campus import CampusSim
    from gatewayd.simulators.control import ControlServer

    config = load_config(path)
    async with AsyncExitStack() as stack:
        if kept is not None:
            state_dir = str(kept)
        else:
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewayd-demo-"))
        sim = CampusSim(config, free_ports=True)
        await stack.enter_async_context(sim)
        control_at: str | None = None
        if control is not None:
            server = ControlServer(sim, host=control[0], port=control[1])
            await stack.enter_async_context(server)
            control_at = f"{server.host}:{server.port}"
        if mqtt_url is None:
            broker = await stack.enter_async_context(Mosquitto())
            mqtt_url = broker.url
        running = with_state_dir(sim.config(), Path(state_dir)).model_copy(
            update={
                "mqtt": config.mqtt.model_copy(update={"url": mqtt_url}),
            }
        )
        # Hashing the demo passwords takes a moment: before the gateway runs, not in it.
        console_config = demo_console_config()
        async with asyncio.TaskGroup() as group:
            consoles: list[asyncio.Task[None]] = []

            def ready(gw: Gateway) -> None:
                console = Console(gw, console_config, demo=True)
                consoles.append(
                    group.create_task(
                        console.run(
                            lambda: print_welcome(
                                gw,
                                path,
                                running,
                                sim.ports,
                                console_url=console.url,
                                control_at=control_at,
                            )
                        ),
                        name="console",
                    )
                )

            code = await serve(running, ready)
            for task in consoles:
                task.cancel()
        return code
    return 0


def print_welcome(
    gateway: Gateway,
    path: Path,
    config: Config,
    ports: dict[str, int],
    *,
    console_url: str | None = None,
    control_at: str | None = None,
) -> None:
    """Tell a newcomer what is running and what to type next."""
    mqtt = config.mqtt
    exe = shutil.which("gatewayd") or f"{shlex.quote(sys.executable)} -m gatewayd"
    opts = f"-c {shlex.quote(str(path))} --mqtt {mqtt.url}"
    topic = f"{mqtt.prefix}/{config.site.id}"
    devices = ", ".join(f"{dev}:{port}" for dev, port in ports.items())
    control = (
        f"\n  control   simulators' control interface on {control_at} (docs/simulators.md)"
        if control_at
        else ""
    )
    report_opts = f"-c {shlex.quote(str(path))} --state-dir {shlex.quote(config.state_dir)}"
    # One line that lets every command below (and `audit verify`) run without flags.
    env = (
        f"export GATEWAYD_CONFIG={shlex.quote(str(path))} GATEWAYD_MQTT={mqtt.url}"
        f" GATEWAYD_STATE_DIR={shlex.quote(config.state_dir)}"
    )
    print(
        f"""
gatewayd demo: {config.site.name}, {len(gateway.campus.doors)} doors.
Simulated devices on 127.0.0.1 (relay boards, BACnet controller, cameras, PSAP radio):
{devices}; broker {mqtt.url}.

  watch     mosquitto_sub -h {mqtt.host} -p {mqtt.port} -V mqttv5 -v -t '{topic}/#'
  lockdown  {exe} lockdown {opts} --scope building/A
  release   {exe} release {opts} --scope building/A
  one door  {exe} lock {opts} --door C-101
  status    {exe} status {opts}
  audit     {exe} audit verify --file {shlex.quote(str(Path(config.state_dir) / "audit.log"))}
  report    {exe} report {report_opts} --last   (HTML + PDF in reports/; --responder-pack)
  CAP       mosquitto_sub -h {mqtt.host} -p {mqtt.port} -V mqttv5 -t '{topic}/cap'
  state     {config.state_dir}{control}

  or, in another shell:  {env}
  then:     {exe} status; {exe} lockdown --scope building/A; {exe} audit verify
{demo_signins_text(console_url)}

Ctrl-C stops the daemon, the simulators and the broker.
""",
        flush=True,
    )
