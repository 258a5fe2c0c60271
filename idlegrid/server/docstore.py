"""Published documents on disk, compressed and known by their hash.

A block's inputs and outputs are hundreds of megabytes at a million devices:
kept as a column they grow the relational tables (and every backup and vacuum
of them) by that much an hour. They are written here instead, once, under the
SHA-256 of their exact bytes (the hash the block records and anyone checks),
gzip-compressed::

    <root>/<hash[:2]>/<hash>.json.gz

``put`` writes a temporary file beside the final name, fsyncs it, renames it
into place and fsyncs the directory: a crash leaves either no file or the whole
file, never part of one under the final name. The same bytes are stored once.
``get`` gives back the exact bytes put, after checking that they still hash to
their name: a damaged or truncated file raises ``DocumentCorrupt``, it is never
served. gzip (the standard library's zlib), not zstandard, since idlegrid does
not depend on it; ``zcat`` reads the files.

Errors::

    DocumentStoreError
    ├── DocumentMissing   no file for the hash
    └── DocumentCorrupt   the file does not decompress to bytes of that hash
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import zlib
from pathlib import Path

SUFFIX = ".json.gz"
CHUNK_BYTES = 1 << 20  # compressed a megabyte at a time: no second copy of a document
# Level 1: a block's inputs are mostly random device ids and keys; level 6 saves a few
# percent more (0.49 of the bytes, not 0.52) for twice the time (0.6 s, not 0.3 s, for
# the inputs of 100,000 devices).
GZIP_WBITS = 31  # zlib's gzip container
_HEX64 = re.compile(r"[0-9a-f]{64}")


class DocumentStoreError(Exception):
    def __init__(self, message: str, digest: str, path: Path) -> None:
        super().__init__(f"{message}: {digest} ({path})")
        self.digest = digest
        self.path = path


class DocumentMissing(DocumentStoreError):
    pass


class DocumentCorrupt(DocumentStoreError):
    pass


class DocumentStore:
    """Content-addressed, compressed documents under ``root``."""

    def __init__(self, root: Path, level: int = 1) -> None:
        self.root = Path(root)
        self.level = level

    def path(self, digest: str) -> Path:
        if not _HEX64.fullmatch(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return self.root / digest[:2] / f"{digest}{SUFFIX}"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, document: bytes) -> str:
        """Store ``document`` (once) and return its SHA-256 hex digest, its name."""
        digest = hashlib.sha256(document).hexdigest()
        final = self.path(digest)
        if final.is_file():
            return digest  # the same bytes, stored before (a rename only ever lands whole)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{digest}.", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                packer = zlib.compressobj(self.level, zlib.DEFLATED, GZIP_WBITS)
                view = memoryview(document)
                for start in range(0, len(view), CHUNK_BYTES):
                    out.write(packer.compress(view[start : start + CHUNK_BYTES]))
                out.write(packer.flush())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(final.parent)
        _fsync_dir(self.root)  # the subdirectory may be new
        return digest

    def get(self, digest: str) -> bytes:
        """The exact bytes stored under ``digest``, checked against it."""
        path = self.path(digest)
        try:
            packed = path.read_bytes()
        except FileNotFoundError:
            raise DocumentMissing("no stored document", digest, path) from None
        try:
            unpacker = zlib.decompressobj(GZIP_WBITS)
            document = unpacker.decompress(packed) + unpacker.flush()
            whole = unpacker.eof and not unpacker.unused_data
        except zlib.error:
            whole = False
        if not whole or hashlib.sha256(document).hexdigest() != digest:
            raise DocumentCorrupt("stored document does not match its hash", digest, path)
        return document

    def stored_bytes(self, digest: str) -> int:
        """The compressed size on disk."""
        return self.path(digest).stat().st_size


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
