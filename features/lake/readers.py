"""Find a business's exports (files, globs or a DuckDB query, as `ingest.tables` describes them) and
read them in bounded chunks of raw strings under the contract's column names, each row carrying its
row number. Refuses, with the file and the config key to set named, what cannot be read."""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from custlens.settings import CsvOptions, Settings, TableSource
from features.lake.contracts import CONTRACTS, TableContract
from features.lake.tables import duckdb_connect, sql_literal

ROW_NUMBER = "_row_number"  # 1-based position among the table's data rows (headers are not rows), across files
IDENTITY_PREFIX = "_identity__"  # chunk column of a declared identity key: IDENTITY_PREFIX + its file column name
FileFormat = Literal["csv", "parquet", "sql"]
_CSV_BLOCK_BYTES = 8 << 20
_PARQUET_MAGIC = b"PAR1"
_GLOB_CHARACTERS = frozenset("*?[")
# Whitespace-separated text is read one line per value and split in Arrow (pyarrow's CSV reader
# has no regex delimiter). The unit separator is a control character that text exports do not contain.
_WHOLE_LINE = "\x1f"
_LINE_COLUMN = "_line"
_ASCII_WHITESPACE = " \t\r\n\v\f"  # what Arrow's ascii_split_whitespace splits at (runs count once)


@dataclass(frozen=True)
class ExportFile:
    """One table's export (a file, the files a glob matches, or a query) and how it maps onto the
    table's contract."""

    table: str
    path: Path  # the first file (the --source folder for a query): what reports and quarantine name
    format: FileFormat
    header: tuple[str, ...]  # the file's column names; "1", "2", ... without a header; a query's result columns
    paths: tuple[Path, ...] = ()  # every file read, in order; () for a query
    mapping: dict[str, str] = field(default_factory=dict)  # contract column -> the file column read for it
    defaults: dict[str, str] = field(default_factory=dict)  # contract column -> constant for absent/empty values
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # contract column -> {file value: contract value}
    identity_columns: tuple[str, ...] = ()  # file columns of ingest.identity_keys (customers only)
    source: TableSource = field(default_factory=TableSource)  # decimal, thousands, timestamp_format, date_order
    source_dir: Path | None = None  # where a query's relative file names are resolved
    pattern: str | None = None  # the configured file name or glob, when there was one

    @property
    def contract(self) -> TableContract:
        return CONTRACTS[self.table]

    @property
    def columns(self) -> tuple[str, ...]:
        """The contract columns chunks carry, in contract order: read from the file or given as defaults."""
        return tuple(name for name in self.contract.column_names if name in self.mapping or name in self.defaults)

    @property
    def derived(self) -> tuple[str, ...]:
        """Required contract columns that neither the file nor `defaults` give: ingest derives them."""
        return tuple(name for name in self.contract.required_columns if name not in self.columns)

    @property
    def extra_columns(self) -> tuple[str, ...]:
        read = set(self.mapping.values()) | set(self.identity_columns)
        return tuple(name for name in self.header if name not in read)

    @property
    def progress_total(self) -> int:
        """Bytes for text, rows for Parquet, 0 (unknown) for a query: what `Chunk.progress` counts towards."""
        if self.format == "csv":
            return sum(path.stat().st_size for path in self.paths)
        if self.format == "parquet":
            return sum(_parquet_rows(path) for path in self.paths)
        return 0

    @property
    def origin(self) -> str:
        """Where the rows come from, for people: a file name, a glob's matches, or the query."""
        if self.format == "sql":
            return "sql query"
        if len(self.paths) > 1:
            return f"{len(self.paths)} files matching {self.pattern}"
        return self.path.name

    def with_defaults(self, extra: Mapping[str, str]) -> ExportFile:
        """A copy that also fills these contract columns with constants (`extra` wins over config)."""
        return dataclasses.replace(self, defaults={**self.defaults, **extra})

    @property
    def _place(self) -> str:
        """The origin spelled for error messages: full path, glob and folder, or the config key."""
        if self.format == "sql":
            return f"the query ingest.tables.{self.table}.sql"
        if len(self.paths) > 1:
            return f"{self.origin} in {self.path.parent}"
        return str(self.path)


@dataclass(frozen=True)
class Chunk:
    rows: pa.Table  # ROW_NUMBER (int64), export.columns, identity columns; all strings, no nulls from text
    progress: int  # bytes (text) or rows (Parquet) consumed so far; 0 for a query


# ---------------------------------------------------------------- finding the exports


def find_exports(source_dir: Path, settings: Settings) -> dict[str, ExportFile | None]:
    """The export of each contract table (None when absent), as `ingest.tables` describes it or
    else <table>.csv / <table>.parquet under `source_dir`; headers, mapping and identity keys checked.

    Everything a user can get wrong about the files or their description is refused here, before
    any work: a missing orders export, a table given twice, a file that is not what its extension
    says, a mapped column the file lacks, a required column that is neither read, given nor derivable.
    """
    if not source_dir.is_dir():
        raise CustlensError(f"source folder {source_dir} does not exist; pass --source with the folder of exports")
    found: dict[str, ExportFile | None] = {}
    for table, contract in CONTRACTS.items():
        source = settings.ingest.tables.get(table, TableSource())
        identity_keys = tuple(settings.ingest.identity_keys) if table == "customers" else ()
        if source.sql:
            found[table] = _query_export(table, source, source_dir, identity_keys)
            continue
        paths = _configured_files(table, source.file, source_dir) if source.file else _default_files(table, source_dir)
        if not paths:
            if contract.required_input:
                configs = sorted(path.name for path in source_dir.glob("*.y*ml") if path.suffix in (".yaml", ".yml"))
                hint = f" (in a config: did you mean --config {source_dir / configs[0]}?)" if configs else ""
                raise CustlensError(
                    f"required export {source_dir / f'{table}.csv'} (or {table}.parquet) is missing in {source_dir}; "
                    f"if your {table} file has another name, set ingest.tables.{table}.file{hint}"
                )
            found[table] = None
            continue
        found[table] = _file_export(table, paths, source, source_dir, identity_keys)
    return found


def _default_files(table: str, source_dir: Path) -> tuple[Path, ...]:
    present = tuple(path for path in (source_dir / f"{table}.csv", source_dir / f"{table}.parquet") if path.is_file())
    if len(present) == 2:
        raise CustlensError(f"both {present[0]} and {present[1]} exist; keep one export per table (remove the other)")
    return present


def _configured_files(table: str, pattern: str, source_dir: Path) -> tuple[Path, ...]:
    if _GLOB_CHARACTERS & set(pattern):
        try:
            paths = tuple(sorted(path for path in source_dir.glob(pattern) if path.is_file()))
        except (ValueError, NotImplementedError) as exc:  # an absolute or malformed pattern
            raise CustlensError(f"ingest.tables.{table}.file: {pattern!r} is not a usable glob ({exc})") from None
    else:
        path = source_dir / pattern
        paths = (path,) if path.is_file() else ()
    if not paths:
        raise CustlensError(
            f"ingest.tables.{table}.file: no file matches {pattern!r} in {source_dir}; "
            "give a file name or glob relative to --source"
        )
    return paths


def _file_export(
    table: str, paths: tuple[Path, ...], source: TableSource, source_dir: Path, identity_keys: tuple[str, ...]
) -> ExportFile:
    formats = {_format_of(path) for path in paths}
    if len(formats) > 1:
        raise CustlensError(
            f"ingest.tables.{table}.file: {source.file!r} matches both Parquet and text files in {source_dir}; "
            "make the glob match one kind"
        )
    file_format = formats.pop()
    header = _header(paths[0], file_format, table, source.csv)
    for path in paths[1:]:
        other = _header(path, file_format, table, source.csv)
        if other != header:
            raise CustlensError(
                f"{path} has the columns {', '.join(other)} but {paths[0]} has {', '.join(header)}; "
                f"every file matching {source.file!r} must have the same header"
            )
    export = ExportFile(
        table,
        paths[0],
        file_format,
        header,
        paths=paths,
        defaults=dict(source.defaults),
        values={column: dict(mapping) for column, mapping in source.values.items()},
        source=source,
        source_dir=source_dir,
        pattern=source.file,
    )
    return _mapped_and_checked(export, identity_keys)


def _query_export(table: str, source: TableSource, source_dir: Path, identity_keys: tuple[str, ...]) -> ExportFile:
    with _query_connection(table, source_dir) as con:
        try:
            header = tuple(con.sql(_query_text(source)).columns)  # binds the query; reads no rows
        except duckdb.Error as exc:
            raise _query_error(table, exc) from None
    export = ExportFile(
        table,
        source_dir,
        "sql",
        header,
        defaults=dict(source.defaults),
        values={column: dict(mapping) for column, mapping in source.values.items()},
        source=source,
        source_dir=source_dir,
    )
    return _mapped_and_checked(export, identity_keys)


def _mapped_and_checked(export: ExportFile, identity_keys: tuple[str, ...]) -> ExportFile:
    export = dataclasses.replace(export, mapping=_mapping(export), identity_columns=_identity(export, identity_keys))
    _check_values(export)
    _check_required(export)
    return export


def _format_of(path: Path) -> FileFormat:
    return "parquet" if path.suffix.lower() == ".parquet" else "csv"


def _header(path: Path, file_format: FileFormat, table: str, options: CsvOptions) -> tuple[str, ...]:
    return _parquet_header(path) if file_format == "parquet" else _text_header(path, table, options)


def _text_header(path: Path, table: str, options: CsvOptions) -> tuple[str, ...]:
    """The header's names, or "1".."n" for the first row's n values when the file has no header."""
    with path.open("rb") as handle:
        if handle.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC:
            raise CustlensError(f"{path} is a Parquet file, not CSV; rename it to {path.with_suffix('.parquet').name}")
    try:
        with path.open(encoding=_python_encoding(options.encoding), newline="") as handle:
            first_line = handle.readline(1 << 20).rstrip("\r\n")
    except LookupError:
        raise CustlensError(
            f"ingest.tables.{table}.csv.encoding: {options.encoding!r} is not a known text encoding "
            "(e.g. utf-8, latin-1, cp1252)"
        ) from None
    except UnicodeDecodeError as exc:
        raise _unreadable_text(path, table, options, str(exc)) from None
    if not first_line.strip():
        needs = "a header row naming its columns" if options.header else "rows"
        raise CustlensError(f"{path} is empty; a CSV export needs {needs}")
    if options.delimiter == "whitespace":
        fields = re.split(f"[{_ASCII_WHITESPACE}]+", first_line.strip(_ASCII_WHITESPACE))
    else:
        try:
            quoting = {"quotechar": options.quote} if options.quote else {"quoting": csv.QUOTE_NONE}
            fields = next(csv.reader([first_line], delimiter=_delimiter(options), **quoting))
        except csv.Error as exc:
            raise _unreadable_text(path, table, options, str(exc)) from None
    if not options.header:
        return tuple(str(position) for position in range(1, len(fields) + 1))
    names = [name.strip() for name in fields]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise CustlensError(f"{path} names the column(s) {', '.join(duplicated)} more than once in its header")
    return tuple(names)


def _parquet_header(path: Path) -> tuple[str, ...]:
    try:
        with pq.ParquetFile(path) as parquet:
            return tuple(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise CustlensError(f"{path} is not a readable Parquet file ({exc})") from None


def _parquet_rows(path: Path) -> int:
    with pq.ParquetFile(path) as parquet:
        return int(parquet.metadata.num_rows)


def _mapping(export: ExportFile) -> dict[str, str]:
    """Contract column -> file column: same-named columns, then `columns` by name or position."""
    mapping = {name: name for name in export.contract.column_names if name in export.header}
    wrong = []
    for column, target in export.source.columns.items():
        if isinstance(target, int):
            if 1 <= target <= len(export.header):
                mapping[column] = export.header[target - 1]
            else:
                wrong.append(f"{column}: {target} (positions go from 1 to {len(export.header)})")
        elif target.strip() in export.header:
            mapping[column] = target.strip()
        else:
            wrong.append(f"{column}: {target}")
    if wrong:
        raise CustlensError(
            f"ingest.tables.{export.table}.columns maps {'; '.join(wrong)}, not in {export._place}; "
            f"it has: {_described_header(export)}"
        )
    return mapping


def _identity(export: ExportFile, identity_keys: tuple[str, ...]) -> tuple[str, ...]:
    missing = [key for key in identity_keys if key not in export.header]
    if missing:
        raise CustlensError(
            f"ingest.identity_keys names {', '.join(missing)}, not a column of {export._place} (customers); "
            f"it has: {_described_header(export)}"
        )
    return identity_keys


def _check_values(export: ExportFile) -> None:
    """Matching ignores case and spaces, so two file values that differ only so must agree."""
    for column, mapping in export.values.items():
        seen: dict[str, tuple[str, str]] = {}
        for file_value, contract_value in mapping.items():
            key = _value_key(file_value)
            if key in seen and seen[key][1] != contract_value:
                raise CustlensError(
                    f"ingest.tables.{export.table}.values.{column}: {seen[key][0]!r} and {file_value!r} are the same "
                    f"value (matching ignores case and surrounding spaces) but map to {seen[key][1]!r} and "
                    f"{contract_value!r}; keep one"
                )
            seen[key] = (file_value, contract_value)


def _check_required(export: ExportFile) -> None:
    derivable = {"source", export.contract.row_id} | ({"status"} if export.table == "orders" else set())
    missing = [name for name in export.derived if name not in derivable]
    if not missing:
        return
    keys = " or ".join(f"ingest.tables.{export.table}.defaults.{name}" for name in missing)
    if export.format == "sql":
        raise CustlensError(
            f"{export._place} yields no column(s) {', '.join(missing)} that table {export.table} requires; "
            f"it yields: {_described_header(export)}; name them in the query (... AS {missing[0]}) or set {keys}"
        )
    columns_keys = ", ".join(f"ingest.tables.{export.table}.columns.{name}" for name in missing)
    hint = ""
    if len(export.header) == 1 and export.format == "csv":
        hint = (
            f" (is it separated by something else than {export.source.csv.delimiter!r}? "
            f"set ingest.tables.{export.table}.csv.delimiter)"
        )
    raise CustlensError(
        f"{export._place} is missing required column(s) {', '.join(missing)} of table {export.table}{hint}; "
        f"it has: {_described_header(export)}; map them with {columns_keys} (or a constant with {keys})"
    )


def _described_header(export: ExportFile) -> str:
    if export.format == "csv" and not export.source.csv.header:
        return f"{len(export.header)} columns, no header (map them by position, from 1)"
    return ", ".join(export.header) or "no columns"


# ---------------------------------------------------------------- reading them


def iter_chunks(export: ExportFile, chunk_rows: int) -> Iterator[Chunk]:
    """The export's contract columns (and identity columns) as strings, `chunk_rows` rows at a
    time, in file order, files one after the other."""
    batches = _query_batches(export, chunk_rows) if export.format == "sql" else _file_batches(export, chunk_rows)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    first_row = 1
    progress = 0
    for batch, progress in batches:
        pending.append(_shaped(batch, export))
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=pending[0].schema)
            yield Chunk(_numbered(table.slice(0, chunk_rows), first_row), progress)
            first_row += chunk_rows
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows or first_row == 1:
        schema = pending[0].schema if pending else _string_schema(_chunk_columns(export))
        yield Chunk(_numbered(pa.Table.from_batches(pending, schema=schema), first_row), progress)


def _numbered(table: pa.Table, first_row: int) -> pa.Table:
    numbers = pa.array(range(first_row, first_row + table.num_rows), type=pa.int64())
    return table.combine_chunks().add_column(0, ROW_NUMBER, numbers)


def _string_schema(columns: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(name, pa.string()) for name in columns])


def _chunk_columns(export: ExportFile) -> tuple[str, ...]:
    return export.columns + tuple(IDENTITY_PREFIX + name for name in export.identity_columns)


def _read_columns(export: ExportFile) -> tuple[str, ...]:
    """The file columns to read, in file order, each once."""
    wanted = {export.mapping[name] for name in export.columns if name in export.mapping} | set(export.identity_columns)
    return tuple(name for name in export.header if name in wanted)


def _shaped(batch: pa.RecordBatch, export: ExportFile) -> pa.RecordBatch:
    """File columns -> contract columns: mapped, `values` translated, `defaults` filled, identity keys added."""
    arrays = []
    for name in export.columns:
        file_column = export.mapping.get(name)
        if file_column is None:
            arrays.append(pa.repeat(pa.scalar(export.defaults[name], pa.string()), batch.num_rows))
            continue
        values = batch.column(file_column)
        if name in export.values:
            values = _translated(values, export.values[name])
        if name in export.defaults:
            blank = pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_trim_whitespace(values), ""))
            values = pc.if_else(blank, pa.scalar(export.defaults[name], pa.string()), values)
        arrays.append(values)
    arrays += [batch.column(name) for name in export.identity_columns]
    return pa.RecordBatch.from_arrays(arrays, schema=_string_schema(_chunk_columns(export)))


def _value_key(value: str) -> str:
    return value.strip().lower()


def _translated(values: pa.Array, mapping: Mapping[str, str]) -> pa.Array:
    """Values found in `mapping` (ignoring case and surrounding spaces) replaced; others unchanged."""
    keys = pa.array([_value_key(file_value) for file_value in mapping], pa.string())
    targets = pa.array(list(mapping.values()), pa.string())
    position = pc.index_in(pc.utf8_lower(pc.utf8_trim_whitespace(values)), value_set=keys)
    return pc.if_else(pc.is_valid(position), pc.take(targets, position), values)


def _file_batches(export: ExportFile, chunk_rows: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Every file's batches in turn; progress counts on from the files before."""
    done_before = 0
    rows_before = 0
    for path in export.paths:
        progress = 0
        if export.format == "csv":
            batches = _text_batches(export, path, rows_before)
        else:
            batches = _parquet_batches(export, path, chunk_rows)
        for batch, progress in batches:
            rows_before += batch.num_rows
            yield batch, done_before + progress
        done_before += path.stat().st_size if export.format == "csv" else _parquet_rows(path)


def _text_batches(export: ExportFile, path: Path, rows_before: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    options = export.source.csv
    whitespace = options.delimiter == "whitespace"
    read_options = pv.ReadOptions(
        column_names=[_LINE_COLUMN] if whitespace else list(export.header),
        skip_rows=1 if options.header else 0,
        block_size=_CSV_BLOCK_BYTES,
        encoding=_arrow_encoding(options.encoding),
    )
    if whitespace:
        parse_options = pv.ParseOptions(delimiter=_WHOLE_LINE, quote_char=False, double_quote=False)
        read = [_LINE_COLUMN]
    else:
        # quoted values may span lines (a customer's comment); everything stays text until we parse it
        parse_options = pv.ParseOptions(
            delimiter=_delimiter(options), quote_char=options.quote or False, newlines_in_values=True
        )
        read = list(_read_columns(export))
    convert_options = pv.ConvertOptions(
        column_types={name: pa.string() for name in read_options.column_names},
        include_columns=read,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        with pa.OSFile(str(path)) as source:
            reader = pv.open_csv(source, read_options, parse_options, convert_options)
            try:
                for batch in reader:
                    if whitespace:
                        batch = _split_on_whitespace(batch, export, path, rows_before)
                    rows_before += batch.num_rows
                    yield batch, source.tell()
            finally:
                reader.close()  # join Arrow's read-ahead thread now, not at interpreter exit
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:  # the latter from pyarrow's transcoding of non-UTF-8
        raise _unreadable_text(path, export.table, options, first_line(exc)) from None


def _split_on_whitespace(batch: pa.RecordBatch, export: ExportFile, path: Path, rows_before: int) -> pa.RecordBatch:
    """Lines -> the columns they hold, split at runs of spaces/tabs; blank lines are no rows."""
    lines = pc.ascii_trim(batch.column(_LINE_COLUMN), _ASCII_WHITESPACE)
    lines = pc.filter(lines, pc.not_equal(lines, ""))
    # ASCII bytes never occur inside a UTF-8 multi-byte character; 4x faster than a regex split
    fields = pc.ascii_split_whitespace(lines)
    counts = pc.list_value_length(fields)
    wrong = pc.not_equal(counts, len(export.header))
    if pc.any(wrong).as_py():
        first = pc.index(wrong, True).as_py()
        raise CustlensError(
            f"{path}: data row {rows_before + first + 1} has {counts[first].as_py()} values where the "
            f"{'header names' if export.source.csv.header else 'first row has'} {len(export.header)}; "
            "values in a whitespace-separated file cannot contain spaces "
            f"(if it is written with another delimiter, set ingest.tables.{export.table}.csv.delimiter)"
        )
    names = _read_columns(export)
    arrays = [pc.list_element(fields, export.header.index(name)) for name in names]
    return pa.RecordBatch.from_arrays(arrays, schema=_string_schema(names))


def _parquet_batches(export: ExportFile, path: Path, chunk_rows: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    schema = _string_schema(_read_columns(export))
    done = 0
    try:
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(schema.names)):
                done += batch.num_rows
                yield _as_strings(batch, schema, path), done
    except (pa.ArrowException, OSError) as exc:
        raise CustlensError(f"{path} cannot be read as a Parquet file: {first_line(exc)}") from None


def _as_strings(batch: pa.RecordBatch, schema: pa.Schema, origin: Path | str) -> pa.RecordBatch:
    """Typed columns become the text our parsers read (timestamps in ISO form, etc.)."""
    arrays = []
    for name in schema.names:
        column = batch.column(name)
        try:
            arrays.append(column if column.type == pa.string() else column.cast(pa.string()))
        except pa.ArrowException as exc:
            raise CustlensError(
                f"{origin}: column {name} of type {column.type} cannot be read as text ({first_line(exc)})"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _query_batches(export: ExportFile, chunk_rows: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    """The query's rows, every column cast to text by DuckDB: TIMESTAMPTZ keeps its offset
    ('1997-01-01 00:00:00+00', the session is UTC), TIMESTAMP and DATE come without one."""
    assert export.source_dir is not None
    names = _read_columns(export)
    as_text = ", ".join(f"CAST({_identifier(name)} AS VARCHAR) AS {_identifier(name)}" for name in names)
    schema = _string_schema(names)
    with _query_connection(export.table, export.source_dir) as con:
        try:
            reader = con.execute(f"SELECT {as_text} FROM ({_query_text(export.source)}) AS export").to_arrow_reader(
                chunk_rows
            )
            for batch in reader:
                yield _as_strings(batch, schema, f"ingest.tables.{export.table}.sql"), 0
        except duckdb.Error as exc:
            raise _query_error(export.table, exc) from None


@contextmanager
def _query_connection(table: str, source_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection whose relative file names are resolved against --source."""
    with closing(duckdb_connect()) as con:
        try:
            con.execute(f"SET file_search_path = {sql_literal(source_dir.resolve())}")
        except duckdb.Error as exc:
            raise _query_error(table, exc) from None
        yield con


def _query_text(source: TableSource) -> str:
    assert source.sql is not None
    return source.sql.strip().rstrip(";").strip()


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _query_error(table: str, exc: BaseException) -> CustlensError:
    return CustlensError(f"ingest.tables.{table}.sql: {first_line(exc)}")


# ---------------------------------------------------------------- text options


def _delimiter(options: CsvOptions) -> str:
    return "\t" if options.delimiter == "tab" else options.delimiter


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _python_encoding(encoding: str) -> str:
    # utf-8-sig also reads a byte-order mark, which spreadsheet programs put before the header
    return "utf-8-sig" if _is_utf8(encoding) else encoding


def _arrow_encoding(encoding: str) -> str:
    # Arrow reads UTF-8 natively (and skips a byte-order mark); any other name costs a transcoding pass
    return "utf8" if _is_utf8(encoding) else encoding


def _unreadable_text(path: Path, table: str, options: CsvOptions, detail: str) -> CustlensError:
    if "utf" in detail.lower() or "codec" in detail.lower():
        written_as = "UTF-8" if _is_utf8(options.encoding) else options.encoding
        return CustlensError(
            f"{path} cannot be read as a {written_as} CSV file: {detail}; if it is written in another encoding, "
            f"set ingest.tables.{table}.csv.encoding (e.g. latin-1, cp1252)"
        )
    return CustlensError(
        f"{path} cannot be read as delimited text: {detail}; check ingest.tables.{table}.csv "
        f"(delimiter {options.delimiter!r}, quote {options.quote!r}, header {str(options.header).lower()})"
    )


def first_line(exc: BaseException) -> str:
    """An exception's first line, at most 300 characters: what a one-line error quotes of it."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
