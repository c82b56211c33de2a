"""Find a business's export files and read them in bounded chunks of raw strings, each row
carrying its row number in the file. Refuses, with the file named, what cannot be read."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from features.lake.contracts import CONTRACTS, TableContract

ROW_NUMBER = "_row_number"  # 1-based position among the file's data rows (the header is not a row)
FileFormat = Literal["csv", "parquet"]
_CSV_BLOCK_BYTES = 8 << 20
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class ExportFile:
    """One input file, its header, and how it relates to the table's contract."""

    table: str
    path: Path
    format: FileFormat
    header: tuple[str, ...]

    @property
    def contract(self) -> TableContract:
        return CONTRACTS[self.table]

    @property
    def columns(self) -> tuple[str, ...]:
        """The contract's columns this file has, in contract order: the ones we read."""
        return tuple(name for name in self.contract.column_names if name in self.header)

    @property
    def extra_columns(self) -> tuple[str, ...]:
        return tuple(name for name in self.header if name not in self.contract.column_names)

    @property
    def progress_total(self) -> int:
        """Bytes for CSV, rows for Parquet: what `Chunk.progress` counts towards."""
        if self.format == "csv":
            return self.path.stat().st_size
        with pq.ParquetFile(self.path) as parquet:
            return parquet.metadata.num_rows


@dataclass(frozen=True)
class Chunk:
    rows: pa.Table  # ROW_NUMBER (int64) + the file's contract columns, all strings, no nulls from CSV
    progress: int  # bytes (CSV) or rows (Parquet) consumed so far


def find_exports(source_dir: Path) -> dict[str, ExportFile | None]:
    """The export of each contract table in `source_dir` (None when absent), headers checked.

    Everything a user can get wrong about the files themselves is refused here, before any
    work: a missing required table, a table given twice, a file that is not what its
    extension says, a missing required column.
    """
    if not source_dir.is_dir():
        raise CustlensError(f"source folder {source_dir} does not exist; pass --source with the folder of exports")
    found: dict[str, ExportFile | None] = {}
    for table, contract in CONTRACTS.items():
        candidates = [source_dir / f"{table}.{extension}" for extension in ("csv", "parquet")]
        present = [path for path in candidates if path.is_file()]
        if len(present) == 2:
            raise CustlensError(
                f"both {present[0]} and {present[1]} exist; keep one export per table (remove the other)"
            )
        if not present:
            if contract.required_input:
                raise CustlensError(
                    f"required export {candidates[0]} (or {candidates[1].name}) is missing in {source_dir}"
                )
            found[table] = None
            continue
        path = present[0]
        file_format: FileFormat = "csv" if path.suffix == ".csv" else "parquet"
        header = _csv_header(path) if file_format == "csv" else _parquet_header(path)
        export = ExportFile(table, path, file_format, header)
        _check_header(export)
        found[table] = export
    return found


def _csv_header(path: Path) -> tuple[str, ...]:
    with path.open("rb") as handle:
        first_line = handle.readline(1 << 20)
    if first_line.startswith(_PARQUET_MAGIC):
        raise CustlensError(f"{path} is a Parquet file, not CSV; rename it to {path.with_suffix('.parquet').name}")
    if not first_line.strip():
        raise CustlensError(f"{path} is empty; a CSV export needs a header row naming its columns")
    try:
        header = next(csv.reader([first_line.decode("utf-8-sig")]))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CustlensError(f"{path} is not a UTF-8 CSV file ({exc}); export it as UTF-8 CSV") from None
    header = [name.strip() for name in header]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise CustlensError(f"{path} names the column(s) {', '.join(duplicated)} more than once in its header")
    return tuple(header)


def _parquet_header(path: Path) -> tuple[str, ...]:
    try:
        with pq.ParquetFile(path) as parquet:
            return tuple(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise CustlensError(f"{path} is not a readable Parquet file ({exc})") from None


def _check_header(export: ExportFile) -> None:
    missing = [name for name in export.contract.required_columns if name not in export.header]
    if missing:
        hint = " (is it comma-separated?)" if export.format == "csv" and len(export.header) == 1 else ""
        raise CustlensError(
            f"{export.path} is missing required column(s) {', '.join(missing)} of table {export.table}{hint}; "
            f"it has: {', '.join(export.header) or 'no columns'}"
        )


def iter_chunks(export: ExportFile, chunk_rows: int) -> Iterator[Chunk]:
    """The file's contract columns as strings, `chunk_rows` rows at a time, in file order."""
    batches = _csv_batches(export) if export.format == "csv" else _parquet_batches(export, chunk_rows)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    first_row = 1
    progress = 0
    for batch, progress in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=pending[0].schema)
            yield Chunk(_numbered(table.slice(0, chunk_rows), first_row), progress)
            first_row += chunk_rows
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows or first_row == 1:
        schema = pending[0].schema if pending else _string_schema(export.columns)
        yield Chunk(_numbered(pa.Table.from_batches(pending, schema=schema), first_row), progress)


def _numbered(table: pa.Table, first_row: int) -> pa.Table:
    numbers = pa.array(range(first_row, first_row + table.num_rows), type=pa.int64())
    return table.combine_chunks().add_column(0, ROW_NUMBER, numbers)


def _string_schema(columns: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(name, pa.string()) for name in columns])


def _csv_batches(export: ExportFile) -> Iterator[tuple[pa.RecordBatch, int]]:
    read_options = pv.ReadOptions(column_names=list(export.header), skip_rows=1, block_size=_CSV_BLOCK_BYTES)
    # quoted values may span lines (a customer's comment); everything stays text until we parse it
    parse_options = pv.ParseOptions(newlines_in_values=True)
    convert_options = pv.ConvertOptions(
        column_types={name: pa.string() for name in export.header},
        include_columns=list(export.columns),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        with pa.OSFile(str(export.path)) as source:
            reader = pv.open_csv(source, read_options, parse_options, convert_options)
            try:
                for batch in reader:
                    yield batch, source.tell()
            finally:
                reader.close()  # join Arrow's read-ahead thread now, not at interpreter exit
    except pa.ArrowInvalid as exc:
        raise CustlensError(f"{export.path} cannot be read as a UTF-8 CSV file: {_first_line(exc)}") from None


def _parquet_batches(export: ExportFile, chunk_rows: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    schema = _string_schema(export.columns)
    done = 0
    try:
        with pq.ParquetFile(export.path) as parquet:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(export.columns)):
                done += batch.num_rows
                yield _as_strings(batch, schema, export), done
    except (pa.ArrowException, OSError) as exc:
        raise CustlensError(f"{export.path} cannot be read as a Parquet file: {_first_line(exc)}") from None


def _as_strings(batch: pa.RecordBatch, schema: pa.Schema, export: ExportFile) -> pa.RecordBatch:
    """Typed Parquet columns become the text our parsers read (timestamps in ISO form, etc.)."""
    arrays = []
    for name in schema.names:
        column = batch.column(name)
        try:
            arrays.append(column if column.type == pa.string() else column.cast(pa.string()))
        except pa.ArrowException as exc:
            raise CustlensError(
                f"{export.path}: column {name} of type {column.type} cannot be read as text ({_first_line(exc)})"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
