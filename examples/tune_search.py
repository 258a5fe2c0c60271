"""A hyperparameter search with Ray Tune on a rented idlegrid cluster.

Tries every pair of learning rate and hidden-layer width (a grid of 6 trials) for
a tiny numpy MLP on a synthetic XOR-like set, trials running side by side on the
cluster's CPUs. The ASHA scheduler stops trials early when they lag behind the
others. Prints each trial's last score and the best configuration.

Run it:
    idlegrid jobs submit CLUSTER -- python examples/tune_search.py
or with plain Ray (from the repository root):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... ray job submit --address http://HEAD:DASHBOARD_PORT \
        --working-dir examples -- python tune_search.py
"""

import argparse
import json
import tempfile
import time

import numpy as np
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

ITERATIONS, STEPS_PER_ITERATION = 30, 20


def xor_blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points around the four corners of a square; opposite corners share a label."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 2, (n, 2))
    points = corners * 2.0 - 1.0 + rng.normal(0, 0.4, (n, 2))
    return points, (corners[:, 0] ^ corners[:, 1]).astype(np.float64)


def train_mlp(config: dict) -> None:
    """One trial: full-batch gradient descent on a tanh MLP, reporting after each round."""
    x, y = xor_blobs(800, seed=1)
    val_x, val_y = xor_blobs(400, seed=2)
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1, (2, config["hidden"]))
    b1 = np.zeros(config["hidden"])
    w2 = rng.normal(0, 1 / np.sqrt(config["hidden"]), config["hidden"])
    b2 = 0.0

    def forward(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden = np.tanh(inputs @ w1 + b1)
        return hidden, 1 / (1 + np.exp(-(hidden @ w2 + b2)))

    for _ in range(ITERATIONS):
        for _ in range(STEPS_PER_ITERATION):
            hidden, p = forward(x)
            grad_out = (p - y) / len(y)  # cross-entropy through the sigmoid
            grad_hidden = np.outer(grad_out, w2) * (1 - hidden**2)
            w2 -= config["lr"] * hidden.T @ grad_out
            b2 -= config["lr"] * grad_out.sum()
            w1 -= config["lr"] * x.T @ grad_hidden
            b1 -= config["lr"] * grad_hidden.sum(axis=0)
        _, p = forward(val_x)
        p = np.clip(p, 1e-7, 1 - 1e-7)
        val_loss = -np.mean(val_y * np.log(p) + (1 - val_y) * np.log(1 - p))
        accuracy = np.mean((p > 0.5) == val_y)
        tune.report({"val_loss": float(val_loss), "val_accuracy": float(accuracy)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()

    started = time.monotonic()
    ray.init()
    with tempfile.TemporaryDirectory(prefix="tune-") as storage:  # results stay in memory
        tuner = tune.Tuner(
            train_mlp,
            param_space={
                "lr": tune.grid_search([0.03, 0.3, 3.0]),
                "hidden": tune.grid_search([2, 16]),
            },
            tune_config=tune.TuneConfig(
                metric="val_loss",
                mode="min",
                scheduler=ASHAScheduler(max_t=ITERATIONS, grace_period=5, reduction_factor=3),
            ),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        results = tuner.fit()
    trials = [
        {
            "config": r.config,
            "val_loss": r.metrics["val_loss"],
            "val_accuracy": r.metrics["val_accuracy"],
            "iterations": r.metrics["training_iteration"],
        }
        for r in results
    ]
    for t in sorted(trials, key=lambda t: t["val_loss"]):
        print(f"{t['config']}: val_loss {t['val_loss']:.4f} after {t['iterations']} rounds")
    best = results.get_best_result()
    print(f"best: {best.config} with val_loss {best.metrics['val_loss']:.4f}")
    summary = {
        "trials": trials,
        "errors": results.num_errors,
        "best_config": best.config,
        "best_val_loss": best.metrics["val_loss"],
        "best_val_accuracy": best.metrics["val_accuracy"],
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
