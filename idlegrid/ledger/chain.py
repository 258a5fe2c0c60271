"""The chain contract: what the ledger needs from Solana, on one page.

The network's token IO (and the USDC it is bought with) are SPL tokens. The
ledger settles with the chain through the ``Chain`` protocol below, which two
adapters implement:

- ``litesvm.LiteSvmChain``: an embedded Solana VM (LiteSVM) running the real
  SPL Token and Associated Token Account programs, for development, tests and
  single-machine networks. It is also ``Snapshottable``: its state persists in
  a file.
- ``rpc.RpcChain``: a JSON-RPC cluster (localnet, devnet, mainnet).

The adapters import this page; it imports neither. ``connect.make_chain`` picks
the one a URL names.

Layout. Every address the network holds is derived from the authority's public
key alone (``Pubkey.create_with_seed``), so ``layout_for(authority)`` is a pure
function, ``setup()`` is idempotent by construction, and a restarted control
plane finds its accounts again without a database row::

    mint[asset]            seed "idlegrid:mint:<asset>"    mint authority = authority
    account[role][asset]   seed "idlegrid:<role>:<asset>"  token owner    = authority

A user's deposit address is their associated token account
(``token_account(owner, asset)``), created on demand and paid by the authority.

Amounts are integers in the asset's smallest unit (``DECIMALS``). Every
transaction is a real SPL instruction (``mint_to_checked``, ``transfer_checked``,
``burn_checked``), so the embedded VM enforces what mainnet would: balances,
owners, mint authority. A failed transaction raises ``ChainError`` with the
program logs.

``SplChain`` holds the logic both adapters share (building, signing and
checking instructions); an adapter supplies its primitives: read an account,
the rent-exempt minimum, a fresh blockhash, send a transaction, and say
whether a signature landed.

Sending once. The ledger's outbox (``ledger/outbox.py``) never calls
``transfer``/``mint_to``/``burn`` for money: it describes the movement as a
``ChainOp``, has it signed with ``prepare`` (a ``Prepared``: the signed bytes,
their signature and the block height after which they can no longer land),
stores that, and only then calls ``submit``. After a crash it asks ``landed``
about the stored signature: landed means done; not landed and ``expired``
means it never can, so a fresh transaction may be prepared; otherwise the same
bytes are sent again, which a chain runs at most once. Adapters keep that
promise: ``submit`` refuses an expired transaction, and ``landed`` remembers a
signature for at least as long as its transaction could still land.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, Protocol, runtime_checkable

import spl.token.instructions as spl
from solders.account import Account
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountWithSeedParams, create_account_with_seed
from solders.token.state import Mint, TokenAccount
from solders.transaction import VersionedTransaction
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.memo.instructions import create_memo
from spl.memo.models import MemoParams
from spl.token.constants import ACCOUNT_LEN, MINT_LEN, TOKEN_PROGRAM_ID
from spl.token.models import (
    BurnCheckedParams,
    InitializeAccount3Params,
    InitializeMint2Params,
    MintToCheckedParams,
    TransferCheckedParams,
)

from idlegrid.core import fees


class Asset(StrEnum):
    IO = "IO"
    USDC = "USDC"


DECIMALS: Final[Mapping[Asset, int]] = {Asset(a): d for a, d in fees.DECIMALS.items()}

Role = Literal["treasury", "escrow", "fee", "reward", "stake", "burn"]
TREASURY_ROLES: Final[tuple[Role, ...]] = ("treasury", "escrow", "fee", "reward", "stake", "burn")

_U64_MAX: Final = 2**64 - 1


class ChainError(Exception):
    """A transaction failed, or the chain does not hold what the network expects.

    ``signature`` is the failed transaction's (None when nothing was sent);
    ``logs`` are the program logs, where the SPL Token program says why
    (e.g. ``Program log: Error: insufficient funds``).
    """

    def __init__(
        self, message: str, *, signature: str | None = None, logs: Sequence[str] = ()
    ) -> None:
        self.message = message
        self.signature = signature
        self.logs: tuple[str, ...] = tuple(logs)
        reason = next((line for line in self.logs if "Error:" in line), None)
        super().__init__(f"{message} ({reason})" if reason else message)


class BlockhashExpired(ChainError):
    """A prepared transaction's blockhash is too old: it did not run and never can."""


class AccountNotFound(ChainError):
    """No account at this address (e.g. setup() has not run, or a typo)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"no account at {address}")


OpKind = Literal["mint", "transfer", "burn"]


@dataclass(frozen=True, slots=True)
class ChainOp:
    """One token movement the network makes: a mint into ``dest``, a transfer from
    ``source`` to ``dest``, or a burn from ``source`` (addresses, base58).

    ``dest_owner``: create ``dest`` as that wallet's associated token account in the
    same transaction if it is missing (idempotent), so a payout is one transaction.
    ``memo``: an SPL Memo in the same transaction (the outbox puts its operation id
    there): anyone can match a transaction to the book, and two operations with the
    same movement never share a signature.
    """

    kind: OpKind
    asset: Asset
    amount: int
    source: str | None = None
    dest: str | None = None
    dest_owner: str | None = None
    memo: str = ""

    def __post_init__(self) -> None:
        _amount(self.amount)
        needs = {"mint": ("dest",), "transfer": ("source", "dest"), "burn": ("source",)}
        if self.kind not in needs:
            raise ValueError(f"unknown chain operation {self.kind!r}")
        for name in needs[self.kind]:
            if not getattr(self, name):
                raise ValueError(f"a {self.kind} names its {name}")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A signed transaction not yet known to have run; ``valid_until`` is the last
    block height at which it can land."""

    signature: str
    tx: bytes
    valid_until: int


@dataclass(frozen=True, slots=True)
class Landed:
    """What became of a transaction that ran: ``error`` is None when it succeeded."""

    signature: str
    error: str | None = None
    logs: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ChainLayout:
    """The network's addresses (base58): two mints and one token account per (role, asset)."""

    authority: str
    mints: Mapping[Asset, str]
    accounts: Mapping[Role, Mapping[Asset, str]]

    def mint(self, asset: Asset) -> str:
        return self.mints[asset]

    def account(self, role: Role, asset: Asset) -> str:
        return self.accounts[role][asset]

    def to_json(self) -> str:
        return json.dumps(
            {
                "authority": self.authority,
                "mints": {str(a): m for a, m in self.mints.items()},
                "accounts": {
                    r: {str(a): x for a, x in by.items()} for r, by in self.accounts.items()
                },
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ChainLayout:
        raw = json.loads(text)
        roles: dict[str, Role] = {r: r for r in TREASURY_ROLES}
        return cls(
            authority=raw["authority"],
            mints={Asset(a): m for a, m in raw["mints"].items()},
            accounts={
                roles[r]: {Asset(a): x for a, x in by.items()} for r, by in raw["accounts"].items()
            },
        )


def mint_seed(asset: Asset) -> str:
    return f"idlegrid:mint:{asset}"


def account_seed(role: Role, asset: Asset) -> str:
    return f"idlegrid:{role}:{asset}"


def layout_for(authority: Pubkey) -> ChainLayout:
    """The network's addresses for this authority; pure (no chain access)."""

    def derive(seed: str) -> str:
        return str(Pubkey.create_with_seed(authority, seed, TOKEN_PROGRAM_ID))

    return ChainLayout(
        authority=str(authority),
        mints={asset: derive(mint_seed(asset)) for asset in Asset},
        accounts={
            role: {asset: derive(account_seed(role, asset)) for asset in Asset}
            for role in TREASURY_ROLES
        },
    )


class Chain(Protocol):
    """The contract every chain adapter implements. Addresses are base58 strings."""

    @property
    def layout(self) -> ChainLayout:
        """The network's addresses; they exist on chain once ``setup()`` has run."""
        ...

    def setup(self) -> ChainLayout:
        """Create the mints and role accounts that are missing (idempotent)."""
        ...

    def mint_to(self, asset: Asset, account: str, amount: int) -> str:
        """Mint ``amount`` (smallest units) into a token account; signed by the authority."""
        ...

    def transfer(self, asset: Asset, source: str, dest: str, amount: int, owner: Keypair) -> str:
        """SPL ``transfer_checked`` from ``source``, signed (and its fee paid) by ``owner``."""
        ...

    def burn(self, asset: Asset, account: str, amount: int) -> str:
        """Burn from an authority-owned token account; the mint's supply falls."""
        ...

    def balance(self, account: str) -> int:
        """A token account's balance (smallest units)."""
        ...

    def instructions(self, op: ChainOp, owner: Pubkey) -> list[Instruction]:
        """The SPL instructions of ``op``; ``owner`` signs for the source (or the mint)."""
        ...

    def prepare(
        self, instructions: Sequence[Instruction], payer: Keypair, *signers: Keypair
    ) -> Prepared:
        """Sign a transaction under a fresh blockhash; nothing is sent."""
        ...

    def submit(self, prepared: Prepared) -> Landed:
        """Send a prepared transaction (again, if it was sent before: it runs at most
        once) and wait for it. Raises ``BlockhashExpired`` if it can no longer land,
        ``ChainError`` when the outcome is unknown (the chain is unreachable)."""
        ...

    def landed(self, signature: str) -> Landed | None:
        """The outcome of a transaction that ran; None if the chain has not run it."""
        ...

    def expired(self, prepared: Prepared) -> bool:
        """True once ``prepared`` can no longer land (if ``landed`` says None, it never did)."""
        ...

    def supply(self, asset: Asset) -> int:
        """The mint's total supply (smallest units)."""
        ...

    def token_account(self, owner: str, asset: Asset) -> str:
        """The owner's associated token account (a deposit address), created if missing."""
        ...

    def airdrop_sol(self, pubkey: str, lamports: int) -> str:
        """Give a wallet SOL for fees (embedded VM; test clusters only over RPC)."""
        ...

    def close(self) -> None:
        """Release connections; the chain's state is unaffected."""
        ...


@runtime_checkable
class Snapshottable(Protocol):
    """A chain whose whole state the network can save and load (the embedded VM only)."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


def _amount(amount: int) -> int:
    # The SPL programs take a u64; refuse here rather than fail inside instruction packing.
    if not 0 <= amount <= _U64_MAX:
        raise ValueError(f"amount {amount} is not a u64")
    return amount


class SplChain(ABC):
    """The contract over three primitives; adapters differ only in how they reach the chain."""

    def __init__(self, authority: Keypair) -> None:
        self.authority = authority
        self._layout = layout_for(authority.pubkey())

    # -- primitives an adapter supplies ------------------------------------------------

    @abstractmethod
    def _get_account(self, address: Pubkey) -> Account | None: ...

    @abstractmethod
    def _rent_exempt(self, size: int) -> int: ...

    @abstractmethod
    def _send(self, instructions: Sequence[Instruction], payer: Keypair, *signers: Keypair) -> str:
        """Sign, send and wait for one transaction; its signature, or ChainError."""

    @abstractmethod
    def airdrop_sol(self, pubkey: str, lamports: int) -> str: ...

    @abstractmethod
    def prepare(
        self, instructions: Sequence[Instruction], payer: Keypair, *signers: Keypair
    ) -> Prepared: ...

    @abstractmethod
    def submit(self, prepared: Prepared) -> Landed: ...

    @abstractmethod
    def landed(self, signature: str) -> Landed | None: ...

    @abstractmethod
    def expired(self, prepared: Prepared) -> bool: ...

    def close(self) -> None:
        return None

    # -- the contract --------------------------------------------------------------------

    @property
    def layout(self) -> ChainLayout:
        return self._layout

    def setup(self) -> ChainLayout:
        auth = self.authority.pubkey()
        for asset in Asset:
            mint = Pubkey.from_string(self._layout.mint(asset))
            existing = self._get_account(mint)
            if existing is None:
                init = spl.initialize_mint2(
                    InitializeMint2Params(
                        decimals=DECIMALS[asset],
                        program_id=TOKEN_PROGRAM_ID,
                        mint=mint,
                        mint_authority=auth,
                    )
                )
                self._send(
                    [self._create_seeded(mint_seed(asset), mint, MINT_LEN), init], self.authority
                )
            else:
                self._check_mint(asset, mint, existing)
        for role in TREASURY_ROLES:
            for asset in Asset:
                account = Pubkey.from_string(self._layout.account(role, asset))
                existing = self._get_account(account)
                if existing is None:
                    init = spl.initialize_account3(
                        InitializeAccount3Params(
                            program_id=TOKEN_PROGRAM_ID,
                            account=account,
                            mint=self._mint(asset),
                            owner=auth,
                        )
                    )
                    seeded = self._create_seeded(account_seed(role, asset), account, ACCOUNT_LEN)
                    self._send([seeded, init], self.authority)
                else:
                    self._check_token_account(asset, account, existing)
        return self._layout

    def mint_to(self, asset: Asset, account: str, amount: int) -> str:
        op = ChainOp("mint", asset, amount, dest=account)
        return self._send(self.instructions(op, self.authority.pubkey()), self.authority)

    def transfer(self, asset: Asset, source: str, dest: str, amount: int, owner: Keypair) -> str:
        op = ChainOp("transfer", asset, amount, source=source, dest=dest)
        return self._send(self.instructions(op, owner.pubkey()), owner)

    def burn(self, asset: Asset, account: str, amount: int) -> str:
        op = ChainOp("burn", asset, amount, source=account)
        return self._send(self.instructions(op, self.authority.pubkey()), self.authority)

    def instructions(self, op: ChainOp, owner: Pubkey) -> list[Instruction]:
        mint, decimals = self._mint(op.asset), DECIMALS[op.asset]
        out: list[Instruction] = []
        if op.dest_owner is not None:
            # Idempotent create: a racing creator (or the user's own wallet) cannot make it fail.
            out.append(
                spl.create_idempotent_associated_token_account(
                    self.authority.pubkey(), Pubkey.from_string(op.dest_owner), mint
                )
            )
        if op.kind == "mint":
            assert op.dest is not None
            params = MintToCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                mint=mint,
                dest=Pubkey.from_string(op.dest),
                mint_authority=owner,
                amount=op.amount,
                decimals=decimals,
            )
            out.append(spl.mint_to_checked(params))
        elif op.kind == "transfer":
            assert op.source is not None and op.dest is not None
            out.append(
                spl.transfer_checked(
                    TransferCheckedParams(
                        program_id=TOKEN_PROGRAM_ID,
                        source=Pubkey.from_string(op.source),
                        mint=mint,
                        dest=Pubkey.from_string(op.dest),
                        owner=owner,
                        amount=op.amount,
                        decimals=decimals,
                    )
                )
            )
        elif op.kind == "burn":
            assert op.source is not None
            out.append(
                spl.burn_checked(
                    BurnCheckedParams(
                        program_id=TOKEN_PROGRAM_ID,
                        mint=mint,
                        account=Pubkey.from_string(op.source),
                        owner=owner,
                        amount=op.amount,
                        decimals=decimals,
                    )
                )
            )
        if op.memo:
            out.append(
                create_memo(
                    MemoParams(program_id=MEMO_PROGRAM_ID, signer=owner, message=op.memo.encode())
                )
            )
        return out

    def balance(self, account: str) -> int:
        return self._read_token_account(Pubkey.from_string(account)).amount

    def supply(self, asset: Asset) -> int:
        mint = self._mint(asset)
        raw = self._get_account(mint)
        if raw is None:
            raise AccountNotFound(str(mint))
        return Mint.from_bytes(raw.data).supply

    def token_account(self, owner: str, asset: Asset) -> str:
        owner_key, mint = Pubkey.from_string(owner), self._mint(asset)
        ata = spl.get_associated_token_address(owner_key, mint)
        if self._get_account(ata) is None:
            # Idempotent create: a racing creator (or a user's own wallet) cannot make this fail.
            ix = spl.create_idempotent_associated_token_account(
                self.authority.pubkey(), owner_key, mint
            )
            self._send([ix], self.authority)
        return str(ata)

    # -- helpers -----------------------------------------------------------------------

    def _mint(self, asset: Asset) -> Pubkey:
        return Pubkey.from_string(self._layout.mint(asset))

    def _create_seeded(self, seed: str, address: Pubkey, size: int) -> Instruction:
        auth = self.authority.pubkey()
        return create_account_with_seed(
            CreateAccountWithSeedParams(
                from_pubkey=auth,
                to_pubkey=address,
                base=auth,
                seed=seed,
                lamports=self._rent_exempt(size),
                space=size,
                owner=TOKEN_PROGRAM_ID,
            )
        )

    def _read_token_account(self, address: Pubkey) -> TokenAccount:
        raw = self._get_account(address)
        if raw is None:
            raise AccountNotFound(str(address))
        if raw.owner != TOKEN_PROGRAM_ID or len(raw.data) != ACCOUNT_LEN:
            raise ChainError(f"{address} is not an SPL token account")
        return TokenAccount.from_bytes(raw.data)

    def _check_mint(self, asset: Asset, address: Pubkey, raw: Account) -> None:
        # An address derived from our key but holding something else means a wrong
        # authority or a corrupted state file: refuse loudly rather than mint elsewhere.
        if raw.owner != TOKEN_PROGRAM_ID or len(raw.data) != MINT_LEN:
            raise ChainError(f"the {asset} mint address {address} holds a non-mint account")
        mint = Mint.from_bytes(raw.data)
        if mint.decimals != DECIMALS[asset] or mint.mint_authority != self.authority.pubkey():
            raise ChainError(f"the {asset} mint {address} has other decimals or another authority")

    def _check_token_account(self, asset: Asset, address: Pubkey, raw: Account) -> None:
        if raw.owner != TOKEN_PROGRAM_ID or len(raw.data) != ACCOUNT_LEN:
            raise ChainError(f"{address} holds a non-token account")
        account = TokenAccount.from_bytes(raw.data)
        if account.mint != self._mint(asset) or account.owner != self.authority.pubkey():
            raise ChainError(f"{address} is not the authority's {asset} account")


def build_transaction(
    instructions: Sequence[Instruction], payer: Keypair, signers: Sequence[Keypair], blockhash: Hash
) -> VersionedTransaction:
    """One signed transaction; ``payer`` pays the fee, duplicates among signers are dropped.

    A legacy message: every RPC method and wallet reads it, and we need no lookup tables.
    """
    unique = {bytes(k.pubkey()): k for k in (payer, *signers)}
    message = Message.new_with_blockhash(list(instructions), payer.pubkey(), blockhash)
    return VersionedTransaction(message, list(unique.values()))
