"""The worker agent: runs on a provider's machine, detects it, registers and heartbeats."""
