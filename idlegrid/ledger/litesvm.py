"""The embedded chain: LiteSVM running the real SPL Token programs, state in a file.

``LiteSvmChain`` implements ``Chain`` over ``solders.litesvm.LiteSVM``, an
in-process Solana VM that ships with the SPL Token
(``TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA``) and Associated Token Account
programs. Transactions are real: signed, fee-charging, checked by the token
program. It serves development, tests and single-machine networks.

Blockhashes and sending once. LiteSVM never advances its blockhash on its own,
so every prepared transaction and every airdrop first calls
``expire_blockhash()``: that is one block here, and ``height`` counts them.
LiteSVM's own blockhash check accepts only the latest blockhash (any other
send would expire a prepared transaction at once), so it is off, and this
adapter applies Solana's rule itself: a transaction can land within
``VALID_BLOCKS`` blocks of being prepared, and ``submit`` refuses it after.
Every transaction that ran is remembered (signature and error) for
``REMEMBER_BLOCKS`` blocks, in the saved state too, so a signature is
answered by ``landed`` long after it could have landed, across restarts; the
outbox reconciles at start and every second, far inside that bound.

Persistence. With ``state_file``, the chain is saved after every transaction
(failed ones too: they still charge the fee payer) by writing a temporary file
and ``os.replace``-ing it, and loaded at construction. A snapshot is JSON
(``format``, ``authority``, and each account's lamports, owner, executable,
rent epoch and base64 data). What survives a restart:

- both mints (supply, decimals, mint authority) and every account owned by the
  SPL Token program: the role accounts, users' associated token accounts, with
  balances, owners, delegates and states;
- the SOL of the authority and of every wallet this adapter has seen (signed a
  transaction or received an airdrop through it);
- the block height and the signatures of the last ``REMEMBER_BLOCKS`` blocks'
  transactions, with their errors.

What does not: older signatures, the slot, clock and blockhash (a restored
VM starts at slot 0), accounts owned by any other program, SOL of wallets this
adapter never saw, and the VM's settings (fees, compute budget: LiteSVM's
defaults again). A crash between a transaction and its save loses that one
transaction, so the ledger above reconciles with ``landed()`` after a restart
(a transaction whose effect was not saved was not remembered either: it did
not land). Each save rewrites the whole file (every token account), which
suits networks of thousands of accounts, not mainnet scale.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from solders.account import Account
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from spl.token.constants import TOKEN_PROGRAM_ID

from idlegrid.ledger.chain import (
    BlockhashExpired,
    ChainError,
    ChainLayout,
    Landed,
    Prepared,
    SplChain,
    build_transaction,
)

_REFUSED = str(Signature.default())  # a refused (never run) transaction's metadata signature

STATE_FORMAT: Final = "idlegrid.litesvm-state/2"
_OLD_FORMATS: Final = ("idlegrid.litesvm-state/1",)  # no height, no signatures: both start empty
VALID_BLOCKS: Final = 150  # as on Solana: a blockhash is good for 150 blocks
REMEMBER_BLOCKS: Final = 5_000
_LAMPORTS_PER_SOL: Final = 1_000_000_000
# The embedded authority is topped up to this before setup(): fees and rent are real here.
_AUTHORITY_FLOAT_LAMPORTS: Final = 100 * _LAMPORTS_PER_SOL


class LiteSvmChain(SplChain):
    """``Chain`` and ``Snapshottable`` over an embedded LiteSVM; thread-safe (one lock)."""

    def __init__(self, authority: Keypair, state_file: Path | None = None) -> None:
        super().__init__(authority)
        self.state_file = state_file
        # Sends, saves and restores are serialised: one blockhash expiry per transaction,
        # and a save never sees a half-restored VM.
        self._lock = threading.RLock()
        self._svm = _vm()
        self._wallets: set[Pubkey] = {authority.pubkey()}
        self._height = 0
        # signature -> (height it ran at, error or None), oldest first
        self._landed: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        if state_file is not None and state_file.exists():
            self.restore(state_file.read_bytes())

    # -- primitives --------------------------------------------------------------------

    def _get_account(self, address: Pubkey) -> Account | None:
        with self._lock:
            return self._svm.get_account(address)

    def _rent_exempt(self, size: int) -> int:
        return self._svm.minimum_balance_for_rent_exemption(size)

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
        with self._lock:
            self._next_block()
            tx = build_transaction(instructions, payer, signers, self._svm.latest_blockhash())
            self._wallets.update(k.pubkey() for k in (payer, *signers))
            return Prepared(str(tx.signatures[0]), bytes(tx), self._height + VALID_BLOCKS)

    def submit(self, prepared: Prepared) -> Landed:
        with self._lock:
            known = self.landed(prepared.signature)
            if known is not None:
                return known  # it ran before: never twice
            if self.expired(prepared):
                raise BlockhashExpired(
                    f"transaction {prepared.signature} expired at height {prepared.valid_until}",
                    signature=prepared.signature,
                )
            result = self._svm.send_transaction(VersionedTransaction.from_bytes(prepared.tx))
            if isinstance(result, FailedTransactionMetadata):
                if str(result.meta().signature()) == _REFUSED:
                    # Refused before running (no fee charged, nothing changed): not landed.
                    raise ChainError(
                        f"transaction refused: {result.err()}",
                        signature=prepared.signature,
                        logs=result.meta().logs(),
                    )
                logs = tuple(result.meta().logs())
                reason = next((line for line in logs if "Error:" in line), None)
                error = f"{result.err()} ({reason})" if reason else str(result.err())
                landed = Landed(prepared.signature, error, logs)
            else:
                landed = Landed(prepared.signature)
            self._landed[prepared.signature] = (self._height, landed.error)
            self._save()  # the effect and its signature are saved together
        return landed

    def landed(self, signature: str) -> Landed | None:
        with self._lock:
            known = self._landed.get(signature)
        return None if known is None else Landed(signature, known[1])

    def expired(self, prepared: Prepared) -> bool:
        with self._lock:
            return self._height > prepared.valid_until

    def _next_block(self) -> None:
        self._svm.expire_blockhash()
        self._height += 1
        while self._landed:
            first = next(iter(self._landed.values()))
            if first[0] > self._height - REMEMBER_BLOCKS:
                break
            self._landed.popitem(last=False)

    # -- the contract --------------------------------------------------------------------

    def setup(self) -> ChainLayout:
        auth = self.authority.pubkey()
        with self._lock:
            balance = self._svm.get_balance(auth) or 0
        if balance < _AUTHORITY_FLOAT_LAMPORTS // 10:
            self.airdrop_sol(str(auth), _AUTHORITY_FLOAT_LAMPORTS - balance)
        return super().setup()

    def airdrop_sol(self, pubkey: str, lamports: int) -> str:
        key = Pubkey.from_string(pubkey)
        with self._lock:
            # Airdrops are transactions too: the same amount twice would be a duplicate.
            self._next_block()
            result = self._svm.airdrop(key, lamports)
            if isinstance(result, FailedTransactionMetadata):
                raise ChainError(f"airdrop failed: {result.err()}", logs=result.meta().logs())
            self._wallets.add(key)
            self._save()
        return str(result.signature())

    # -- Snapshottable -------------------------------------------------------------------

    def snapshot(self) -> bytes:
        with self._lock:
            accounts = dict(self._svm.get_program_accounts(TOKEN_PROGRAM_ID))
            for wallet in self._wallets:
                account = self._svm.get_account(wallet)
                if account is not None and account.owner == SYSTEM_PROGRAM_ID:
                    accounts[wallet] = account
            height, landed = self._height, list(self._landed.items())
        doc = {
            "format": STATE_FORMAT,
            "authority": str(self.authority.pubkey()),
            "accounts": {str(k): _encode_account(a) for k, a in accounts.items()},
            "height": height,
            "landed": [[sig, at, err] for sig, (at, err) in landed],
        }
        return json.dumps(doc, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        """Replace the whole VM with a fresh one holding the snapshot's accounts."""
        doc = json.loads(data)
        if doc.get("format") != STATE_FORMAT and doc.get("format") not in _OLD_FORMATS:
            raise ValueError(f"not a {STATE_FORMAT} snapshot: {doc.get('format')!r}")
        if doc["authority"] != str(self.authority.pubkey()):
            raise ValueError(
                f"the snapshot belongs to authority {doc['authority']}, "
                f"not {self.authority.pubkey()}"
            )
        svm = _vm()
        wallets = {self.authority.pubkey()}
        landed = OrderedDict((sig, (int(at), err)) for sig, at, err in doc.get("landed", []))
        for address, raw in doc["accounts"].items():
            key, account = Pubkey.from_string(address), _decode_account(raw)
            svm.set_account(key, account)
            if account.owner == SYSTEM_PROGRAM_ID:
                wallets.add(key)
        with self._lock:
            self._svm, self._wallets = svm, wallets
            self._height, self._landed = int(doc.get("height", 0)), landed

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = self.snapshot()
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        # Same directory as the target, so os.replace is an atomic rename.
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=f".{self.state_file.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _vm() -> LiteSVM:
    # The adapter applies the blockhash rule itself (see the module docstring).
    return LiteSVM().with_blockhash_check(False)


def _encode_account(account: Account) -> dict[str, Any]:
    return {
        "lamports": account.lamports,
        "owner": str(account.owner),
        "executable": account.executable,
        "rent_epoch": account.rent_epoch,
        "data": base64.b64encode(account.data).decode(),
    }


def _decode_account(raw: dict[str, Any]) -> Account:
    return Account(
        lamports=int(raw["lamports"]),
        data=base64.b64decode(raw["data"]),
        owner=Pubkey.from_string(raw["owner"]),
        executable=bool(raw["executable"]),
        rent_epoch=int(raw["rent_epoch"]),
    )
