"""The online store holds one generation at a time: readers (ours, and stock Feast's) see the
previous materialization whole or the next one whole, never a mix, whether the run ends, fails or
is killed at any moment; the files materialize writes beside the store never let a later run skip
a customer; a customer the snapshot no longer has is no longer served; one run at a time."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from custlens.errors import CustlensError
from custlens.settings import FeastSettings, Settings
from features import feast_format, layout, online
from features.catalog import PACKED_LABELS
from features.lake.tables import cutoff_instant
from features.online import VECTOR_VIEW, OnlineFeatures, materialize
from features.snapshot_reader import PackedSnapshot, load_packed_snapshot
from features.store import apply_definitions, feature_store
from tests.support.feature_snapshots import synthetic_values, write_snapshot
from tests.support.processes import wait_for

OCTOBER, NOVEMBER = date(2026, 10, 1), date(2026, 11, 1)
# Enough customers, written 1,000 at a time (the least allowed), for a run to be a few tenths of
# a second of batches a kill can land between.
CUSTOMERS = [f"C{i:05d}" for i in range(10_000)]
BATCH_ROWS = 1_000
KILL_TRIALS = 8
# Bounds for a hung run, not measures of a slow one.
RUN_BOUND_SECONDS = 300
STOCK_SAMPLE = 200  # ids stock Feast reads after each trial (all of them would take seconds)


@dataclass(frozen=True)
class Version:
    """One snapshot's files and what the online store serves once they are materialized."""

    name: str
    cutoff: date
    folder: Path
    snapshot: PackedSnapshot

    def install(self, data_dir: Path) -> None:
        """Put this version's files in the data folder, each in one rename."""
        for path in (self.folder / "features").rglob("*.parquet"):
            target = data_dir / path.relative_to(self.folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(path, partial)
            os.replace(partial, target)

    def matches(self, rows: online.OnlineRows) -> np.ndarray:
        """Per row read: whether it is this version's row of that customer."""
        positions = [int(customer_id[1:]) for customer_id in rows.customer_ids]  # CUSTOMERS[i] is C{i:05d}
        expected = self.snapshot.numbers[positions]
        same_numbers = ((rows.numbers == expected) | (np.isnan(rows.numbers) & np.isnan(expected))).all(axis=1)
        labels = [[label or None for label in self.snapshot.labels[i]] for i in positions]
        same_labels = np.array([ours == theirs for ours, theirs in zip(rows.labels, labels, strict=True)])
        instant = cutoff_instant(self.cutoff)
        same_time = np.array([stamp == instant for stamp in rows.feature_time])
        return rows.known & same_numbers & same_labels & same_time


def make_version(library: Path, name: str, cutoff: date, values: dict[str, list]) -> Version:
    folder = library / name
    write_snapshot(folder, cutoff, CUSTOMERS, values)
    snapshot = load_packed_snapshot(Settings(data_dir=folder), cutoff)
    assert snapshot.customer_ids == CUSTOMERS
    return Version(name, cutoff, folder, snapshot)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Version]:
    """A: a snapshot; B: the same cutoff rebuilt with every other customer changed (an incremental
    run); C: the next cutoff (a full load)."""
    folder = tmp_path_factory.mktemp("versions")
    first = synthetic_values(CUSTOMERS, OCTOBER, 1)
    other = synthetic_values(CUSTOMERS, OCTOBER, 2)
    rebuilt = {name: [o if i % 2 else f for i, (f, o) in enumerate(zip(column, other[name], strict=True))]
               for name, column in first.items()}  # fmt: skip
    return {
        "A": make_version(folder, "A", OCTOBER, first),
        "B": make_version(folder, "B", OCTOBER, rebuilt),
        "C": make_version(folder, "C", NOVEMBER, synthetic_values(CUSTOMERS, NOVEMBER, 3)),
    }


def online_settings(data_dir: Path, feast: FeastSettings | None) -> Settings:
    feast = (feast or FeastSettings()).model_copy(update={"materialize_batch_rows": BATCH_ROWS})
    return Settings(data_dir=data_dir, feast=feast)


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A store of our own (SQLite, then the real Redis), definitions applied and nothing written."""
    feast = request.getfixturevalue("redis_feast") if request.param == "redis" else None
    settings = online_settings(tmp_path / "data", feast)
    return settings


def materialized(settings: Settings, version: Version) -> Settings:
    version.install(settings.data_dir)
    apply_definitions(settings)
    materialize(settings, version.cutoff)
    return settings


def served(readers: list[OnlineFeatures], versions: list[Version]) -> str:
    """The version every reader serves for every customer; fails on a mix, naming the counts."""
    names = set()
    for reader in readers:
        rows = reader.read(CUSTOMERS)
        matches = {version.name: version.matches(rows) for version in versions}
        whole = [name for name, rows_match in matches.items() if rows_match.all()]
        if not whole:
            holders = ("+".join(n for n, m in matches.items() if m[i]) or "neither" for i in range(len(rows.known)))
            counts = Counter(holders)
            raise AssertionError(f"the online store serves a mix of generations: {dict(counts)}")
        names.add(whole[0])
    assert len(names) == 1, f"readers disagree: {names}"
    return names.pop()


def stock_feast_serves(store: Any, version: Version) -> None:
    """Stock `get_online_features`, on a FeatureStore kept open across switches, reads `version`."""
    sample = random.Random(len(version.name)).sample(range(len(CUSTOMERS)), STOCK_SAMPLE)
    answer = store.get_online_features(
        features=[f"{VECTOR_VIEW}:numbers", f"{VECTOR_VIEW}:labels"],
        entity_rows=[{"customer_id": CUSTOMERS[i]} for i in sample],
    ).to_dict()
    np.testing.assert_array_equal(np.array(answer["numbers"], dtype="float64"), version.snapshot.numbers[sample])
    assert answer["labels"] == [version.snapshot.labels[i] for i in sample]


def side_file_problems(settings: Settings) -> list[str]:
    """Why the digests and the packed source are not those of the generation the store holds."""
    store = feature_store(settings)
    generation = feast_format.online_table(store, store.get_feature_view(VECTOR_VIEW)).generation()
    problems = []
    for path in (online._digest_path(settings), layout.packed_path(settings.data_dir.resolve())):
        if (pq.read_schema(path).metadata or {}).get(b"generation") != str(generation).encode():
            problems.append(f"{path.name} is not of generation {generation}")
        problems += [f"{waiting.name} waits" for waiting in path.parent.glob(f"{path.name}.generation-*")]
        problems += [f"{partial.name} left" for partial in path.parent.glob(f".{path.name}*.partial")]
    return problems


# ---------------------------------------------------------------------------------------------
# SIGKILL at random moments, as the batch job's test does (tests/service/test_batch.py): each
# trial runs materialize in a child of a fork server that imported custlens once, and kills it
# after a random delay.


def materialize_in_child(settings: Settings, cutoff: date, writing: Path) -> None:
    """`materialize`, touching `writing` when it starts encoding rows for the store."""
    encode = feast_format.double_list_bytes

    def noting(numbers: np.ndarray) -> list[bytes]:
        writing.touch()
        return encode(numbers)

    feast_format.double_list_bytes = noting  # this child's copy of the module only
    materialize(settings, cutoff)


def killed_right_after_the_switch(settings: Settings, cutoff: date) -> None:
    """`materialize`, killed once the store switched, before its side files take their places."""
    settle = online._settle_side_files
    calls: list[object] = []

    def settle_or_die(settings: Settings, generation: str | None) -> None:
        calls.append(generation)
        if len(calls) == 2:  # the first settles what the last run left; the second follows the switch
            os.kill(os.getpid(), signal.SIGKILL)
        settle(settings, generation)

    online._settle_side_files = settle_or_die
    materialize(settings, cutoff)


@pytest.fixture(scope="module")
def fork_server() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["features.online", __name__])
    return context


def run_to_end(fork_server: multiprocessing.context.ForkServerContext, target: Callable[..., None], *args: Any) -> int:
    process = fork_server.Process(target=target, args=args)
    process.start()
    process.join(timeout=RUN_BOUND_SECONDS)
    assert process.exitcode is not None, "the run hung"
    return process.exitcode


@pytest.mark.parametrize("change", ["incremental", "full"])
def test_a_materialize_killed_at_any_moment_leaves_one_whole_generation(
    store_settings: Settings,
    library: dict[str, Version],
    fork_server: multiprocessing.context.ForkServerContext,
    change: str,
    tmp_path: Path,
) -> None:
    # given a store holding A, and readers opened on it that stay open across every switch
    settings = materialized(store_settings, library["A"])
    before, after = library["A"], library["B" if change == "incremental" else "C"]
    after.install(settings.data_dir)  # B replaces A's files; C is the next cutoff's, beside them
    readers = [OnlineFeatures(settings)]
    stock = feature_store(settings)
    assert served(readers, [before]) == "A"
    writing = tmp_path / "writing"
    assert run_to_end(fork_server, time.sleep, 0) == 0  # the fork server started, custlens imported
    durations = []  # from the start of a run to its expected end: the faster of two (a busy machine)
    for _ in range(2):
        started = time.monotonic()
        assert run_to_end(fork_server, materialize_in_child, settings, after.cutoff, writing) == 0
        durations.append(time.monotonic() - started)
        before.install(settings.data_dir)
        materialize(settings, before.cutoff)
        after.install(settings.data_dir)
    duration = min(durations)

    rng = random.Random(20261001)
    outcomes = []
    for trial in range(KILL_TRIALS):
        # when a run towards the other version is killed at a random moment
        after.install(settings.data_dir)
        writing.unlink(missing_ok=True)
        process = fork_server.Process(target=materialize_in_child, args=(settings, after.cutoff, writing))
        process.start()
        if trial % 2 == 0:
            # Anywhere in the run: stratified over [0, duration] so the trials cover all of it.
            time.sleep(duration * (trial / 2 + rng.random()) / (KILL_TRIALS / 2))
        else:
            # Inside the write: once rows are being encoded for the store.
            assert wait_for(writing.exists, process, RUN_BOUND_SECONDS)
            time.sleep(rng.uniform(0.0, duration / 3))
        process.kill()  # SIGKILL
        process.join(timeout=RUN_BOUND_SECONDS)
        assert process.exitcode in (-signal.SIGKILL, 0)

        # then every reader, a fresh one too, sees the old version whole or the new one whole
        name = served([*readers, OnlineFeatures(settings)], [before, after])
        stock_feast_serves(stock, library[name])
        outcomes.append(name)
        # and the next run, back to the old version, leaves exactly it (none skipped as unchanged)
        before.install(settings.data_dir)
        materialize(settings, before.cutoff)
        assert served(readers, [before]) == "A", f"trial {trial}: the run after the kill left customers behind"
        stock_feast_serves(stock, before)
        assert side_file_problems(settings) == []
    assert "A" in outcomes, outcomes  # some kills landed before the switch


def switched_to_b_and_killed(
    settings: Settings, library: dict[str, Version], fork_server: multiprocessing.context.ForkServerContext
) -> Settings:
    """A store that held A, after a run towards B killed right after its switch: readers see B."""
    materialized(settings, library["A"])
    library["B"].install(settings.data_dir)
    assert run_to_end(fork_server, killed_right_after_the_switch, settings, OCTOBER) == -signal.SIGKILL
    assert served([OnlineFeatures(settings)], [library["A"], library["B"]]) == "B"
    return settings


def test_killed_right_after_the_switch_the_next_run_finishes_its_side_files(
    store_settings: Settings, library: dict[str, Version], fork_server: multiprocessing.context.ForkServerContext
) -> None:
    # given a store holding A, and a run towards B killed once the store switched to B
    settings = switched_to_b_and_killed(store_settings, library, fork_server)

    # then its digests and packed source are still waiting beside A's
    assert len(side_file_problems(settings)) == 4  # two files of A's generation, two of B's waiting
    # when the next run materializes the same B, it first puts B's side files in place: nothing
    # changed since the generation the store holds, so nothing is written
    report = materialize(settings, OCTOBER)
    assert (report.written, report.full) == (0, False)
    assert side_file_problems(settings) == []
    packed = pq.read_table(layout.packed_path(settings.data_dir.resolve()))
    assert packed.column("customer_id").to_pylist() == CUSTOMERS
    assert np.array(packed.column("numbers").to_pylist()).tobytes() == library["B"].snapshot.numbers.tobytes()


def test_killed_right_after_the_switch_a_run_back_to_the_old_snapshot_skips_nobody(
    store_settings: Settings, library: dict[str, Version], fork_server: multiprocessing.context.ForkServerContext
) -> None:
    # given a run from A to B killed once the store switched, before B's digests took A's place
    settings = switched_to_b_and_killed(store_settings, library, fork_server)

    # when A's files come back and are materialized (A's digests, if trusted, would say: nothing changed)
    library["A"].install(settings.data_dir)
    report = materialize(settings, OCTOBER)

    # then every customer B changed is written back
    assert report.written >= len(CUSTOMERS) // 2
    assert served([OnlineFeatures(settings)], [library["A"]]) == "A"
    assert side_file_problems(settings) == []


# ---------------------------------------------------------------------------------------------
# Readers while materializations run


def test_readers_during_materializations_see_one_generation_or_the_next(
    store_settings: Settings, library: dict[str, Version], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a store holding A and a reader reading every customer (four SELECTs in SQLite, one
    # MULTI of 10,000 HMGETs in Redis) and a few, over and over
    monkeypatch.setattr(feast_format, "_SQLITE_IDS_PER_SELECT", len(CUSTOMERS) // 4)
    settings = materialized(store_settings, library["A"])
    versions = [library["A"], library["B"]]
    reader = OnlineFeatures(settings)
    seen: Counter[str] = Counter()
    mixes: list[str] = []
    stop = threading.Event()

    def read_until_stopped() -> None:
        while not stop.is_set():
            for ids in (CUSTOMERS, CUSTOMERS[::97]):
                rows = reader.read(ids)
                whole = [v.name for v in versions if v.matches(rows).all()]
                if whole:
                    seen[whole[0] if len(whole) == 1 else "either"] += 1
                else:
                    mixes.append(str({v.name: int(v.matches(rows).sum()) for v in versions}))

    thread = threading.Thread(target=read_until_stopped)
    thread.start()
    try:
        # when the store goes from A to B and back, twice
        for version in [library["B"], library["A"], library["B"], library["A"]]:
            version.install(settings.data_dir)
            assert not materialize(settings, OCTOBER).full
    finally:
        stop.set()
        thread.join()

    # then no read saw a mix, and reads saw both
    assert mixes == []
    assert seen["A"] and seen["B"], seen


# ---------------------------------------------------------------------------------------------
# What a generation holds, and who writes it


def test_a_customer_the_snapshot_no_longer_has_is_no_longer_served(
    store_settings: Settings, library: dict[str, Version]
) -> None:
    # given a store holding A for every customer
    settings = materialized(store_settings, library["A"])
    values = synthetic_values(CUSTOMERS, OCTOBER, 1)
    gone = {CUSTOMERS[3], CUSTOMERS[5_000]}
    kept = [i for i, customer_id in enumerate(CUSTOMERS) if customer_id not in gone]

    # when the snapshot is rebuilt without two of them (merged into others at the last ingest, say)
    write_snapshot(settings.data_dir, OCTOBER, [CUSTOMERS[i] for i in kept],
                   {name: [column[i] for i in kept] for name, column in values.items()})  # fmt: skip
    report = materialize(settings, OCTOBER)

    # then only they are gone, and nothing else was written
    assert (report.written, report.removed, report.full) == (0, 2, False)
    rows = OnlineFeatures(settings).read(CUSTOMERS)
    assert {CUSTOMERS[i] for i in np.flatnonzero(~rows.known)} == gone
    assert rows.labels[3] == [None] * len(PACKED_LABELS)


def test_a_run_that_fails_midway_leaves_the_store_as_it_was(
    store_settings: Settings, library: dict[str, Version], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = materialized(store_settings, library["A"])
    library["B"].install(settings.data_dir)
    encode, batches = feast_format.double_list_bytes, []

    def fail_at_the_third_batch(numbers: np.ndarray) -> list[bytes]:
        batches.append(len(numbers))
        if len(batches) == 3:
            raise OSError("disk full")
        return encode(numbers)

    monkeypatch.setattr(feast_format, "double_list_bytes", fail_at_the_third_batch)

    with pytest.raises(OSError, match="disk full"):
        materialize(settings, OCTOBER)

    monkeypatch.undo()
    assert served([OnlineFeatures(settings)], [library["A"], library["B"]]) == "A"
    assert materialize(settings, OCTOBER).written == len(CUSTOMERS) // 2
    assert served([OnlineFeatures(settings)], [library["B"]]) == "B"
    assert side_file_problems(settings) == []


def test_a_second_materialize_while_one_runs_is_refused(tmp_path: Path, library: dict[str, Version]) -> None:
    settings = materialized(online_settings(tmp_path / "data", None), library["A"])

    with online._only_run(settings), pytest.raises(CustlensError, match="another `custlens features materialize`"):
        materialize(settings, OCTOBER)

    assert materialize(settings, OCTOBER).written == 0  # the lock went with the run that held it


def test_a_sqlite_generation_keeps_feasts_table_definition_and_readers_use_its_key(
    tmp_path: Path, library: dict[str, Version]
) -> None:
    import sqlite3

    settings = online_settings(tmp_path / "data", None)
    library["A"].install(settings.data_dir)
    apply_definitions(settings)
    store = feature_store(settings)
    table = feast_format.SqliteTable(store, store.get_feature_view(VECTOR_VIEW))
    with sqlite3.connect(table.path) as conn:
        feasts = conn.execute(f'PRAGMA table_info("{table.table}")').fetchall()

    materialize(settings, OCTOBER)
    library["B"].install(settings.data_dir)
    materialize(settings, OCTOBER)

    with sqlite3.connect(table.path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        ours = conn.execute(f'PRAGMA table_info("{table.table}")').fetchall()
        plan = conn.execute(
            f'EXPLAIN QUERY PLAN SELECT entity_key, feature_name, value, event_ts FROM "{table.table}" '
            "WHERE entity_key IN (?, ?) ORDER BY entity_key",
            feast_format.entity_key_bytes("customer_id", CUSTOMERS[:2]),
        ).fetchall()
    # Feast's columns, types and primary key, under Feast's name; no generation left behind
    assert ours == feasts
    assert table.table in tables and [name for name in tables if "__custlens" in name] == []
    # Feast's query (online_read's) finds rows by the primary key's index, not by a scan
    assert any("USING INDEX sqlite_autoindex" in str(step) for step in plan), plan
