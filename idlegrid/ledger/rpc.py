"""The cluster chain: ``Chain`` over Solana JSON-RPC (localnet, devnet, mainnet).

UNTESTED AGAINST A LIVE CLUSTER. The suite runs without network or validator;
what is tested is everything this adapter shares with the embedded one
(``chain.SplChain``: instructions, signing, layout, checks), which runs there
against the real SPL Token program. This module adds only transport: reading
accounts, fetching blockhashes, sending and confirming. It was smoke-tested by
hand against a throwaway JSON-RPC stand-in backed by LiteSVM (setup, mint,
transfer, burn, a preflight failure with logs, two identical transfers, an
unreachable URL); that stand-in is not a cluster and is not in the suite.

solana-py 0.41 has no synchronous client (``solana.rpc.api.Client`` is gone);
``AsyncClient`` is the only one. The contract is synchronous, so the client
lives on a private event loop in a daemon thread and every call waits for its
result there. That works whether or not the caller has an event loop of its
own (an async server calls this from a worker thread, as it would any
blocking I/O).

Sending. Each transaction takes a fresh blockhash, passes preflight (a
simulation) at the chosen commitment, and is then polled until it reaches that
commitment or its blockhash expires. A preflight failure carries the program
logs; a transaction that lands but fails has its logs fetched. Two identical
transactions within one blockhash would share a signature and the second
would be dropped, so a send whose signature this process already used waits
for the next blockhash. ``landed`` is ``getSignatureStatuses`` with
``searchTransactionHistory``; ``expired`` compares ``getBlockHeight`` with the
blockhash's ``lastValidBlockHeight``, Solana's own rule for when a transaction
can no longer land.

The authority pays for setup (rent for 14 accounts) and for users' associated
token accounts; on a real cluster it must hold SOL. ``airdrop_sol`` only works
where the cluster has a faucet (localnet, devnet).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import (
    RPCException,
    TransactionExpiredBlockheightExceededError,
    UnconfirmedTxError,
)
from solana.rpc.models import TxOpts
from solders.account import Account
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from idlegrid.ledger.chain import (
    BlockhashExpired,
    ChainError,
    Landed,
    Prepared,
    SplChain,
    build_transaction,
)

T = TypeVar("T")

_BLOCKHASH_WAIT_S: Final = 0.2
_BLOCKHASH_TRIES: Final = 50  # ~10 s: a healthy cluster moves on every ~0.4 s slot


class RpcChain(SplChain):
    """``Chain`` over a JSON-RPC endpoint. Call ``close()`` when done."""

    def __init__(
        self, authority: Keypair, url: str, commitment: str = "confirmed", timeout_s: float = 30.0
    ) -> None:
        super().__init__(authority)
        self.url = url
        self.commitment = Commitment(commitment)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="idlegrid-rpc", daemon=True
        )
        self._thread.start()
        self._client = self._call(self._open(timeout_s))
        self._lock = threading.Lock()
        self._blockhash: Hash | None = None
        self._used: set[Signature] = set()  # signatures sent under self._blockhash
        self._closed = False

    async def _open(self, timeout_s: float) -> AsyncClient:
        # Created on its own loop: the HTTP connection pool belongs to the loop that uses it.
        return AsyncClient(self.url, commitment=self.commitment, timeout=timeout_s)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        except RPCException as e:
            raise ChainError(f"RPC error from {self.url}: {e}") from e
        except SolanaRpcException as e:
            raise ChainError(f"cannot reach {self.url}: {e}") from e

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    # -- primitives --------------------------------------------------------------------

    def _get_account(self, address: Pubkey) -> Account | None:
        return self._call(self._client.get_account_info(address, commitment=self.commitment)).value

    def _rent_exempt(self, size: int) -> int:
        return self._call(self._client.get_minimum_balance_for_rent_exemption(size)).value

    def _send(self, instructions: Sequence[Instruction], payer: Keypair, *signers: Keypair) -> str:
        landed = self.submit(self.prepare(instructions, payer, *signers))
        if not landed.ok:
            raise ChainError(
                f"transaction failed: {landed.error}", signature=landed.signature, logs=landed.logs
            )
        return landed.signature

    def prepare(
        self, instructions: Sequence[Instruction], payer: Keypair, *signers: Keypair
    ) -> Prepared:
        for _ in range(_BLOCKHASH_TRIES):
            latest = self._call(self._client.get_latest_blockhash(self.commitment)).value
            tx = build_transaction(instructions, payer, signers, latest.blockhash)
            signature = tx.signatures[0]
            with self._lock:
                if latest.blockhash != self._blockhash:
                    self._blockhash, self._used = latest.blockhash, set()
                if signature not in self._used:
                    self._used.add(signature)
                    return Prepared(str(signature), bytes(tx), latest.last_valid_block_height)
            time.sleep(_BLOCKHASH_WAIT_S)
        raise ChainError(f"the blockhash at {self.url} did not advance")

    def submit(self, prepared: Prepared) -> Landed:
        known = self.landed(prepared.signature)
        if known is not None:
            return known
        if self.expired(prepared):
            raise BlockhashExpired(
                f"transaction {prepared.signature} expired at height {prepared.valid_until}",
                signature=prepared.signature,
            )
        signature = Signature.from_string(prepared.signature)
        tx = VersionedTransaction.from_bytes(prepared.tx)
        opts = TxOpts(skip_confirmation=True, preflight_commitment=self.commitment)
        try:
            asyncio.run_coroutine_threadsafe(
                self._client.send_transaction(tx, opts), self._loop
            ).result()
        except RPCException as e:
            failure = e.args[0] if e.args else None
            if isinstance(failure, SendTransactionPreflightFailureMessage):
                # The simulation failed: it did not run. The outbox retries it later.
                raise ChainError(
                    f"transaction failed preflight: {failure.data.err}",
                    signature=str(signature),
                    logs=failure.data.logs or (),
                ) from e
            raise ChainError(f"RPC refused the transaction: {e}", signature=str(signature)) from e
        except SolanaRpcException as e:
            # It may or may not have reached the cluster: ``landed`` will say.
            raise ChainError(
                f"cannot reach {self.url}; outcome unknown", signature=str(signature)
            ) from e
        self._confirm(signature, prepared.valid_until)
        landed = self.landed(prepared.signature)
        if landed is None:
            raise ChainError("transaction confirmed but not found", signature=str(signature))
        return landed

    def landed(self, signature: str) -> Landed | None:
        found = self._call(
            self._client.get_signature_statuses(
                [Signature.from_string(signature)], search_transaction_history=True
            )
        ).value[0]
        if found is None:
            return None
        if found.err is None:
            return Landed(signature)
        return Landed(
            signature, str(found.err), tuple(self._logs(Signature.from_string(signature)))
        )

    def expired(self, prepared: Prepared) -> bool:
        height = self._call(self._client.get_block_height(self.commitment)).value
        return height > prepared.valid_until

    def _confirm(self, signature: Signature, last_valid_block_height: int) -> None:
        try:
            statuses = self._call(
                self._client.confirm_transaction(
                    signature, self.commitment, last_valid_block_height=last_valid_block_height
                )
            )
        except (UnconfirmedTxError, TransactionExpiredBlockheightExceededError) as e:
            raise ChainError(f"transaction not confirmed: {e}", signature=str(signature)) from e
        del statuses  # success or failure, ``landed`` reads the outcome

    def _logs(self, signature: Signature) -> list[str]:
        """Best effort: the logs of a landed transaction, for the error."""
        try:
            found = self._call(
                self._client.get_transaction(
                    signature, commitment=self.commitment, max_supported_transaction_version=0
                )
            ).value
        except ChainError:
            return []
        meta = found.transaction.meta if found is not None else None
        return list(meta.log_messages or []) if meta is not None else []

    # -- the contract --------------------------------------------------------------------

    def airdrop_sol(self, pubkey: str, lamports: int) -> str:
        signature = self._call(
            self._client.request_airdrop(Pubkey.from_string(pubkey), lamports, self.commitment)
        ).value
        latest = self._call(self._client.get_latest_blockhash(self.commitment)).value
        self._confirm(signature, latest.last_valid_block_height)
        return str(signature)
