"""idlegrid: an open network that rents out idle GPUs and CPUs as Ray clusters."""

__version__ = "0.1.0"
