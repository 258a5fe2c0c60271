"""Batch inference with Ray Data on a rented idlegrid cluster.

Trains a tiny PyTorch MLP on a synthetic "two moons" set in the driver, puts its
weights in the object store once, and scores a held-out set with `map_batches`:
a pool of replicas of a callable class, each loading the model once, spread
over the cluster's nodes. Prints the accuracy and the nodes that did the work.

Run it:
    idlegrid jobs submit CLUSTER -- python examples/batch_inference.py
or with plain Ray (from the repository root):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... ray job submit --address http://HEAD:DASHBOARD_PORT \
        --working-dir examples -- python batch_inference.py
"""

import argparse
import json
import time
from collections import Counter

import numpy as np
import ray
import torch
from torch import nn


def two_moons(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles with noise: not separable by a straight line."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0, np.pi, n)
    x = np.where(labels == 0, np.cos(angle), 1 - np.cos(angle))
    y = np.where(labels == 0, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + rng.normal(0, 0.1, (n, 2))
    return points.astype(np.float32), labels


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))


def train(points: np.ndarray, labels: np.ndarray, steps: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    inputs, targets = torch.from_numpy(points), torch.from_numpy(labels)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model.state_dict()


class MoonsClassifier:
    """One replica: loads the model once, then scores batch after batch."""

    def __init__(self, weights_ref: list[ray.ObjectRef]) -> None:
        torch.set_num_threads(1)  # one CPU per replica, as reserved below
        self.model = make_model()
        self.model.load_state_dict(ray.get(weights_ref[0]))  # in a list: Ray passes it as is
        self.model.eval()
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            predicted = self.model(torch.tensor(batch["features"])).argmax(dim=1).numpy()
        return {
            "correct": (predicted == batch["label"]).astype(np.int64),
            "node_id": np.full(len(predicted), self.node_id),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000, help="rows to score")
    parser.add_argument("--replicas", type=int, default=2, help="model replicas (1 CPU each)")
    args = parser.parse_args()

    started = time.monotonic()
    ray.init()
    weights = train(*two_moons(1000, seed=1), steps=300)
    points, labels = two_moons(args.rows, seed=2)  # held out: another seed
    # Score only once every replica has loaded the model, so the work is shared among all.
    ray.data.DataContext.get_current().wait_for_min_actors_s = 120
    rows = [{"features": p, "label": int(y)} for p, y in zip(points, labels, strict=True)]
    scored = ray.data.from_items(rows, override_num_blocks=8).map_batches(
        MoonsClassifier,
        fn_constructor_kwargs={"weights_ref": [ray.put(weights)]},
        batch_size=500,
        compute=ray.data.ActorPoolStrategy(size=args.replicas),
        num_cpus=1,  # Ray Data spreads the replicas over the nodes by default
    )
    results = scored.take_all()
    accuracy = sum(r["correct"] for r in results) / len(results)
    rows_per_node = Counter(str(r["node_id"]) for r in results)
    print(f"scored {len(results)} rows on {len(rows_per_node)} node(s): accuracy {accuracy:.3f}")
    result = {
        "rows": len(results),
        "accuracy": accuracy,
        "node_ids": sorted(rows_per_node),
        "rows_per_node": rows_per_node,
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
