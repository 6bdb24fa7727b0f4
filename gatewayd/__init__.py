"""gatewayd: edge gateway daemon for campus physical security hardware."""

__version__ = "0.1.0"
