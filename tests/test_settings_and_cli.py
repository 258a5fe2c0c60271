"""Settings sources and validation; CLI error reporting; the SDK's error mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from idlegrid.cli.main import app
from idlegrid.errors import (
    IdlegridError,
    InvalidRequest,
    NotFound,
    ReplayedRequest,
    error_from_body,
)
from idlegrid.server.settings import ServerSettings


def test_defaults_derive_ttl_ticks_and_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDLEGRID_CONFIG", raising=False)
    s = ServerSettings(heartbeat_interval_s=2, data_dir=Path("/tmp/x"))
    assert s.heartbeat_ttl_s == 5 and s.flush_interval_s == 0.5 and s.reaper_interval_s == 0.25
    assert s.database_url == "sqlite:////tmp/x/idlegrid.db"


def test_environment_beats_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "idlegrid.toml"
    config.write_text("port = 9000\nheartbeat_interval_s = 30\n")
    monkeypatch.setenv("IDLEGRID_CONFIG", str(config))
    monkeypatch.setenv("IDLEGRID_PORT", "9100")
    s = ServerSettings()
    assert (s.port, s.heartbeat_interval_s) == (9100, 30)


def test_production_refuses_sqlite_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="PostgreSQL"):
        ServerSettings(environment="production")
    with pytest.raises(ValidationError):
        ServerSettings(heartbeat_interval_s=10, heartbeat_ttl_s=5)
    with pytest.raises(ValidationError):
        ServerSettings(port=0)


def test_error_bodies_become_the_same_classes() -> None:
    err = error_from_body(401, {"code": "replayed_request", "message": "m", "details": {"n": 1}})
    assert isinstance(err, ReplayedRequest) and err.details == {"n": 1}
    assert isinstance(error_from_body(404, {"code": "something_new"}), NotFound)
    assert isinstance(error_from_body(422, {"code": "invalid_request"}), InvalidRequest)
    assert type(error_from_body(502, "<html>bad gateway</html>")) is IdlegridError


def test_cli_reports_an_unreachable_server_without_a_traceback() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["devices", "list", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "transport_error" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["devices", "show", "x", "--json", "--server", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert json.loads(result.output)["code"] == "transport_error"


def test_cli_refuses_a_readable_owner_keypair(tmp_path: Path) -> None:
    key = tmp_path / "owner.json"
    key.write_text(json.dumps(list(range(64))))
    key.chmod(0o644)
    result = CliRunner().invoke(app, ["devices", "pause", "x", "--keypair", str(key)])
    assert result.exit_code == 2 and "chmod 600" in result.output


def test_worker_refuses_a_bad_hardware_file(tmp_path: Path) -> None:
    hw = tmp_path / "hw.json"
    hw.write_text('{"kind": "gpu"}')
    result = CliRunner().invoke(
        app,
        [
            "worker",
            "start",
            "--keypair",
            str(tmp_path / "k.json"),
            "--hardware-file",
            str(hw),
            "--server",
            "http://127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2 and "validation error" in result.output


def test_worker_without_its_sandbox_says_so_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine whose sandbox tools are missing hears it at `worker start`, with the
    fix, before anything registers (the server here is unreachable: never dialled)."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no pasta
    args = ["worker", "start", "--keypair", str(tmp_path / "k.json"),
            "--server", "http://127.0.0.1:9"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "apt-get install bubblewrap passt" in result.output and "--no-sandbox" in result.output
    assert "Traceback" not in result.output


def test_worker_refuses_a_bad_peer_network(tmp_path: Path) -> None:
    for bad in ("10.0.0.0/33", "not-a-network", "198.18.0.0/24\x00"):
        args = ["worker", "start", "--keypair", str(tmp_path / "k.json"),
                "--ray-peer-network", bad, "--server", "http://127.0.0.1:9"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "--ray-peer-network" in result.output, bad
        assert "Traceback" not in result.output


def test_catalog_command_lists_models_as_json() -> None:
    result = CliRunner().invoke(app, ["catalog", "--kind", "gpu", "--json"])
    assert result.exit_code == 0
    models = {m["key"]: m for m in json.loads(result.output)}
    assert models["h100-sxm-80gb"]["multiplier"] == 10
    assert all(m["kind"] == "gpu" for m in models.values())


def test_wallet_new_creates_a_private_keypair(tmp_path: Path) -> None:
    key = tmp_path / "me.json"
    result = CliRunner().invoke(app, ["wallet", "new", "--keypair", str(key), "--json"])
    assert result.exit_code == 0
    made = json.loads(result.output)
    assert made["created"] and key.stat().st_mode & 0o777 == 0o600
    again = json.loads(
        CliRunner().invoke(app, ["wallet", "new", "--keypair", str(key), "--json"]).output
    )
    assert again == {**made, "created": False}
