"""Data-parallel training with Ray Train's TorchTrainer on a rented idlegrid cluster.

Each worker trains the same small MLP on its own shard of a synthetic regression
set; PyTorch DDP averages the gradients, so all workers hold the same model. The
workers are spread over the cluster's nodes. Prints the loss after each epoch
(averaged over the workers) and the nodes the workers ran on.

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
        with tempfile.TemporaryDirectory() as out:
            checkpoint = None
            if last and rank == 0:  # the model is the same on every worker: save it once
                torch.save(net.state_dict(), f"{out}/model.pt")
                checkpoint = ray.train.Checkpoint.from_directory(out)
            # Ray Train keeps the metrics that come with a checkpoint: the Result shows them.
            ray.train.report(metrics, checkpoint=checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="training workers (1 CPU each)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--storage-path",
        default=tempfile.mkdtemp(prefix="train-"),
        help="where the checkpoint goes; shared storage (s3://..., NFS) on multi-host clusters",
    )
    args = parser.parse_args()

    started = time.monotonic()
    ray.init()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"lr": 0.01, "epochs": args.epochs, "batch_size": 64},
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.workers, use_gpu=False, placement_strategy="SPREAD"
        ),
        run_config=ray.train.RunConfig(storage_path=args.storage_path),
    )
    result = trainer.fit()
    losses = result.metrics["losses"]
    for epoch, loss in enumerate(losses):
        print(f"epoch {epoch}: loss {loss:.4f}")
    print(f"workers ran on {len(set(result.metrics['nodes']))} node(s)")
    summary = {
        "workers": args.workers,
        "losses": losses,
        "final_loss": losses[-1],
        "node_ids": result.metrics["nodes"],
        "checkpoint": result.checkpoint.path,
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
