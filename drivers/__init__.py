"""Built-in device drivers, one package per protocol (registered via entry points)."""
