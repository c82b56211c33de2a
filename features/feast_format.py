"""Every private or undocumented part of Feast that custlens relies on, in one module, checked
against the pinned Feast at import.

- Feast's online storage format, built in bulk: entity keys (serialization version 3) and
  `Value` protobuf bytes for the packed vector's double and string lists, decoded back on read.
- The online stores' layout: Feast's SQLite table of a view and its rows; Feast's Redis hash per
  entity key + project, its murmur3 field names (`helpers._mmh3`) and its `_ts:<view>` stamps;
  the table name (`sqlite._table_id`) and Feast's Redis client (`_get_provider`, `_get_client`).
- Replacing what a view holds in one step, so that readers see one generation or the next and
  never a mix: SQLite builds the next generation as a table of its own and renames it into
  Feast's table name in one transaction; Redis queues the changes in one MULTI and applies them
  with EXEC. Each store records the generation it holds, for the side files to be checked against.
- The file registry written atomically (`FileRegistryStore._write_registry`: Feast truncates the
  file, then writes it).
- Recording a materialization in the registry (`registry.apply_materialization`), as Feast's
  own materialize does after writing.
- Applying the repo without rewriting unchanged objects: `repo_operations.parse_repo`, the diff
  types of `store.plan` and `store._apply_diffs`.

Why each exists is in docs/feast-notes.md (§3, §4, §8) and tests/integration/test_feast_format.py
shows it: bytes written here are what Feast's own serializers produce and what stock
`get_online_features` reads back (across switches of generation too:
tests/integration/test_online_generations.py). None of it is promised by Feast across releases, and a
format that drifts would not fail: it would mis-encode silently (ids that read as unknown,
features under another name). So on any other Feast version importing this module refuses.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sqlite3
import struct
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from custlens.errors import CustlensError

# The Feast release this module was written against and tested on; keep it equal to the pin in
# pyproject.toml / requirements.lock.
PINNED_FEAST = "0.67.0"
# The only version Feast 0.67 supports; the key layout below is version 3's.
ENTITY_KEY_SERIALIZATION_VERSION = 3
# The two features of the packed vector view (features/repo/feature_views.py: customer_vector).
NUMBERS, LABELS = "numbers", "labels"


def check_feast_version(installed: str) -> None:
    if installed != PINNED_FEAST:
        raise CustlensError(
            f"feast {installed} is installed, but custlens writes Feast's online storage format as "
            f"feast {PINNED_FEAST} has it (features/feast_format.py). Install feast=={PINNED_FEAST}, or "
            "move the pin: run tests/integration/test_feast_format.py and tests/integration/test_feature_store.py on "
            "the new version, then update PINNED_FEAST and pyproject.toml"
        )


check_feast_version(importlib.metadata.version("feast"))


# ---------------------------------------------------------------------------------------------
# The file registry, written atomically


def _write_registry_atomically(self: Any, registry_proto: Any) -> None:
    """Feast's FileRegistryStore._write_registry, but into a side file renamed over the registry:
    Feast truncates the registry file and then writes it, so a materialize or apply killed in
    between left an empty registry (no feature views: "run custlens features apply")."""
    from feast.utils import _utc_now

    registry_proto.version_id = str(uuid.uuid4())
    registry_proto.last_updated.FromDatetime(_utc_now())
    path = Path(self._filepath)
    path.parent.mkdir(exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, mode="wb", buffering=0) as f:
            f.write(registry_proto.SerializeToString())
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _atomic_file_registry() -> None:
    from feast.infra.registry.file import FileRegistryStore

    FileRegistryStore._write_registry = _write_registry_atomically  # type: ignore[method-assign]


_atomic_file_registry()


# ---------------------------------------------------------------------------------------------
# Entity keys and values, built in bulk


def entity_key_bytes(join_key: str, values: Sequence[str]) -> list[bytes]:
    """Feast's serialize_entity_key (version 3) for one string join key, without a proto per id."""
    head = struct.pack("<II", 1, 2) + struct.pack("<I", len(join_key)) + join_key.encode()
    return [head + struct.pack("<II", 2, len(raw)) + raw for raw in (value.encode("utf-8") for value in values)]


@functools.cache
def _double_list_header(width: int) -> bytes:
    # A Value holding `width` doubles is this fixed prefix followed by the raw little-endian doubles.
    whole = Value(double_list_val=DoubleList(val=[0.0] * width)).SerializeToString()
    return whole[: len(whole) - 8 * width]


def double_list_bytes(numbers: np.ndarray) -> list[bytes]:
    """Serialized `Value(double_list_val=...)` per row of a float64 matrix."""
    rows = np.ascontiguousarray(numbers, dtype="<f8")
    header = _double_list_header(rows.shape[1])
    return [header + row.tobytes() for row in rows]


def string_list_bytes(rows: Sequence[Sequence[str]]) -> list[bytes]:
    """Serialized `Value(string_list_val=...)` per row."""
    return [Value(string_list_val=StringList(val=row)).SerializeToString() for row in rows]


def double_list_payload(value: bytes | None, width: int) -> bytes | None:
    """The raw little-endian doubles of a stored double-list Value; None unless it is exactly what
    `double_list_bytes` writes for `width` numbers (the header, then the doubles)."""
    header = _double_list_header(width)
    if value is None or len(value) != len(header) + 8 * width:
        return None
    return value[len(header) :] if value.startswith(header) else None


def string_list(value: bytes | None, width: int) -> Sequence[str] | None:
    """The strings of a stored string-list Value; None unless it decodes to `width` strings."""
    if value is None:
        return None
    try:
        strings = Value.FromString(value).string_list_val.val
    except DecodeError:
        return None
    return strings if len(strings) == width else None


# ---------------------------------------------------------------------------------------------
# Feast's SQLite and Redis online stores, written and read in bulk

# What one entity key holds in the online store: the serialized NUMBERS and LABELS Values and
# the feature timestamp in epoch seconds; (None, None, None) when the store has nothing for it.
StoredRow = tuple[bytes | None, bytes | None, float | None]
_NOTHING_STORED: StoredRow = (None, None, None)
# SQLite allows 32,766 bound parameters per statement; larger reads go in chunks of this many ids.
_SQLITE_IDS_PER_SELECT = 10_000
# SQLite caps this at its compile-time maximum (2 GiB in common builds); beyond it, plain reads.
_SQLITE_READ_MMAP_BYTES = 1 << 40


# custlens's own table beside Feast's in the online database: the generation each view's table holds.
_SQLITE_GENERATIONS = "custlens_online_generations"
# The next generation is built under this suffix, and the one it replaces waits under the other
# until it is dropped; a run killed between its switch and that drop leaves it for the next run.
_SQLITE_NEXT, _SQLITE_RETIRED = "__custlens_next", "__custlens_retired"
# Where the table's name stands in the CREATE TABLE statement SQLite keeps for it.
_CREATE_TABLE_NAME = re.compile(r'^(\s*CREATE\s+TABLE\s+)("(?:[^"]|"")+"|\S+)', re.IGNORECASE)
# After a generation, SQLite cuts its write-ahead log back to this size once it is checkpointed.
_SQLITE_WAL_LIMIT_BYTES = 64 << 20


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteGeneration:
    """The next generation of a view's SQLite table, written in one transaction that ends by
    renaming it into Feast's table name: until then readers see the current table whole."""

    def __init__(self, table: SqliteTable, generation: str, keep_current: bool) -> None:
        self.table = table
        self.generation = generation
        self.next, self.retired = table.table + _SQLITE_NEXT, table.table + _SQLITE_RETIRED
        self.switch_seconds = 0.0
        self.conn = sqlite3.connect(table.path, isolation_level=None)  # transactions spelled out below
        try:
            # WAL: readers keep reading the current table, without waiting, while this one is written.
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(f"PRAGMA journal_size_limit = {_SQLITE_WAL_LIMIT_BYTES}")
            # Checkpointed by hand after the switch, not inside its COMMIT: copying the new table
            # from the log into the database is no part of the step readers switch in.
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._drop_leftovers()
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(self._create_next())
            if keep_current:
                # Inside SQLite: the rows no customer's change touches are copied, not re-encoded.
                self.conn.execute(f"INSERT INTO {_quoted(self.next)} SELECT * FROM {_quoted(table.table)}")
        except BaseException:
            self.conn.close()
            raise

    def _drop_leftovers(self) -> None:
        # A run killed after its switch leaves the generation it replaced. (One killed before
        # its switch leaves nothing: its transaction is never committed.)
        for leftover in (self.next, self.retired):
            self.conn.execute(f"DROP TABLE IF EXISTS {_quoted(leftover)}")

    def _create_next(self) -> str:
        # Feast's own CREATE TABLE statement for the view, under the next generation's name; not its
        # index on entity_key alone, which the primary key's (entity_key, feature_name) makes redundant.
        found = self.conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table.table,)
        ).fetchone()
        if found is None:
            raise CustlensError(f"online table {self.table.table} does not exist; run `custlens features apply` first")
        statement, replaced = _CREATE_TABLE_NAME.subn(lambda m: m.group(1) + _quoted(self.next), found[0], count=1)
        if not replaced:
            raise CustlensError(f"online table {self.table.table}: unexpected definition {found[0]!r}")
        return statement

    def write(self, keys: list[bytes], numbers: list[bytes], labels: list[bytes], event_ts: int) -> None:
        # The upsert Feast's own SQLite writer runs, with the rows of both features of each customer.
        created = int(time.time())
        rows = [
            row
            for key, number, label in zip(keys, numbers, labels, strict=True)
            for row in ((key, NUMBERS, number, event_ts, created), (key, LABELS, label, event_ts, created))
        ]
        self.conn.executemany(
            f"INSERT INTO {_quoted(self.next)} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, NULL, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts",
            rows,
        )

    def delete(self, keys: list[bytes]) -> None:
        for start in range(0, len(keys), _SQLITE_IDS_PER_SELECT):
            chunk = keys[start : start + _SQLITE_IDS_PER_SELECT]
            self.conn.execute(
                f"DELETE FROM {_quoted(self.next)} WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk
            )

    def switch(self) -> None:
        """Readers see the next generation from here on; the one it replaced is dropped after."""
        started = time.perf_counter()
        live = _quoted(self.table.table)
        self.conn.execute(f"ALTER TABLE {live} RENAME TO {_quoted(self.retired)}")
        self.conn.execute(f"ALTER TABLE {_quoted(self.next)} RENAME TO {live}")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_SQLITE_GENERATIONS} (table_name TEXT PRIMARY KEY, generation TEXT NOT NULL)"
        )
        self.conn.execute(
            f"INSERT OR REPLACE INTO {_SQLITE_GENERATIONS} (table_name, generation) VALUES (?, ?)",
            (self.table.table, self.generation),
        )
        self.conn.execute("COMMIT")
        self.switch_seconds = time.perf_counter() - started
        self.conn.execute(f"DROP TABLE {_quoted(self.retired)}")
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # readers still on the old pages are not waited for

    def close(self) -> None:
        # Uncommitted, the transaction is rolled back: the current generation stays as it was.
        self.conn.close()


class SqliteTable:
    """Feast's SQLite table of a vector view: rows (entity_key, feature_name) -> value, event_ts."""

    def __init__(self, store: FeatureStore, view: FeatureView) -> None:
        from feast.infra.online_stores.sqlite import _table_id

        config = store.config
        self.path = config.online_store.path
        self.table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
        self._reader: sqlite3.Connection | None = None

    def is_empty(self, probe: list[bytes]) -> bool:
        with sqlite3.connect(self.path) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (self.table,)).fetchone() is None:
                raise CustlensError(f"online table {self.table} does not exist; run `custlens features apply` first")
            return conn.execute(f"SELECT 1 FROM {_quoted(self.table)} LIMIT 1").fetchone() is None

    def generation(self) -> str | None:
        """The generation the table holds: None before the first one, or if nobody knows."""
        with sqlite3.connect(self.path) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_SQLITE_GENERATIONS,)).fetchone() is None:
                return None
            found = conn.execute(
                f"SELECT generation FROM {_SQLITE_GENERATIONS} WHERE table_name = ?", (self.table,)
            ).fetchone()
            return None if found is None else str(found[0])

    @contextmanager
    def new_generation(self, generation: str, keep_current: bool) -> Iterator[SqliteGeneration]:
        """Write the next generation (a copy of the current one when `keep_current`, else empty);
        on leaving the block without an error readers switch to it in one step, on an error (or
        a kill) they stay on the current one."""
        writer = SqliteGeneration(self, generation, keep_current)
        try:
            yield writer
            writer.switch()
        finally:
            writer.close()

    def read(self, keys: list[bytes]) -> list[StoredRow]:
        if len(keys) <= _SQLITE_IDS_PER_SELECT:
            # One SELECT sees one generation: the one committed last when it starts.
            return self._select(self._reader or self._open_reader(), keys)
        # Several SELECTs see one generation inside one read transaction; on a connection of their
        # own, as the shared one cannot hold a transaction for one thread of a service.
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            return self._select(conn, keys)
        finally:
            conn.close()

    def _select(self, conn: sqlite3.Connection, keys: list[bytes]) -> list[StoredRow]:
        # event_ts is read as the epoch seconds the writer stored: Feast's own reader converts it
        # with the local-time `datetime.fromtimestamp` and labels the result UTC.
        found: dict[bytes, list[Any]] = {}
        for start in range(0, len(keys), _SQLITE_IDS_PER_SELECT):
            chunk = keys[start : start + _SQLITE_IDS_PER_SELECT]
            select = (
                f"SELECT entity_key, feature_name, value, event_ts FROM {_quoted(self.table)} "
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})"
            )
            # fetchall: a half-read cursor would hold its WAL snapshot and keep later reads on stale rows.
            for key, name, value, event_ts in conn.execute(select, chunk).fetchall():
                row = found.setdefault(key, [None, None, event_ts])
                if name == NUMBERS:
                    row[0] = value
                elif name == LABELS:
                    row[1] = value
        return [tuple(found[key]) if key in found else _NOTHING_STORED for key in keys]

    def _open_reader(self) -> sqlite3.Connection:
        # Kept open for the reader's life: no connect per request. A SELECT outside a transaction
        # sees every generation committed before it (the writer enables WAL), and the table's name
        # is looked up again once a switch renamed another table into it. SQLite serializes the
        # connection's use, so every thread of a service can share it.
        self._reader = self._connect()
        return self._reader

    def _connect(self) -> sqlite3.Connection:
        path = Path(self.path).resolve()
        if not path.exists():
            raise CustlensError(f"online store {path} does not exist; run `custlens features materialize` first")
        reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        # Memory-mapped pages instead of a read() per page: 25% off a 100-id read of a 1M-customer
        # store. Address space only; the pages are the OS page cache's, shared by every reader.
        reader.execute(f"PRAGMA mmap_size = {_SQLITE_READ_MMAP_BYTES}")
        return reader


class RedisGeneration:
    """The changes from the current generation of a view's hashes to the next, queued in one MULTI
    on a connection of their own and applied by its EXEC: Redis runs them as one step, which
    readers wait for and never see part of. A writer that dies before EXEC leaves nothing: Redis
    drops the queue of a client that goes away."""

    def __init__(self, hashes: RedisHashes, generation: str) -> None:
        self.hashes = hashes
        self.generation = generation
        self.switch_seconds = 0.0
        self._pool = hashes.client.connection_pool
        self._conn = self._pool.get_connection()
        self._switched = False
        try:
            self._send([("MULTI",)])
        except BaseException:
            self.close()
            raise

    def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        # One write per batch, then its replies: QUEUED for each command, until EXEC. A command
        # Redis refuses here (out of memory, say) raises, and the queue is dropped unapplied.
        self._conn.send_packed_command(self._conn.pack_commands(commands))
        return [self._conn.read_response() for _ in commands]

    def write(self, keys: list[bytes], numbers: list[bytes], labels: list[bytes], event_ts: int) -> None:
        hashes = self.hashes
        stamp = Timestamp(seconds=event_ts).SerializeToString()
        commands: list[tuple[Any, ...]] = []
        for key, number, label in zip(keys, numbers, labels, strict=True):
            name = key + hashes.suffix
            fields = (hashes.numbers_field, number, hashes.labels_field, label, hashes.ts_field, stamp)
            commands.append(("HSET", name, *fields))
            if hashes.key_ttl:
                commands.append(("EXPIRE", name, hashes.key_ttl))
        self._send(commands)

    def delete(self, keys: list[bytes]) -> None:
        # The view's fields only, as Feast deletes a view: another view's fields in the same hash stay.
        hashes = self.hashes
        fields = (hashes.numbers_field, hashes.labels_field, hashes.ts_field)
        self._send([("HDEL", key + hashes.suffix, *fields) for key in keys])

    def switch(self) -> None:
        """Apply every queued change and the generation's name at once."""
        self._send([("SET", self.hashes.generation_key, self.generation)])
        started = time.perf_counter()
        (results,) = self._send([("EXEC",)])
        self.switch_seconds = time.perf_counter() - started
        self._switched = True
        # Redis applies the rest of a transaction past a command that fails as it runs (a key
        # holding another type than a hash: nothing custlens or Feast writes).
        failed = [result for result in results or [] if isinstance(result, Exception)]
        if results is None or failed:
            raise CustlensError(f"Redis applied the new online generation only in part: {failed[:3]}")

    def close(self) -> None:
        if not self._switched:
            self._conn.disconnect()  # Redis drops what was queued
        self._pool.release(self._conn)


class RedisHashes:
    """Feast's Redis layout: a hash per entity key + project, a field per feature and a timestamp."""

    def __init__(self, store: FeatureStore, view: FeatureView) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        online_store = store._get_provider().online_store
        self.client = online_store._get_client(store.config.online_store)  # type: ignore[attr-defined]
        self.suffix = store.config.project.encode("utf-8")
        self.numbers_field = _mmh3(f"{view.name}:{NUMBERS}")
        self.labels_field = _mmh3(f"{view.name}:{LABELS}")
        self.ts_field = f"_ts:{view.name}"
        self.key_ttl = store.config.online_store.key_ttl_seconds
        # The generation the view's hashes hold. It ends with the project, as Feast's keys do, so
        # clearing a project's keys clears it too; it does not start with an entity key, so Feast's
        # own scans (teardown, deleting a view) never meet it.
        self.generation_key = f"custlens:online-generation:{view.name}:".encode() + self.suffix

    def is_empty(self, probe: list[bytes]) -> bool:
        # No table to look at: a store emptied behind our back (flushed, restarted) lacks these keys.
        return not any(self.client.exists(key + self.suffix) for key in probe)

    def generation(self) -> str | None:
        """The generation the hashes hold: None before the first one, or if nobody knows."""
        found = self.client.get(self.generation_key)
        return None if found is None else found.decode()

    @contextmanager
    def new_generation(self, generation: str, keep_current: bool) -> Iterator[RedisGeneration]:
        """The changes to the next generation; readers switch to it in one step on leaving the block
        without an error. Unchanged customers keep their hashes whether or not `keep_current`:
        customers of the current generation that the next has not are for `delete`."""
        writer = RedisGeneration(self, generation)
        try:
            yield writer
            writer.switch()
        finally:
            writer.close()

    def read(self, keys: list[bytes]) -> list[StoredRow]:
        fields = (self.numbers_field, self.labels_field, self.ts_field)
        # In one MULTI when there are several: another client's EXEC (a switch) can come between
        # the commands of a plain pipeline, not between those of a transaction.
        with self.client.pipeline(transaction=len(keys) > 1) as pipe:
            for key in keys:
                pipe.hmget(key + self.suffix, fields)
            answers = pipe.execute()
        return [(numbers, labels, _epoch_seconds(stamp)) for numbers, labels, stamp in answers]


def _epoch_seconds(stamp: bytes | None) -> float | None:
    if not stamp:
        return None
    parsed = Timestamp.FromString(stamp)
    return parsed.seconds + parsed.nanos / 1e9


def online_table(store: FeatureStore, view: FeatureView) -> SqliteTable | RedisHashes:
    """The online store's storage of a vector view (NUMBERS and LABELS), for bulk reads, and
    writes of a whole new generation that readers switch to in one step."""
    if store.config.online_store.type == "redis":
        return RedisHashes(store, view)
    return SqliteTable(store, view)


def record_materialization(store: FeatureStore, view: FeatureView, start: datetime, end: datetime) -> None:
    """Tell the registry that `view` holds [start, end], as Feast's own materialize does after writing."""
    store.registry.apply_materialization(view, store.project, start, end, commit=True)


# ---------------------------------------------------------------------------------------------
# Applying the repo


def parse_definitions(repo_dir: Path, project: str, import_root: Path) -> Any:
    """The objects the repo's modules define (Feast's RepoContents), with the project itself.

    Feast imports each module under its path from the working directory, so they are imported
    from `import_root`; and afresh, because the definitions read the data directory when imported
    and Feast would reuse a module imported before.
    """
    from feast.project import Project
    from feast.repo_operations import parse_repo

    package = ".".join(repo_dir.relative_to(import_root).parts)
    for module in [name for name in sys.modules if name == package or name.startswith(f"{package}.")]:
        del sys.modules[module]
    previous = Path.cwd()
    os.chdir(import_root)
    try:
        contents = parse_repo(repo_dir)
    finally:
        os.chdir(previous)
    contents.projects.append(Project(name=project))
    return contents


def apply_real_changes(store: FeatureStore, contents: Any) -> tuple[str, ...]:
    """Apply what differs between `contents` and the registry; the changes, as "created feature
    view purchases", ...; nothing is written when nothing really changed.

    Feast's own apply rewrites every object's timestamps, and after a materialization reports
    a data source's `meta` as changed forever; only real differences are applied here.
    """
    from feast.diff.property_diff import TransitionType

    registry_diff, infra_diff, new_infra = store.plan(contents)
    changes = tuple(
        f"{diff.transition_type.name.lower()} {diff.feast_object_type.value} {diff.name}"
        for diff in registry_diff.feast_object_diffs
        if diff.transition_type != TransitionType.UNCHANGED and _really_changed(diff)
    )
    if changes:
        store._apply_diffs(registry_diff, infra_diff, new_infra)
    return changes


def _really_changed(diff: Any) -> bool:
    from feast.diff.property_diff import TransitionType

    if diff.transition_type != TransitionType.UPDATE:
        return True
    for property_diff in diff.feast_object_property_diffs:
        existing, declared = property_diff.val_existing, property_diff.val_declared
        if hasattr(existing, "DESCRIPTOR") and "meta" in existing.DESCRIPTOR.fields_by_name:
            existing_copy, declared_copy = type(existing)(), type(declared)()
            existing_copy.CopyFrom(existing)
            declared_copy.CopyFrom(declared)
            existing_copy.ClearField("meta")
            declared_copy.ClearField("meta")
            if existing_copy == declared_copy:
                continue
        return True
    return False
