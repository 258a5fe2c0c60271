"""The document store (server/docstore.py): exact bytes back, damage refused, the same
bytes stored once, and a write interrupted by a crash leaves nothing half-written."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlegrid.server import docstore
from idlegrid.server.docstore import DocumentCorrupt, DocumentMissing, DocumentStore

BIG = b'{"devices":{"device_id":[' + b",".join(b'"%064d"' % i for i in range(40_000)) + b"]}}"


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@settings(max_examples=50, deadline=None)
@given(document=st.binary(max_size=5000))
def test_round_trip_is_exact(tmp_path_factory: pytest.TempPathFactory, document: bytes) -> None:
    store = DocumentStore(tmp_path_factory.mktemp("docs"))
    digest = store.put(document)
    assert digest == hashlib.sha256(document).hexdigest()
    assert store.get(digest) == document


def test_large_documents_are_compressed_and_laid_out_by_hash(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    digest = store.put(BIG)  # several compression chunks
    path = tmp_path / digest[:2] / f"{digest}.json.gz"
    assert store.path(digest) == path and path.is_file()
    assert gzip.decompress(path.read_bytes()) == BIG  # plain gzip: zcat reads it
    assert store.stored_bytes(digest) < len(BIG) // 4
    assert store.get(digest) == BIG
    assert files(tmp_path) == [path]  # no temporary file left behind


def test_the_same_bytes_are_stored_once(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    first = store.put(b"[1,2,3]")
    mtime = store.path(first).stat().st_mtime_ns
    assert store.put(b"[1,2,3]") == first
    assert store.path(first).stat().st_mtime_ns == mtime  # not rewritten
    other = store.put(b"[1,2,4]")
    assert other != first and len(files(tmp_path)) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated: the gzip trailer is cut
        lambda b: b[: len(b) // 2],
        lambda b: b + b"\0",  # trailing garbage
        lambda b: b"",
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # a flipped bit in the stream
        lambda b: gzip.compress(BIG.replace(b"0001", b"0002", 1)),  # valid gzip, other bytes
    ],
)
def test_a_damaged_file_is_refused(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    store = DocumentStore(tmp_path)
    digest = store.put(BIG)
    path = store.path(digest)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DocumentCorrupt) as caught:
        store.get(digest)
    assert caught.value.digest == digest and caught.value.path == path


def test_a_missing_document_and_a_bad_name(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    with pytest.raises(DocumentMissing):
        store.get(hashlib.sha256(b"never stored").hexdigest())
    assert not store.has(hashlib.sha256(b"never stored").hexdigest())
    for bad in ("../etc/passwd", "ABC", "a" * 63, "A" * 64):
        with pytest.raises(ValueError):
            store.path(bad)


def test_a_crash_before_the_rename_leaves_no_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file appears under its name whole or not at all: a process killed while it
    writes (here at the fsync, and no clean-up runs, as after a kill) leaves no
    document, only a temporary file that is not one, and a later put succeeds."""
    store = DocumentStore(tmp_path)

    class Killed(BaseException):
        pass

    def killed(fd: int) -> None:
        raise Killed

    monkeypatch.setattr(docstore.os, "fsync", killed)
    monkeypatch.setattr(docstore.os, "unlink", lambda path: None)  # a killed process
    with pytest.raises(Killed):
        store.put(BIG)
    monkeypatch.undo()
    digest = hashlib.sha256(BIG).hexdigest()
    assert not store.has(digest)
    with pytest.raises(DocumentMissing):
        store.get(digest)
    assert [p.name.endswith(".tmp") for p in files(tmp_path)] == [True]
    assert store.put(BIG) == digest and store.get(digest) == BIG


def test_a_half_written_temporary_file_is_ignored(tmp_path: Path) -> None:
    """What a process killed mid-write leaves (a temporary file, never renamed) is not
    the document: it is neither served nor mistaken for a stored copy."""
    store = DocumentStore(tmp_path)
    digest = hashlib.sha256(BIG).hexdigest()
    store.path(digest).parent.mkdir(parents=True)
    half = zlib.compressobj(6, zlib.DEFLATED, 31).compress(BIG)[:100]
    (store.path(digest).parent / f".{digest}.x.tmp").write_bytes(half)
    assert not store.has(digest)
    with pytest.raises(DocumentMissing):
        store.get(digest)
    assert store.put(BIG) == digest and store.get(digest) == BIG
