"""The package's version, in a module of its own at the bottom of the import graph.

Everything that reports the version (the server, the agent, the explorer, the CLI)
imports it from here, not from ``idlegrid`` itself: the package's ``__init__`` offers
``idlegrid.Client``, the SDK's, and the server and the agent do not reach up to it.
"""

__version__ = "0.1.0"
