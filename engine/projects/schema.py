"""The project database's schema, its migrations and the checks made when a file is opened.

``PRAGMA application_id`` = :data:`APPLICATION_ID` marks a samkit project; ``PRAGMA
user_version`` is the schema version. :data:`MIGRATIONS` ``[k]`` brings version ``k`` to
``k + 1``; they run in one ``BEGIN IMMEDIATE`` transaction, so a crash mid-migration leaves the
old version, and two processes opening an old file at once migrate it once.

Version 1: ``meta``, ``images``, ``annotations``, ``models``. Version 2: the ``events`` history
table, ``images.sha256`` (duplicate detection) and indexes for the per-image queries.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .records import ProjectError

__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT_S", "DB_NAME", "MIGRATIONS", "SCHEMA_VERSION", "Database", "connect",
           "prepare"]

#: The database file's name inside the project folder.
DB_NAME = "samkit_project.sqlite"
#: ``PRAGMA application_id`` of samkit projects ("SAMK" in ASCII).
APPLICATION_ID = 0x53414D4B
#: How long a write waits for another writer's transaction before giving up.
BUSY_TIMEOUT_S = 60.0

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL CHECK (width > 0),
    height INTEGER NOT NULL CHECK (height > 0),
    added_at REAL NOT NULL,
    done INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)));
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images (id),
    rle TEXT NOT NULL,
    bbox TEXT NOT NULL,
    area INTEGER NOT NULL CHECK (area > 0),
    label TEXT NOT NULL,
    stage INTEGER NOT NULL CHECK (stage IN (1, 2, 3)),
    source TEXT NOT NULL CHECK (source IN ('manual', 'assisted', 'prefill', 'auto', 'import')),
    model_version TEXT,
    author TEXT,
    created_at REAL NOT NULL,
    edited_at REAL,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'pending', 'rejected', 'withdrawn')),
    superseded_by INTEGER REFERENCES annotations (id),
    score REAL,
    seconds REAL CHECK (seconds IS NULL OR seconds >= 0));
CREATE TABLE models (
    version TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    checkpoint TEXT NOT NULL,
    parent TEXT REFERENCES models (version),
    created_at REAL NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    notes TEXT);
"""

_V2 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    author TEXT,
    kind TEXT NOT NULL,
    image_id INTEGER,
    annotation_id INTEGER,
    old TEXT,
    new TEXT);
ALTER TABLE images ADD COLUMN sha256 TEXT;
CREATE INDEX images_sha256 ON images (sha256);
CREATE INDEX annotations_image ON annotations (image_id, superseded_by, status);
CREATE INDEX events_annotation ON events (annotation_id);
"""


def _run_script(script: str) -> Callable[[sqlite3.Connection], None]:
    def migrate(db: sqlite3.Connection) -> None:
        for statement in script.split(";"):  # executescript would COMMIT the open transaction
            if statement.strip():
                db.execute(statement)
    return migrate


#: ``MIGRATIONS[k]`` takes the schema from version ``k`` to ``k + 1`` (0: an empty file).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_run_script(_V1), _run_script(_V2)]
#: The schema version this samkit writes.
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), with the busy timeout set."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA synchronous = NORMAL")  # with WAL: a killed process loses no commit
    except sqlite3.DatabaseError as error:
        connection.close()
        raise ProjectError(f"{path} is not a samkit project: it is not a readable SQLite database ({error})") from None
    return connection


def _header(connection: sqlite3.Connection, path: Path) -> tuple[int, int]:
    try:
        application = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise ProjectError(f"{path} is not a samkit project: it is not a readable SQLite database ({error})") from None
    return application, version


def prepare(connection: sqlite3.Connection, path: Path, *, create: bool, name: str | None = None,
            target: int = SCHEMA_VERSION) -> int:
    """Check that ``path`` is a samkit project (or, with ``create``, make the empty file one),
    switch it to WAL and migrate it to ``target``; returns the version found before.

    Raises:
        ProjectError: not SQLite, another application's database, or a newer schema.
    """
    application, version = _header(connection, path)
    if create:
        if application or version or connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            raise ProjectError(f"{path} already holds a database; not creating a project over it")
    elif application != APPLICATION_ID:
        raise ProjectError(f"{path} is an SQLite database but not a samkit project (application_id {application:#x}, "
                           f"expected {APPLICATION_ID:#x})")
    if version > SCHEMA_VERSION:
        raise ProjectError(f"{path} has project schema version {version}, newer than this samkit understands "
                           f"(up to {SCHEMA_VERSION}); upgrade samkit to open it")
    if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        connection.execute("PRAGMA journal_mode = WAL")
    if version >= target:
        return version
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = connection.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
        for step in range(found, target):
            MIGRATIONS[step](connection)
            connection.execute(f"PRAGMA user_version = {step + 1}")
        if create:
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute("INSERT INTO meta (key, value) VALUES ('name', ?), ('created_at', ?)",
                               (name or path.parent.name, repr(time.time())))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return version


class Database:
    """One SQLite file used from any number of threads: each thread gets its own connection
    (a forked child opens fresh ones); :meth:`_write` and :meth:`_read` are transactions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise ProjectError(f"the project {self.root} is closed")
        if os.getpid() != self._pid:  # a forked child must not use its parent's connections
            self._local, self._connections, self._pid = threading.local(), [], os.getpid()
            self._lock = threading.Lock()
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(self.path)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _write(self) -> "Transaction":
        """``with self._write() as db:`` one ``BEGIN IMMEDIATE`` transaction (waits for other writers)."""
        return Transaction(self._connection(), "BEGIN IMMEDIATE")

    def _read(self) -> "Transaction":
        """``with self._read() as db:`` one consistent snapshot for several queries."""
        return Transaction(self._connection(), "BEGIN")

    def close(self) -> None:
        """Close every thread's connection; the object cannot be used afterwards."""
        with self._lock:
            self._closed = True
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class Transaction:
    """``with``: BEGIN ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, connection: sqlite3.Connection, begin: str) -> None:
        self.connection, self.begin = connection, begin

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute(self.begin)
        return self.connection

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is None:
            self.connection.execute("COMMIT")
        elif self.connection.in_transaction:
            self.connection.execute("ROLLBACK")
