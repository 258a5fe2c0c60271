"""Settings sources and validation; CLI error reporting; the SDK's error mapping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from solders.keypair import Keypair
from typer.testing import CliRunner

from idlegrid.cli.main import app
from idlegrid.errors import (
    IdlegridError,
    InvalidRequest,
    NotFound,
    ReplayedRequest,
    error_from_body,
)
from idlegrid.protocol import FaucetRequest
from idlegrid.server.settings import ServerSettings
from idlegrid.worker.raynode import free_port
from tests.conftest import FakeClock, Network, write_keypair


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


def test_the_defaults_are_production_and_refuse_developments_conveniences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDLEGRID_ENVIRONMENT")  # conftest sets development for the tests
    monkeypatch.delenv("IDLEGRID_CONFIG", raising=False)
    with pytest.raises(ValidationError) as bare:  # a bare start: SQLite, no authority key
        ServerSettings(data_dir=tmp_path)
    assert "PostgreSQL" in str(bare.value) and "IDLEGRID_AUTHORITY_KEYPAIR" in str(bare.value)
    key = write_keypair(tmp_path / "authority.json", Keypair())
    pg = "postgresql://idlegrid@db/idlegrid"
    good = ServerSettings(data_dir=tmp_path, database_url=pg, authority_keypair=key)
    assert good.environment == "production" and good.faucet is False
    with pytest.raises(ValidationError, match="faucet"):
        ServerSettings(data_dir=tmp_path, database_url=pg, authority_keypair=key, faucet=True)
    with pytest.raises(ValidationError, match="does not exist"):  # it would make its own
        ServerSettings(data_dir=tmp_path, database_url=pg, authority_keypair=tmp_path / "no")
    with pytest.raises(ValidationError, match="placeholder"):
        placeholder = "postgresql://idlegrid:changethis@db/idlegrid"
        ServerSettings(data_dir=tmp_path, database_url=placeholder, authority_keypair=key)
    assert [w.split(":")[0] for w in good.startup_warnings()] == [
        "the chain is the embedded LiteSVM (a file in data_dir), not a Solana cluster"
    ]
    public = good.model_copy(update={"host": "0.0.0.0", "chain_url": "http://rpc:8899"})
    assert [w.split(":")[0] for w in public.startup_warnings()] == ["serving plain HTTP on 0.0.0.0"]
    development = ServerSettings(environment="development", data_dir=tmp_path)
    assert development.faucet is True and development.database_url.startswith("sqlite")


def test_a_server_started_bare_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDLEGRID_")}
    done = subprocess.run(
        [sys.executable, "-m", "idlegrid.cli.main", "server", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to start in production" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / ".idlegrid").exists()  # no database, no key made


def test_the_faucet_is_closed_unless_switched_on(
    settings: ServerSettings, clock: FakeClock
) -> None:
    user = Keypair()  # the faucet is open in development (every test that funds a wallet)
    closed = Network(settings.model_copy(update={"faucet": False}), clock)
    try:
        with pytest.raises(NotFound):
            closed.client(user).faucet(str(user.pubkey()), FaucetRequest(asset="IO", amount="5"))
    finally:
        closed.close()


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValidationError):
        ServerSettings(heartbeat_interval_s=10, heartbeat_ttl_s=5)
    with pytest.raises(ValidationError):
        ServerSettings(port=0)
    with pytest.raises(ValidationError, match=r"not an IP address or network: 'proxy\.example'"):
        ServerSettings(trusted_proxies=["10.0.0.5", "proxy.example"])


def test_slow_client_limits_and_proxies_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDLEGRID_TRUSTED_PROXIES", '["10.0.0.0/8", "::1"]')
    monkeypatch.setenv("IDLEGRID_HEADER_TIMEOUT_S", "4")
    monkeypatch.setenv("IDLEGRID_BODY_TIMEOUT_S", "6")
    s = ServerSettings()
    assert s.trusted_proxies == ["10.0.0.0/8", "::1"]
    assert (s.header_timeout_s, s.body_timeout_s) == (4, 6)


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
