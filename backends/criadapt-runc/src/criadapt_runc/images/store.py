"""The runc backend's image store: content-addressed blobs, unpacked snapshots, image records.

Layout under ``<root>/runc``::

    images.db                 SQLite (WAL): images, names, snapshots, blob references, leases
    blobs/sha256/<hex>        verified blobs (manifests, configs, compressed layers)
    snapshots/<chain hex>/    one unpacked layer each, overlayfs-ready (whiteouts as 0:0 devices)
    ingest/                   partial downloads (``<pid>-<random>``), never read by anybody else
    locks/<hex>.lock          flock files: one writer per blob or snapshot, across processes

Everything that becomes visible does so by a rename (blobs, snapshots) or in one SQLite
transaction (images and names), so a pull that dies half way leaves nothing visible; what it
left in ``ingest/`` or as ``snapshots/.tmp-<pid>-…`` is removed by the next garbage collection
once its process is gone. The store is safe to use from several threads and from several
processes at once (``criadapt serve`` and ``criadapt images import``).

Snapshots are keyed by the layer's *chain id* (OCI image spec): the same layer on the same
parent chain is unpacked once and shared by every image that has it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from criadapt.errors import (
    CriError,
    DataLoss,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from criadapt.images import Reference, is_image_id, parse_reference
from criadapt_runc.images.unpack import LayerError, UnpackResult, unpack_layer

log = logging.getLogger("criadapt.runc.images")

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,               -- config digest: the image id
    manifest_digest TEXT NOT NULL,
    config BLOB NOT NULL,              -- the image config JSON, as stored in its blob
    chain TEXT NOT NULL,               -- JSON list of chain ids, bottom layer first
    size INTEGER NOT NULL,             -- manifest + config + compressed layers, in bytes
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,             -- normalised "repo:tag" or "repo@digest"
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest'))
);
CREATE INDEX IF NOT EXISTS names_by_image ON names(image_id);
CREATE TABLE IF NOT EXISTS image_blobs (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
CREATE TABLE IF NOT EXISTS snapshots (
    chain_id TEXT PRIMARY KEY,
    parent TEXT,
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    inodes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    owner TEXT PRIMARY KEY,            -- e.g. a container id: keeps these snapshots alive
    image_id TEXT NOT NULL,
    chain TEXT NOT NULL                -- JSON list of chain ids, even after the image is removed
);
"""


def sha256_hex(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    if (
        algorithm != "sha256"
        or len(encoded) != 64
        or not all(c in "0123456789abcdef" for c in encoded)
    ):
        raise InvalidArgument(f"unsupported digest {digest!r} (only sha256 is)")
    return encoded


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """OCI chain ids: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) DiffID(Ln)).

    (The two are joined by one space before hashing.)
    """
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


@attrs.frozen(kw_only=True)
class StoredImage:
    """One image as the store knows it."""

    id: str
    manifest_digest: str
    config: bytes
    chain: tuple[str, ...]
    size: int
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]

    @property
    def config_json(self) -> dict[str, Any]:
        value = json.loads(self.config)
        return value if isinstance(value, dict) else {}

    @property
    def runtime_config(self) -> dict[str, Any]:
        """The ``config`` object of the image config (Entrypoint, Cmd, Env, User, ...)."""
        value = self.config_json.get("config") or {}
        return value if isinstance(value, dict) else {}


def _disk_errors(exc: OSError, what: str) -> CriError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{what}: no space left in the image store")
    return Internal(f"{what}: {exc.strerror or exc}")


def _unpack(blob: Path, dest: Path, digest: str) -> UnpackResult:
    try:
        return unpack_layer(blob, dest)
    except LayerError as exc:
        raise DataLoss(f"layer {digest} cannot be unpacked: {exc}") from exc
    except OSError as exc:
        raise _disk_errors(exc, f"unpacking layer {digest}") from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ImageStore:
    """Blobs, snapshots and image records under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.snapshot_dir = self.root / "snapshots"
        self.ingest_dir = self.root / "ingest"
        self.lock_dir = self.root / "locks"
        for folder in (self.blob_dir, self.snapshot_dir, self.ingest_dir, self.lock_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        self._db().executescript(SCHEMA)  # idempotent; executescript manages its own commit

    # -- database ---------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.root / "images.db", timeout=60, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- locks ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on ``key`` (a digest or chain id), across threads and processes."""
        path = self.lock_dir / f"{key.replace(':', '-')}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # -- blobs ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / sha256_hex(digest)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in the store") from None

    def ingest(self, digest: str, size: int | None, write: Any) -> Path:
        """Store a blob: ``write(file)`` writes its bytes; digest and size are verified.

        Runs ``write`` only if the blob is not stored yet; concurrent calls for the same digest
        do the work once. A failed or unverified write leaves nothing behind.
        """
        target = self.blob_path(digest)
        if self.has_blob(digest, size):
            return target
        with self.lock(digest):
            if self.has_blob(digest, size):
                return target
            partial = self.ingest_dir / f"{os.getpid()}-{os.urandom(6).hex()}"
            try:
                try:
                    with open(partial, "wb") as out:
                        write(out)
                        out.flush()
                        os.fsync(out.fileno())
                except OSError as exc:
                    raise _disk_errors(exc, f"storing blob {digest}") from exc
                self._verify_file(partial, digest, size)
                os.replace(partial, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
        return target

    def ingest_bytes(self, digest: str, data: bytes) -> Path:
        return self.ingest(digest, len(data), lambda out: out.write(data))

    def ingest_file(self, digest: str, size: int | None, source: BinaryIO) -> Path:
        return self.ingest(digest, size, lambda out: shutil.copyfileobj(source, out, 1 << 20))

    @staticmethod
    def _verify_file(path: Path, digest: str, size: int | None) -> None:
        actual_size = path.stat().st_size
        if size is not None and actual_size != size:
            raise DataLoss(f"blob {digest}: expected {size} bytes, got {actual_size}")
        hasher = hashlib.sha256()
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                hasher.update(chunk)
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise DataLoss(f"blob {digest}: content has digest sha256:{hasher.hexdigest()}")

    # -- snapshots --------------------------------------------------------------------------
    def snapshot_path(self, chain_id: str) -> Path:
        return self.snapshot_dir / sha256_hex(chain_id)

    def has_snapshot(self, chain_id: str) -> bool:
        row = (
            self._db().execute("SELECT 1 FROM snapshots WHERE chain_id = ?", (chain_id,)).fetchone()
        )
        return row is not None and self.snapshot_path(chain_id).is_dir()

    def ensure_snapshot(
        self, chain_id: str, parent: str | None, diff_id: str, layer_digest: str
    ) -> None:
        """Unpack the stored layer blob into the snapshot of ``chain_id`` (once)."""
        if self.has_snapshot(chain_id):
            return
        with self.lock(chain_id):
            if self.has_snapshot(chain_id):
                return
            final = self.snapshot_path(chain_id)
            temp = self.snapshot_dir / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
            started = time.monotonic()
            try:
                result = _unpack(self.blob_path(layer_digest), temp, layer_digest)
                if result.diff_id != diff_id:
                    raise DataLoss(
                        f"layer {layer_digest} unpacks to {result.diff_id}, "
                        f"but the image config says {diff_id}"
                    )
                if final.exists():  # a leftover without a record (crash between rename and insert)
                    shutil.rmtree(final)
                os.rename(temp, final)
            finally:
                if temp.exists():
                    shutil.rmtree(temp, ignore_errors=True)
            with self._transaction() as db:
                db.execute(
                    "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)",
                    (chain_id, parent, diff_id, result.size, result.inodes),
                )
            log.info(
                "unpacked %s (%d bytes, %d inodes) in %.2f s",
                layer_digest[:19],
                result.size,
                result.inodes,
                time.monotonic() - started,
            )

    def snapshot_dirs(self, image: StoredImage) -> list[Path]:
        """The image's snapshot folders, bottom layer first (overlayfs lowerdir reversed)."""
        return [self.snapshot_path(chain_id) for chain_id in image.chain]

    # -- images -----------------------------------------------------------------------------
    def commit_image(
        self,
        *,
        image_id: str,
        manifest_digest: str,
        config: bytes,
        chain: Sequence[str],
        size: int,
        blobs: Iterable[str],
        names: Iterable[tuple[str, str]],
    ) -> StoredImage:
        """Record an image whose blobs and snapshots are all stored, with its names.

        A name (tag or digest reference) that pointed at another image moves to this one.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "manifest_digest = excluded.manifest_digest",
                (image_id, manifest_digest, config, json.dumps(list(chain)), size, time.time()),
            )
            db.executemany(
                "INSERT OR IGNORE INTO image_blobs VALUES (?, ?)",
                [(image_id, digest) for digest in blobs],
            )
            db.executemany(
                "INSERT OR REPLACE INTO names VALUES (?, ?, ?)",
                [(name, image_id, kind) for name, kind in names],
            )
        image = self.get(image_id)
        assert image is not None
        return image

    def _load(self, db: sqlite3.Connection, row: tuple[Any, ...]) -> StoredImage:
        image_id, manifest_digest, config, chain, size = row
        names = db.execute(
            "SELECT name, kind FROM names WHERE image_id = ? ORDER BY name", (image_id,)
        ).fetchall()
        return StoredImage(
            id=image_id,
            manifest_digest=manifest_digest,
            config=bytes(config),
            chain=tuple(json.loads(chain)),
            size=size,
            repo_tags=tuple(n for n, kind in names if kind == "tag"),
            repo_digests=tuple(n for n, kind in names if kind == "digest"),
        )

    _COLUMNS = "id, manifest_digest, config, chain, size"

    def get(self, image_id: str) -> StoredImage | None:
        db = self._db()
        row = db.execute(f"SELECT {self._COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        return self._load(db, row) if row else None

    def images(self) -> list[StoredImage]:
        db = self._db()
        rows = db.execute(f"SELECT {self._COLUMNS} FROM images ORDER BY created").fetchall()
        return [self._load(db, row) for row in rows]

    def lookup(self, text: str) -> StoredImage | None:
        """The image named by an id (``sha256:…`` or bare hex), a tag or a digest reference.

        None when there is no such image; :class:`InvalidArgument` when ``text`` is neither an
        id nor a valid reference.
        """
        if is_image_id(text):
            return self.get(text if text.startswith("sha256:") else f"sha256:{text}")
        return self.lookup_reference(parse_reference(text))

    def lookup_reference(self, ref: Reference) -> StoredImage | None:
        row = (
            self._db().execute("SELECT image_id FROM names WHERE name = ?", (str(ref),)).fetchone()
        )
        return self.get(row[0]) if row else None

    def remove(self, image_id: str) -> bool:
        """Forget the image and all its names; its content goes at the next :meth:`gc`."""
        with self._transaction() as db:
            removed = db.execute("DELETE FROM images WHERE id = ?", (image_id,)).rowcount
        return bool(removed)

    def complete(self, image: StoredImage) -> bool:
        """Whether every snapshot of the image is present (e.g. after a crash)."""
        return all(self.has_snapshot(chain_id) for chain_id in image.chain)

    # -- leases (containers using an image) -------------------------------------------------
    def add_lease(self, owner: str, image: StoredImage) -> None:
        """Keep ``image``'s snapshots while ``owner`` (a container) exists, removed or not."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?)",
                (owner, image.id, json.dumps(list(image.chain))),
            )

    def remove_lease(self, owner: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    # -- garbage collection -----------------------------------------------------------------
    def gc(self) -> dict[str, int]:
        """Remove blobs and snapshots no image (or lease) needs, and dead pulls' leftovers."""
        removed = {"blobs": 0, "snapshots": 0, "partial": 0}
        with self._transaction() as db:
            wanted_blobs = {row[0] for row in db.execute("SELECT digest FROM image_blobs")}
            wanted_chains: set[str] = set()
            for (chain,) in db.execute("SELECT chain FROM images UNION SELECT chain FROM leases"):
                wanted_chains.update(json.loads(chain))
            stale = [
                row[0]
                for row in db.execute("SELECT chain_id FROM snapshots")
                if row[0] not in wanted_chains
            ]
            db.executemany("DELETE FROM snapshots WHERE chain_id = ?", [(c,) for c in stale])
        for chain_id in stale:
            with self.lock(chain_id):
                shutil.rmtree(self.snapshot_path(chain_id), ignore_errors=True)
            removed["snapshots"] += 1
        for entry in self.blob_dir.iterdir():
            if f"sha256:{entry.name}" not in wanted_blobs:
                with self.lock(f"sha256:{entry.name}"):
                    entry.unlink(missing_ok=True)
                removed["blobs"] += 1
        removed["partial"] += self._remove_dead_leftovers()
        return removed

    def _remove_dead_leftovers(self) -> int:
        count = 0
        leftovers = [(p, p.name) for p in self.ingest_dir.iterdir()]
        leftovers += [
            (p, p.name[len(".tmp-") :])
            for p in self.snapshot_dir.iterdir()
            if p.name.startswith(".tmp-")
        ]
        for path, tag in leftovers:
            pid_text = tag.split("-", 1)[0]
            if pid_text.isdigit() and _pid_alive(int(pid_text)):
                continue  # a pull in progress (ours or another process's)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            count += 1
        # snapshot folders without a record (a crash between rename and insert)
        with contextlib.suppress(sqlite3.Error):
            known = {sha256_hex(r[0]) for r in self._db().execute("SELECT chain_id FROM snapshots")}
            for path in self.snapshot_dir.iterdir():
                if not path.name.startswith(".") and path.name not in known:
                    with self.lock(f"sha256:{path.name}"):
                        if not self.has_snapshot(f"sha256:{path.name}"):
                            shutil.rmtree(path, ignore_errors=True)
                            count += 1
        return count

    # -- usage ------------------------------------------------------------------------------
    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) really used by the store on disk (hard links counted once)."""
        seen: set[tuple[int, int]] = set()
        used = inodes = 0
        stack = [str(self.root)]
        while stack:
            folder = stack.pop()
            try:
                entries = os.scandir(folder)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                raise
            with entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    used += st.st_blocks * 512
                    inodes += 1
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        return used, inodes
