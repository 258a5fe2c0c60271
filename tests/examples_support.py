"""Run the buyer examples in `examples/` as Ray jobs, as a buyer would.

The tests depend only on `RayEndpoint`: how the cluster came to be (a bare
an idlegrid deployment, or a bare `ray start`) is the fixture's business.
Every example ends with one line `RESULT <json>`; `parse_result` reads it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
POLL_INTERVAL_S = 1.0
STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class RayEndpoint:
    """What a buyer gets for a rented cluster: where it is and the token to reach it."""

    gcs_address: str  # host:port, for `ray.init(address=...)`
    dashboard_url: str  # http://host:port, for the Jobs API
    token: str
    node_ids: tuple[str, ...] | None = None  # hex Ray node ids, where the provider knows them


class ResultLineMissing(Exception):
    """The job's logs hold no `RESULT <json>` line, or more than one."""

    def __init__(self, found: int, logs_tail: str) -> None:
        super().__init__(f"expected exactly one RESULT line, found {found}; logs end:\n{logs_tail}")
        self.found = found
        self.logs_tail = logs_tail


def run_job(
    endpoint: RayEndpoint,
    script: str,
    args: list[str] | None = None,
    timeout_s: float = 180.0,
) -> tuple[str, str]:
    """Submit `python <script> <args>` with `examples/` as the working dir, wait, and
    return (final status name, logs). A job still running at `timeout_s` is stopped
    and reported with the status it ends in."""
    import shlex

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(
        endpoint.dashboard_url, headers={"Authorization": f"Bearer {endpoint.token}"}
    )
    entrypoint = shlex.join(["python", script, *(args or [])])
    job_id = client.submit_job(
        entrypoint=entrypoint, runtime_env={"working_dir": str(EXAMPLES_DIR)}
    )
    status = _wait_for_end(client, job_id, timeout_s)
    if status not in TERMINAL_STATUSES:
        client.stop_job(job_id)
        status = _wait_for_end(client, job_id, STOP_GRACE_S)
    return status, client.get_job_logs(job_id)


def _wait_for_end(client: Any, job_id: str, timeout_s: float) -> str:
    """Poll until the job ends or `timeout_s` passes; the last status seen."""
    deadline = time.monotonic() + timeout_s
    status: str = client.get_job_status(job_id).value
    while status not in TERMINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        status = client.get_job_status(job_id).value
    return status


def parse_result(logs: str) -> dict[str, Any]:
    """The JSON object on the single `RESULT ` line of an example's output."""
    lines = [line for line in logs.splitlines() if line.startswith("RESULT ")]
    if len(lines) != 1:
        raise ResultLineMissing(len(lines), logs[-3000:])
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    return result
