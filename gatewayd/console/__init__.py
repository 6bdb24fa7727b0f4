"""The operator console: a local web page for staff and responders, served by the daemon.

Nothing is imported here: ``gatewayd console-passwd`` reaches ``console.passwords`` (the
standard library only) through this package on every command's argument parsing, and the
config model (``console.config``) and the server (``console.server``) are imported by name
where they are used.
"""
