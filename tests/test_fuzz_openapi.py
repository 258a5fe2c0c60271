"""The API fuzzed against its own OpenAPI schema (issue 14).

schemathesis reads ``/openapi.json`` from the app, in this process, and generates
requests for every operation in it, valid ones and invalid ones, each signed as the
actor the operation expects (a registered device, its owner, a buyer's API key or
wallet, the network's authority), so that the fuzzer gets past authentication and
into the handlers. Every answer must be a documented status, never a 5xx, with the
content type and the body that the schema gives for that status.

Why a table of actors rather than a guess from the path: an operation that documents
``401`` checks a signature or a key, and the test fails on one the table does not
name, so a new route is fuzzed as its real caller from the day it is added.

Left to other tests, because the schema does not hold them: the explorer's HTML pages
(tests/test_explorer.py), HEAD (tests/test_hardening_http.py) and the ``/prices``
alias of ``/v1/prices``. Not checked here: that invalid requests are refused
(schemathesis' ``negative_data_rejection``), because the wire models tolerate unknown
fields by design (protocol.py's compatibility rules).

The server keeps its state across examples (a proof fetched, a slash appealed), so a
failure may not happen again when Hypothesis replays it to shrink: it then reports
``FlakyFailure``, and the failure that started it is printed beneath.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from solders.keypair import Keypair

from idlegrid.core import signing
from idlegrid.protocol import FaucetRequest, HeartbeatRequest, RegisterRequest, SeasonCreate
from idlegrid.server.settings import ServerSettings
from tests.conftest import FakeClock, Network, cpu_hardware

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Per operation and generation mode: 54 operations × (40 + 20) plan 3,240 examples; an
# operation with few possible requests (no parameters, or only a boolean) has fewer,
# and one with nothing that can be invalid has no negative ones: about 2,600 run.
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20}
MIN_EXAMPLES = 2000

# Who calls each operation that documents 401. DEVICE: the registered device's key.
# NEWCOMER: a device key of its own for registration, so that fuzzed re-registrations
# do not change DEVICE's hardware or owner under the other operations. OWNER: the
# device's owner, funded and staked. WALLET: the buyer's wallet key (API keys,
# co-staking). BUYER: the buyer's API key (``buyer`` also takes a wallet signature;
# the key is what buyers use). AUTHORITY: the network's authority key.
ACTORS = {
    "GET /v1/devices/{device_id}/challenges/{proof_id}": "DEVICE",
    "POST /v1/devices/{device_id}/challenges/{proof_id}/commit": "DEVICE",
    "POST /v1/devices/{device_id}/challenges/{proof_id}/reveal": "DEVICE",
    "POST /v1/devices/{device_id}/connectivity": "DEVICE",
    "POST /v1/devices/{device_id}/heartbeat": "DEVICE",
    "POST /v1/devices/{device_id}/ray": "DEVICE",
    # Up to 32 MiB each way: fuzzed in full, the largest answers included (in
    # process they cost milliseconds). The uploads the fuzzer makes are small.
    "GET /v1/speedtest": "DEVICE",
    "POST /v1/speedtest": "DEVICE",
    "POST /v1/devices": "NEWCOMER",
    "POST /v1/devices/{device_id}/{action}": "OWNER",
    "POST /v1/devices/{device_id}/floor": "OWNER",
    "POST /v1/devices/{device_id}/stake": "OWNER",
    "POST /v1/devices/{device_id}/unstake": "OWNER",
    "POST /v1/devices/{device_id}/stake/withdraw": "OWNER",
    "POST /v1/devices/{device_id}/stake/share": "OWNER",
    "POST /v1/wallets/{pubkey}/deposits": "OWNER",
    "POST /v1/wallets/{pubkey}/withdrawals": "OWNER",
    "POST /v1/wallets/{pubkey}/faucet": "OWNER",
    "POST /v1/rewards/claim": "OWNER",
    "POST /v1/slashes/{slash_id}/appeal": "OWNER",
    "POST /v1/devices/{device_id}/costake": "WALLET",
    "POST /v1/devices/{device_id}/costake/exit": "WALLET",
    "GET /v1/api-keys": "WALLET",
    "POST /v1/api-keys": "WALLET",
    "DELETE /v1/api-keys/{key_id}": "WALLET",
    "POST /v1/quotes": "BUYER",
    "POST /v1/clusters": "BUYER",
    "GET /v1/clusters": "BUYER",
    "GET /v1/clusters/{cluster_id}": "BUYER",
    "POST /v1/clusters/{cluster_id}/extend": "BUYER",
    "POST /v1/clusters/{cluster_id}/terminate": "BUYER",
    "POST /v1/clusters/{cluster_id}/peers": "BUYER",
    "POST /v1/slashes": "AUTHORITY",
    "POST /v1/slashes/{slash_id}/decision": "AUTHORITY",
    "POST /v1/seasons": "AUTHORITY",
}


class SignAs(requests.auth.AuthBase):
    """Signs a prepared request as ``keypair`` (core/signing.py), over the exact path,
    query and body bytes that the transport then sends."""

    def __init__(self, keypair: Keypair, network: str, clock: Callable[[], float]) -> None:
        self.keypair = keypair
        self.network = network
        self.clock = clock

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        assert isinstance(body, bytes), "a streamed body cannot be signed before it is sent"
        timestamp = str(int(self.clock()))
        nonce = secrets.token_urlsafe(18)
        message = signing.signing_message(
            self.network, request.method or "", request.path_url, body, timestamp, nonce
        )
        request.headers[signing.HEADER_NETWORK] = self.network
        request.headers[signing.HEADER_KEY] = str(self.keypair.pubkey())
        request.headers[signing.HEADER_TIMESTAMP] = timestamp
        request.headers[signing.HEADER_NONCE] = nonce
        request.headers[signing.HEADER_SIGNATURE] = str(self.keypair.sign_message(message))
        # What an upload declares (the speed test's; other routes ignore it).
        request.headers[signing.HEADER_CONTENT_SHA256] = hashlib.sha256(body).hexdigest()
        return request


class BearerKey(requests.auth.AuthBase):
    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.key}"
        return request


@dataclass
class Fuzzed:
    """The app under test, its schema, and the actors and values the fuzzer uses."""

    net: Network
    schema: Any  # schemathesis' OpenApiSchema
    auths: dict[str, requests.auth.AuthBase]
    # Path parameters that name something that exists: half the valid requests use
    # them, so that handlers get past "no such device" to their own rules.
    known_params: dict[str, st.SearchStrategy[Any]]
    # The same for string fields of bodies: of the text up to 40 characters that the
    # schema allows for an amount almost none is one, and a model must be the catalog's.
    known_fields: dict[str, st.SearchStrategy[Any]]
    # Only while valid requests are made: an invalid one stays invalid.
    use_known: bool = True
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    settings = ServerSettings(
        database_url=f"sqlite:///{data_dir / 'idlegrid.db'}",
        data_dir=data_dir,
        # The clock stands still, so rate limits would soon answer everything 429.
        speedtests_per_hour=1_000_000,
        quotes_per_minute=0,
    )
    net = Network(settings, FakeClock())
    try:
        yield _prepare(net)
    finally:
        net.close()
        asgi.shutdown_lifespans()  # schemathesis started the same app's lifespan too


def _prepare(net: Network) -> Fuzzed:
    """A published block, a registered device with a challenge waiting, its owner with
    a stake, a funded buyer with API keys, a slash and a season; then the schema."""
    state = net.state
    for _ in range(3):  # a block closes on a tick after its end
        if published := state.blocks.tick():
            break
        net.clock.advance(net.settings.block_interval_s)
    block = published[0]

    network = net.client().network()
    # Seeded keys, so that every run fuzzes the same ids.
    device, owner, newcomer, wallet = (Keypair.from_seed(bytes([i]) * 32) for i in range(1, 5))
    device_id, owner_id = str(device.pubkey()), str(owner.pubkey())
    attestation = owner.sign_message(signing.owner_attestation_message(network, device_id))
    agent = net.client(device)
    registered = agent.register_device(
        RegisterRequest(hardware=cpu_hardware(), owner=owner_id, owner_signature=str(attestation))
    )
    agent.heartbeat(device_id, HeartbeatRequest())
    state.proofs.schedule()
    proof_id = state.mailbox.challenge(device_id)
    assert proof_id is not None

    owners = net.client(owner)
    owners.faucet(owner_id, FaucetRequest(asset="IO", amount="100000"))
    owners.stake(device_id, "1000")
    buyer = net.client(wallet)
    buyer.faucet(str(wallet.pubkey()), FaucetRequest(asset="IO", amount="100000"))
    buyer.faucet(str(wallet.pubkey()), FaucetRequest(asset="USDC", amount="100000"))
    api_key = buyer.create_api_key("fuzz").key
    assert api_key is not None
    # The fuzzer's DELETE revokes this one, never the key BUYER signs with.
    revocable = buyer.create_api_key("revoked by the fuzzer").id

    authority = net.client(state.ledger.authority)
    slash = authority.slash(device_id, "idle_abuse", "fuzz")
    season = authority.create_season(
        SeasonCreate(
            name="fuzz",
            starts_block=0,
            ends_block=1000,
            gpu_points=1000,
            cpu_points=1000,
            points_per_io=90,
        )
    )

    schema = schemathesis.openapi.from_asgi("/openapi.json", net.app)
    _tuples_as_items(schema.raw_schema)
    auths: dict[str, requests.auth.AuthBase] = {
        "DEVICE": SignAs(device, network, net.clock),
        "NEWCOMER": SignAs(newcomer, network, net.clock),
        "OWNER": SignAs(owner, network, net.clock),
        "WALLET": SignAs(wallet, network, net.clock),
        "AUTHORITY": SignAs(state.ledger.authority, network, net.clock),
        "BUYER": BearerKey(api_key),
    }
    # No cluster exists (a deploy needs a proven, cluster-ready device): cluster ids
    # are the fuzzer's own, and those operations answer 404 past validation.
    known_params: dict[str, st.SearchStrategy[Any]] = {
        "device_id": st.just(device_id),
        "pubkey": st.just(owner_id),
        "wallet": st.just(owner_id),
        "proof_id": st.just(proof_id),
        "key_id": st.just(revocable),
        "slash_id": st.just(slash.id),
        "season_id": st.just(season.id),
        # Not "terminate": it would end the device the later operations need
        # (tests/test_api_devices.py terminates devices).
        "action": st.sampled_from(["pause", "resume"]),
        "number": st.just(block),
        "document": st.sampled_from(["inputs", "outputs"]),
    }
    amounts = st.one_of(
        st.integers(0, 10**6).map(str),
        st.decimals(0, 10**6, places=6).map(lambda d: f"{d:f}"),
    )
    known_fields: dict[str, st.SearchStrategy[Any]] = {
        "amount": amounts,
        "usd": amounts,
        "max_price_usd": amounts,
        "hardware": st.sampled_from(sorted({"cpu", registered.model or "cpu"})),
        "device_id": st.just(device_id),
    }
    fz = Fuzzed(net, schema, auths, known_params, known_fields)
    _use_known_values(fz)
    return fz


def _tuples_as_items(node: Any) -> None:
    """Work around schemathesis 4.32.5, which rewrites an OpenAPI 3.1 tuple
    (``prefixItems``) in a response schema into draft 4's ``items: [...]`` and then
    checks it with a 2020-12 validator, which calls the schema invalid (SlashView's
    ``shares``, a ``list[tuple[str, str]]``). A tuple whose members share one schema
    and whose length is fixed says no more than ``items`` with the same bounds, so it
    is written that way, in place; any other tuple is left for the test to trip over."""
    if isinstance(node, dict):
        prefix = node.get("prefixItems")
        if (
            isinstance(prefix, list)
            and prefix
            and all(p == prefix[0] for p in prefix)
            and "items" not in node
            and node.get("maxItems") == len(prefix)
        ):
            node["items"] = node.pop("prefixItems")[0]
        for value in node.values():
            _tuples_as_items(value)
    elif isinstance(node, list):
        for value in node:
            _tuples_as_items(value)


def _use_known_values(fz: Fuzzed) -> None:
    """Hooks on this schema only: a generated request, or one with known values."""

    def either(generated: Any, known: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
        if not fz.use_known or not isinstance(generated, dict):
            return st.just(generated)
        names = {k for k, v in generated.items() if k in known and isinstance(v, str | int)}
        if not names:
            return st.just(generated)
        replaced = {k: known[k] if k in names else st.just(v) for k, v in generated.items()}
        return st.one_of(st.just(generated), st.fixed_dictionaries(replaced))

    @fz.schema.hook  # type: ignore[untyped-decorator]
    def flatmap_path_parameters(
        context: schemathesis.HookContext, path_parameters: Any
    ) -> st.SearchStrategy[Any]:
        return either(path_parameters, fz.known_params)

    @fz.schema.hook  # type: ignore[untyped-decorator]
    def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
        return either(body, fz.known_fields)


def _outcome(response: schemathesis.Response) -> str:
    """The status, with the error's code where there is one: what the summary counts."""
    # Not response.json(): schemathesis keeps what that parses as the body it then
    # validates, and a byte of speed-test noise ("9") parses.
    body = None
    if (response.headers.get("content-type") or [""])[0].startswith("application/json"):
        with contextlib.suppress(ValueError):
            body = json.loads(response.content)
    code = body.get("code") if isinstance(body, dict) else None
    return f"{response.status_code} {code}" if isinstance(code, str) else str(response.status_code)


def _fuzz(fz: Fuzzed, operation: Any, mode: GenerationMode) -> int:
    """Run one operation's examples of one generation mode; how many ran."""
    auth = fz.auths.get(ACTORS.get(operation.label, ""))
    outcomes = fz.outcomes.setdefault(operation.label, Counter())
    ran = 0

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,  # the same examples on every run
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        nonlocal ran
        ran += 1
        response = case.call(auth=auth)
        outcomes[_outcome(response)] += 1
        case.validate_response(response, checks=CHECKS)

    fz.use_known = mode is GenerationMode.POSITIVE
    run()
    return ran


def _describe(exc: BaseException) -> str:
    """The message, and those of a group's members (Hypothesis' Flaky hides the cause)."""
    parts = [f"{type(exc).__name__}: {exc}"]
    for sub in getattr(exc, "exceptions", ()):
        parts.append("  " + _describe(sub).replace("\n", "\n  "))
    return "\n".join(parts)


def test_every_operation_survives_the_fuzzer(fuzzed: Fuzzed) -> None:
    started = time.monotonic()
    operations = [result.ok() for result in fuzzed.schema.get_all_operations()]
    labels = {op.label for op in operations}
    signed = {op.label for op in operations if "401" in op.definition.raw["responses"]}
    assert signed == set(ACTORS), "ACTORS must name who signs each signed operation"

    failures: dict[str, str] = {}
    nothing_invalid: list[str] = []
    ran: Counter[str] = Counter()
    for operation in operations:
        for mode in EXAMPLES:
            try:
                ran[operation.label] += _fuzz(fuzzed, operation, mode)
            except Unsatisfiable:
                # Nothing in the request can be invalid (no parameters, or text of any
                # value): the valid requests are all there is to send.
                if mode is not GenerationMode.NEGATIVE:
                    raise
                nothing_invalid.append(operation.label)
            except (Exception, FailureGroup) as exc:  # FailureGroup is a BaseExceptionGroup
                failures[f"{operation.label} ({mode.value})"] = _describe(exc)

    elapsed = time.monotonic() - started
    print(f"\n{sum(ran.values())} examples of {len(labels)} operations in {elapsed:.0f} s")
    for label in sorted(fuzzed.outcomes):
        print(f"  {ran[label]:4d}  {label}: {dict(sorted(fuzzed.outcomes[label].items()))}")
    print(f"no invalid request to make: {', '.join(nothing_invalid)}")
    assert not failures, "\n\n".join(f"== {k}\n{v}" for k, v in failures.items())
    assert {label for label in labels if ran[label] > 0} == labels, "every operation ran"
    assert sum(ran.values()) >= MIN_EXAMPLES
    # The signatures work: every signed operation got past authentication at least once.
    refused = [label for label in signed if all(o[:3] == "401" for o in fuzzed.outcomes[label])]
    assert not refused, f"always 401: {refused}"
