"""A job for the overlay's end-to-end test: work on every node, data moved between them.

Each round, every node makes a block of data and every other node reads it (Ray's
object manager moves it across the overlay); the job prints one RESULT line with
the nodes' addresses and the bytes moved. Its arguments, ROUNDS and PAUSE_S, make
it last long enough for a NAT to rebind beneath it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import ray

BLOCK = 2 * 1024 * 1024  # bytes per node per round


@ray.remote(num_cpus=0)
def make(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, BLOCK, dtype=np.uint8)


@ray.remote(num_cpus=0)
def read(*blocks: np.ndarray) -> tuple[str, int]:
    return ray.util.get_node_ip_address(), int(sum(int(b[::4096].sum()) for b in blocks))


def main() -> None:
    ray.init()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    devices = [next(k for k in n["Resources"] if k.startswith("device:")) for n in nodes]
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    moved, seen = 0, set()
    for r in range(rounds):
        blocks = {
            d: make.options(resources={d: 0.01}).remote(r * 100 + i) for i, d in enumerate(devices)
        }
        readers = [
            read.options(resources={d: 0.01}).remote(
                *[b for other, b in blocks.items() if other != d]
            )
            for d in devices
        ]
        for ip, _ in ray.get(readers, timeout=120):
            seen.add(ip)
        moved += BLOCK * len(devices) * (len(devices) - 1)
        print(f"round {r + 1}/{rounds} done", flush=True)
        time.sleep(pause)
    report = {"nodes": len(nodes), "addresses": sorted(seen), "moved": moved}
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
