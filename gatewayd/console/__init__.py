"""The operator console: a local web page for staff and responders, served by the daemon.

Only the config model is imported here: ``gatewayd.config`` embeds it, and the server
(``gatewayd.console.server.Console``) imports the command path, which imports the config.
"""

from gatewayd.console.config import ConsoleConfig, ConsoleUser

__all__ = ["ConsoleConfig", "ConsoleUser"]
