"""Jobs that exhaust their node's limits, each printing what it met as a RESULT line:
``python limits_job.py`` fills its work directory; ``… hog`` runs a task that eats
memory past the node's cap; ``… forks`` forks without bound. The kernel stops the
last two inside the node: perhaps the task, perhaps the node's own processes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys

import ray

MB = 1 << 20


def fill() -> dict[str, object]:
    path, written = os.path.join(os.path.expanduser("~"), "fill"), 0
    chunk = b"\0" * MB
    try:
        with open(path, "wb") as f:
            while written < 8192:
                f.write(chunk)
                f.flush()
                written += 1
    except OSError as exc:
        return {"mb": written, "errno": errno.errorcode.get(exc.errno or 0, str(exc))}
    finally:
        os.unlink(path)
    return {"mb": written, "errno": None}


def forks() -> dict[str, object]:
    """A shell that forks `sleep`s until it cannot (a small process: a Python parent
    would copy its pages on every fork and meet the memory cap first)."""
    bomb = subprocess.Popen(
        ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do sleep 120 & i=$((i+1)); done"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out, _ = bomb.communicate(timeout=180)
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                count += f.read() == b"sleep\0120\0"
        except OSError:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(bomb.pid, signal.SIGKILL)
    text = out.decode(errors="replace")
    return {"count": count, "error": "fork failed" if "fork" in text.lower() else text[-200:]}


@ray.remote(num_cpus=1, max_retries=0)
def hog() -> int:
    held, mb = [], 0
    while mb < 16_384:
        held.append(bytearray(64 * MB))  # zero-filled: every page is touched
        mb += 64
    return mb


def main() -> None:
    ray.init()
    if sys.argv[1:] == ["hog"]:
        print("RESULT " + json.dumps({"hog_mb": ray.get(hog.remote())}), flush=True)
    elif sys.argv[1:] == ["forks"]:  # may starve the node's own processes too
        print("RESULT " + json.dumps({"forks": forks()}), flush=True)
    else:
        print("RESULT " + json.dumps({"fill": fill()}), flush=True)


if __name__ == "__main__":
    main()
