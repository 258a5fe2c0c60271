"""The ``idlegrid`` command line: Typer + Rich, thin over the SDK."""
