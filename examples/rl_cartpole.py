"""Reinforcement learning with RLlib on a rented idlegrid cluster.

Trains a PPO agent on Gymnasium's CartPole-v1 for a few iterations with small
settings: one remote env runner (an actor somewhere on the cluster) collects
episodes, and the learner updates the policy in the driver. Prints the mean
episode return after each iteration; it climbs as the pole stays up longer.

Run it:
    idlegrid jobs submit CLUSTER -- python examples/rl_cartpole.py --iterations 3
or with plain Ray (from the repository root):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... ray job submit --address http://HEAD:DASHBOARD_PORT \
        --working-dir examples -- python rl_cartpole.py
"""

import argparse
import json
import math
import time

import ray
from ray.rllib.algorithms.ppo import PPOConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--env-runners", type=int, default=1, help="actors collecting episodes")
    args = parser.parse_args()

    started = time.monotonic()
    ray.init()
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=args.env_runners, num_envs_per_env_runner=1)
        .training(
            train_batch_size_per_learner=1000,
            minibatch_size=250,
            num_epochs=4,
            lr=0.0003,
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    returns: list[float | None] = []
    for iteration in range(args.iterations):
        stats = algo.train()["env_runners"]
        mean_return = stats.get("episode_return_mean", math.nan)
        # No episode may end in an iteration: JSON has no NaN, so that becomes null.
        returns.append(None if math.isnan(mean_return) else mean_return)
        print(f"iteration {iteration}: episode return mean {mean_return:.1f}")
    algo.stop()
    summary = {
        "iterations": args.iterations,
        "episode_return_mean": returns,
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
