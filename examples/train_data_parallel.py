"""Data-parallel training with Ray Train's TorchTrainer on a rented idlegrid cluster.

Each worker trains the same small MLP on its own shard of a synthetic regression
set; PyTorch DDP averages the gradients, so all workers hold the same model. The
workers are spread over the cluster's nodes. Prints the loss after each epoch
(averaged over the workers) and the nodes the workers ran on.

The trained weights and the metrics come back to the driver through Ray's object
store (a small actor): a rented cluster's nodes are separate machines with no shared
filesystem, which Ray Train's checkpoints would need (pass ``--storage-path`` with a
bucket or NFS path to checkpoint there as well).

Run it:
    idlegrid jobs submit CLUSTER -- python examples/train_data_parallel.py --workers 2
or with plain Ray (from the repository root):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... ray job submit --address http://HEAD:DASHBOARD_PORT \
        --working-dir examples -- python train_data_parallel.py
"""

import argparse
import json
import tempfile
import time

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train.torch import TorchTrainer, prepare_model
from torch import nn

ROWS, FEATURES = 4096, 8


def train_loop(config: dict) -> None:
    """Runs on every worker; rank and world size come from Ray Train."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(0)  # same data and initial weights everywhere; DDP keeps them in step
    inputs = torch.randn(ROWS, FEATURES)
    targets = torch.sin(inputs[:, :1]) + 0.5 * inputs[:, 1:2] ** 2 + 0.05 * torch.randn(ROWS, 1)
    shard_x, shard_y = inputs[rank::world], targets[rank::world]
    net = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 1))
    model = prepare_model(net)  # wrapped in DDP when there is more than one worker
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    node_ids: list[str] = [""] * world
    dist.all_gather_object(node_ids, ray.get_runtime_context().get_node_id())
    losses: list[float] = []
    for epoch in range(config["epochs"]):
        epoch_loss = torch.zeros(1)
        for start in range(0, len(shard_x), config["batch_size"]):
            batch = slice(start, start + config["batch_size"])
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(shard_x[batch]), shard_y[batch])
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach() * len(shard_x[batch])
        dist.all_reduce(epoch_loss)  # sum over workers, then the mean over all rows
        losses.append(epoch_loss.item() / ROWS)
        metrics = {"epoch": epoch, "loss": losses[-1], "losses": losses, "nodes": node_ids}
        last = epoch == config["epochs"] - 1
        if last and rank == 0:  # the model is the same on every worker: send it once
            weights = {k: v.clone() for k, v in net.state_dict().items()}
            ray.get(config["results"].put.remote({**metrics, "weights": weights}))
        with tempfile.TemporaryDirectory() as out:
            checkpoint = None
            if last and rank == 0 and config["storage_path"]:  # shared storage: checkpoint
                torch.save(net.state_dict(), f"{out}/model.pt")
                checkpoint = ray.train.Checkpoint.from_directory(out)
            ray.train.report(metrics, checkpoint=checkpoint)


@ray.remote(num_cpus=0)
class Results:
    """Where rank 0 leaves the trained weights and metrics for the driver."""

    def __init__(self) -> None:
        self.value: dict | None = None

    def put(self, value: dict) -> None:
        self.value = value

    def get(self) -> dict | None:
        return self.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="training workers (1 CPU each)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--storage-path",
        default=None,
        help="also checkpoint here: shared storage (s3://..., NFS) that every node reaches",
    )
    args = parser.parse_args()

    started = time.monotonic()
    ray.init()
    results = Results.remote()
    config = {"lr": 0.01, "epochs": args.epochs, "batch_size": 64}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={**config, "results": results, "storage_path": args.storage_path},
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.workers, use_gpu=False, placement_strategy="SPREAD"
        ),
        run_config=ray.train.RunConfig(
            storage_path=args.storage_path or tempfile.mkdtemp(prefix="train-")
        ),
    )
    result = trainer.fit()
    trained = ray.get(results.get.remote())
    losses = trained["losses"]
    for epoch, loss in enumerate(losses):
        print(f"epoch {epoch}: loss {loss:.4f}")
    print(f"workers ran on {len(set(trained['nodes']))} node(s)")
    summary = {
        "workers": args.workers,
        "losses": losses,
        "final_loss": losses[-1],
        "node_ids": trained["nodes"],
        "parameters": sum(w.numel() for w in trained["weights"].values()),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
