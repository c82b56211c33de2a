"""Reading exports as `ingest.tables` describes them, on tiny files: column mapping, delimiters,
encodings, defaults, value maps, globs, DuckDB queries, identity keys, and every refusal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custlens.errors import CustlensError
from custlens.settings import IngestSettings, Settings
from features.lake.readers import IDENTITY_PREFIX, ROW_NUMBER, ExportFile, find_exports, iter_chunks
from tests.conftest import with_ingest

REPO = Path(__file__).parents[2]
# the repo's copy once examples/cdnow ships it; until then the shared folder next to the checkout
CDNOW_CANDIDATES = (
    REPO / "examples" / "cdnow" / "CDNOW_sample.txt",
    REPO.parent / "shared" / "data" / "cdnow_sample" / "CDNOW_sample.txt",
    Path("/work/shared/data/cdnow_sample/CDNOW_sample.txt"),
)
CDNOW = next((path for path in CDNOW_CANDIDATES if path.is_file()), CDNOW_CANDIDATES[0])

ORDERS_HEADER = "order_id,source,source_customer_id,ordered_at,status,net_amount\n"


def _described(
    settings: Settings, tables: dict[str, Any] | None = None, identity_keys: tuple[str, ...] = ()
) -> Settings:
    """The settings with `ingest.tables` and `ingest.identity_keys` as a user's YAML would give them."""
    ingest = IngestSettings.model_validate({"tables": tables or {}, "identity_keys": list(identity_keys)})
    return with_ingest(settings, tables=ingest.tables, identity_keys=ingest.identity_keys)


def _folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    return folder


def _orders(source: Path, settings: Settings, **orders: Any) -> ExportFile:
    export = find_exports(source, _described(settings, {"orders": orders} if orders else None))["orders"]
    assert export is not None
    return export


def _read(export: ExportFile, chunk_rows: int = 1_000) -> pa.Table:
    return pa.concat_tables(chunk.rows for chunk in iter_chunks(export, chunk_rows))


# ---------------------------------------------------------------- finding the exports


def test_a_folder_with_only_orders_has_no_customers_export(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"orders.csv": ORDERS_HEADER + "O1,pos,c1,2024-01-01,completed,10\n"})
    exports = find_exports(source, settings)
    assert exports["customers"] is None
    orders = exports["orders"]
    assert orders is not None and orders.format == "csv" and orders.origin == "orders.csv"
    assert orders.columns == ("order_id", "source", "source_customer_id", "ordered_at", "status", "net_amount")
    assert orders.derived == () and orders.extra_columns == ()


def test_a_missing_orders_export_is_refused_naming_the_file_and_the_config_key(
    tmp_path: Path, settings: Settings
) -> None:
    source = _folder(tmp_path, {"customers.csv": "source,source_customer_id,signup_at\npos,c1,2024-01-01\n"})
    with pytest.raises(
        CustlensError, match=r"required export .*orders\.csv \(or orders\.parquet\).*ingest\.tables\.orders\.file"
    ):
        find_exports(source, settings)


def test_a_configured_file_that_matches_nothing_names_the_pattern_and_folder(
    tmp_path: Path, settings: Settings
) -> None:
    source = _folder(tmp_path, {"orders.csv": ORDERS_HEADER})
    for pattern in ("invoices.csv", "lines-*.csv"):
        with pytest.raises(
            CustlensError, match=re.escape(f"ingest.tables.orders.file: no file matches '{pattern}' in {source};")
        ):
            _orders(source, settings, file=pattern)


def test_both_csv_and_parquet_of_one_table_are_refused_naming_both(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"orders.csv": ORDERS_HEADER})
    pq.write_table(pa.table({"order_id": ["O1"]}), source / "orders.parquet")
    with pytest.raises(CustlensError, match=r"orders\.csv and .*orders\.parquet exist"):
        find_exports(source, settings)


# ---------------------------------------------------------------- column mapping


def test_columns_are_mapped_by_name_and_read_under_contract_names(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"invoices.csv": "Invoice,Customer,Date,Total,Country\nI1,c1,2024-01-02,12.50,UK\n"})
    export = _orders(
        source,
        settings,
        file="invoices.csv",
        columns={"order_id": "Invoice", "source_customer_id": "Customer", "ordered_at": "Date", "net_amount": "Total"},
    )
    assert export.mapping == {
        "order_id": "Invoice", "source_customer_id": "Customer", "ordered_at": "Date", "net_amount": "Total",
    }  # fmt: skip
    assert export.extra_columns == ("Country",)
    assert export.derived == ("source", "status")
    rows = _read(export)
    assert rows.column_names == [ROW_NUMBER, "order_id", "source_customer_id", "ordered_at", "net_amount"]
    assert rows.to_pylist() == [
        {ROW_NUMBER: 1, "order_id": "I1", "source_customer_id": "c1", "ordered_at": "2024-01-02", "net_amount": "12.50"}
    ]
    assert all(field.type == pa.string() for field in rows.schema if field.name != ROW_NUMBER)


def test_a_file_without_header_is_mapped_by_position(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"log.csv": "c1,20240102,3,9.99\nc2,20240103,1,5.00\n"})
    export = _orders(
        source,
        settings,
        file="log.csv",
        csv={"header": False},
        columns={"source_customer_id": 1, "ordered_at": 2, "items": 3, "net_amount": 4},
    )
    assert export.header == ("1", "2", "3", "4")
    rows = _read(export)
    assert rows.column("source_customer_id").to_pylist() == ["c1", "c2"]  # the first line is data
    assert rows.column("items").to_pylist() == ["3", "1"]
    assert rows.column(ROW_NUMBER).to_pylist() == [1, 2]


def test_a_mapped_name_the_file_lacks_is_refused_naming_it_and_the_file_columns(
    tmp_path: Path, settings: Settings
) -> None:
    source = _folder(tmp_path, {"invoices.csv": "Invoice,Customer,Date,Total\n"})
    with pytest.raises(
        CustlensError,
        match=r"ingest\.tables\.orders\.columns maps net_amount: Amount, not in .*invoices\.csv; "
        r"it has: Invoice, Customer, Date, Total",
    ):
        _orders(
            source,
            settings,
            file="invoices.csv",
            columns={"source_customer_id": "Customer", "ordered_at": "Date", "net_amount": "Amount"},
        )


def test_a_position_beyond_the_file_width_is_refused(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"log.csv": "c1,20240102,9.99\n"})
    with pytest.raises(CustlensError, match=r"columns maps net_amount: 4 \(positions go from 1 to 3\)"):
        _orders(
            source,
            settings,
            file="log.csv",
            csv={"header": False},
            columns={"source_customer_id": 1, "ordered_at": 2, "net_amount": 4},
        )


def test_a_missing_required_column_names_file_table_columns_and_config_keys(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"orders.csv": "source_customer_id,net_amount\nc1,3\n"})
    with pytest.raises(CustlensError) as refused:
        find_exports(source, settings)
    message = str(refused.value)
    assert f"{source / 'orders.csv'} is missing required column(s) ordered_at of table orders" in message
    assert "it has: source_customer_id, net_amount" in message
    assert "ingest.tables.orders.columns.ordered_at" in message


def test_only_row_ids_source_and_order_status_may_be_derived(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path,
        {
            "orders.csv": "source_customer_id,ordered_at,net_amount\nc1,2024-01-01,3\n",
            "customers.csv": "source_customer_id,email\nc1,a@example.com\n",
        },
    )
    with pytest.raises(
        CustlensError, match=r"customers\.csv is missing required column\(s\) signup_at of table customers"
    ):
        find_exports(source, settings)
    (source / "customers.csv").unlink()
    (source / "tickets.csv").write_text("customer,opened_at\nc1,2024-01-01\n", encoding="utf-8")
    with pytest.raises(CustlensError, match=r"missing required column\(s\) source_customer_id of table tickets"):
        find_exports(source, settings)
    (source / "tickets.csv").write_text("source_customer_id,opened_at\nc1,2024-01-01\n", encoding="utf-8")
    exports = find_exports(source, settings)
    orders, tickets = exports["orders"], exports["tickets"]
    assert orders is not None and orders.derived == ("order_id", "source", "status")
    assert tickets is not None and tickets.derived == ("ticket_id",)


# ---------------------------------------------------------------- delimiters and encodings


def test_whitespace_delimiter_splits_runs_of_spaces_and_tabs(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path,
        {"log.txt": "customer   date\t amount\r\n  c1  2024-01-02\t\t9.99  \r\n\r\n   \nc2 2024-01-03 5\r\n"},
    )
    export = _orders(
        source,
        settings,
        file="log.txt",
        csv={"delimiter": "whitespace"},
        columns={"source_customer_id": "customer", "ordered_at": "date", "net_amount": "amount"},
    )
    assert export.header == ("customer", "date", "amount")
    rows = _read(export)
    assert rows.to_pylist() == [
        {ROW_NUMBER: 1, "source_customer_id": "c1", "ordered_at": "2024-01-02", "net_amount": "9.99"},
        {ROW_NUMBER: 2, "source_customer_id": "c2", "ordered_at": "2024-01-03", "net_amount": "5"},
    ]  # blank and space-only lines are no rows


def test_a_whitespace_row_with_another_number_of_values_is_refused_naming_it(
    tmp_path: Path, settings: Settings
) -> None:
    source = _folder(tmp_path, {"log.txt": "c1 2024-01-02 9.99\nc2 New York 2024-01-03 5\n"})
    export = _orders(
        source,
        settings,
        file="log.txt",
        csv={"delimiter": "whitespace", "header": False},
        columns={"source_customer_id": 1, "ordered_at": 2, "net_amount": 3},
    )
    with pytest.raises(CustlensError, match=r"log\.txt: data row 2 has 5 values where the first row has 3"):
        _read(export)


@pytest.mark.parametrize(("name", "delimiter", "separator"), [("orders.tsv", "tab", "\t"), ("orders.csv", ";", ";")])
def test_tab_and_semicolon_delimiters(
    tmp_path: Path, settings: Settings, name: str, delimiter: str, separator: str
) -> None:
    lines = ["source_customer_id", "ordered_at", "net_amount", "category"], ["c1", "2024-01-02", "9,99", "a, b"]
    source = _folder(tmp_path, {name: "".join(separator.join(line) + "\n" for line in lines)})
    export = _orders(source, settings, file=name, csv={"delimiter": delimiter, "decimal": ","})
    rows = _read(export)
    assert rows.column("net_amount").to_pylist() == ["9,99"]  # validation reads the decimal comma
    assert rows.column("category").to_pylist() == ["a, b"]
    assert export.source.csv.decimal == ","


def test_a_latin_1_file_is_read_with_its_encoding(tmp_path: Path, settings: Settings) -> None:
    text = "source_customer_id;ordered_at;net_amount;category\nJosé;2024-01-02;3;Köln\n"
    source = _folder(tmp_path, {"orders.csv": text.encode("latin-1")})
    with pytest.raises(
        CustlensError, match=r"cannot be read as a UTF-8 CSV file.*ingest\.tables\.orders\.csv\.encoding"
    ):
        _read(_orders(source, settings, csv={"delimiter": ";"}))
    rows = _read(_orders(source, settings, csv={"delimiter": ";", "encoding": "latin-1"}))
    assert rows.column("source_customer_id").to_pylist() == ["José"]
    assert rows.column("category").to_pylist() == ["Köln"]


def test_a_custom_quote_character_keeps_delimiters_inside_values(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path, {"orders.csv": "source_customer_id,ordered_at,net_amount,category\nc1,2024-01-02,3,'a,b'\n"}
    )
    rows = _read(_orders(source, settings, csv={"quote": "'"}))
    assert rows.column("category").to_pylist() == ["a,b"]


def test_an_empty_quote_character_reads_quotes_as_text(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path, {"orders.csv": 'source_customer_id;ordered_at;net_amount;category\nc1;2024-01-02;3;12" vinyl\n'}
    )
    rows = _read(_orders(source, settings, csv={"delimiter": ";", "quote": ""}))
    assert rows.column("category").to_pylist() == ['12" vinyl']


# ---------------------------------------------------------------- defaults and values


def test_defaults_fill_absent_columns_and_empty_values(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path,
        {"orders.csv": "source_customer_id,ordered_at,net_amount,status\nc1,2024-01-02,3,\nc2,2024-01-02,4,returned\n"},
    )
    export = _orders(source, settings, defaults={"source": "pos", "status": "completed"})
    assert export.derived == ("order_id",)
    rows = _read(export)
    assert rows.column("source").to_pylist() == ["pos", "pos"]
    assert rows.column("status").to_pylist() == ["completed", "returned"]
    with_source = export.with_defaults({"channel": "store"})
    assert with_source.columns[-1] == "channel" and "channel" not in export.columns
    assert _read(with_source).column("channel").to_pylist() == ["store", "store"]


def test_values_map_ignoring_case_and_spaces_and_pass_others_through(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path,
        {"orders.csv": "source_customer_id,ordered_at,net_amount,status\n"
         "c1,2024-01-02,3, SHIPPED \nc2,2024-01-02,4,refunded\nc3,2024-01-02,5,Pending\nc4,2024-01-02,6,\n"},
    )  # fmt: skip
    export = _orders(
        source,
        settings,
        values={"status": {"Shipped": "completed", "Refunded": "returned"}},
        defaults={"status": "completed"},
    )
    assert _read(export).column("status").to_pylist() == ["completed", "returned", "Pending", "completed"]


def test_values_that_differ_only_in_case_but_map_differently_are_refused(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"orders.csv": "source_customer_id,ordered_at,net_amount,status\n"})
    with pytest.raises(CustlensError, match=r"ingest\.tables\.orders\.values\.status: 'Shipped' and 'SHIPPED '"):
        _orders(source, settings, values={"status": {"Shipped": "completed", "SHIPPED ": "returned"}})


# ---------------------------------------------------------------- globs


def test_a_glob_reads_every_file_in_order_and_row_numbers_continue(tmp_path: Path, settings: Settings) -> None:
    header = "source_customer_id,ordered_at,net_amount\n"
    source = _folder(
        tmp_path,
        {
            "lines-2.csv": header + "c3,2024-01-03,3\nc4,2024-01-04,4\nc5,2024-01-05,5\n",
            "lines-1.csv": header + "c1,2024-01-01,1\nc2,2024-01-02,2\n",
        },
    )
    export = _orders(source, settings, file="lines-*.csv")
    assert export.paths == (source / "lines-1.csv", source / "lines-2.csv") and export.path == source / "lines-1.csv"
    assert export.origin == "2 files matching lines-*.csv"
    assert export.progress_total == sum(path.stat().st_size for path in export.paths)
    chunks = list(iter_chunks(export, chunk_rows=2))
    assert [chunk.rows.num_rows for chunk in chunks] == [2, 2, 1]
    rows = pa.concat_tables(chunk.rows for chunk in chunks)
    assert rows.column(ROW_NUMBER).to_pylist() == [1, 2, 3, 4, 5]
    assert rows.column("source_customer_id").to_pylist() == ["c1", "c2", "c3", "c4", "c5"]
    assert chunks[-1].progress == export.progress_total


def test_a_glob_over_files_with_different_headers_is_refused(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path,
        {
            "lines-1.csv": "source_customer_id,ordered_at,net_amount\n",
            "lines-2.csv": "source_customer_id,net_amount,ordered_at\n",
        },
    )
    with pytest.raises(CustlensError, match=r"lines-2\.csv has the columns .* every file matching 'lines-\*\.csv'"):
        _orders(source, settings, file="lines-*.csv")


# ---------------------------------------------------------------- parquet


def test_typed_parquet_columns_are_read_as_text_under_mapped_names(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {})
    pq.write_table(
        pa.table({"cust": pa.array([7], pa.int64()), "when": pa.array(["2024-01-02"]), "total": pa.array([2.5])}),
        source / "sales.parquet",
    )
    export = _orders(
        source,
        settings,
        file="sales.parquet",
        columns={"source_customer_id": "cust", "ordered_at": "when", "net_amount": "total"},
    )
    assert export.format == "parquet" and export.progress_total == 1
    assert _read(export).to_pylist() == [
        {ROW_NUMBER: 1, "source_customer_id": "7", "ordered_at": "2024-01-02", "net_amount": "2.5"}
    ]


# ---------------------------------------------------------------- sql


def test_sql_joins_and_aggregates_files_in_the_source_folder(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"lines.csv": "invoice,qty,price\nI1,2,1.50\nI1,1,4.00\nI2,3,2.00\nG1,1,9.00\n"})
    pq.write_table(
        pa.table({"invoice": ["I1", "I2", "G1"], "customer": ["c1", "c2", None], "day": ["1997-01-01"] * 3}),
        source / "invoices.parquet",
    )
    query = """
        SELECT i.invoice AS order_id, i.customer AS source_customer_id,
               CAST(i.day AS TIMESTAMPTZ) AS ordered_at, CAST(i.day AS TIMESTAMP) AS gross_amount,
               CAST(i.day AS DATE) AS category, SUM(l.qty * l.price) AS net_amount, SUM(l.qty) AS items
        FROM 'invoices.parquet' AS i JOIN read_csv('lines.csv') AS l USING (invoice)
        GROUP BY ALL ORDER BY order_id;
    """
    export = _orders(source, settings, sql=query, defaults={"source": "pos"})
    assert export.format == "sql" and export.paths == () and export.origin == "sql query"
    assert export.derived == ("status",) and export.progress_total == 0
    rows = _read(export, chunk_rows=2)
    assert rows.column("order_id").to_pylist() == ["G1", "I1", "I2"]
    assert rows.column("source_customer_id").to_pylist() == [None, "c1", "c2"]  # a guest order
    assert rows.column("net_amount").to_pylist() == ["9.0", "7.0", "6.0"]  # read_csv typed price as DOUBLE
    assert rows.column("items").to_pylist() == ["1", "3", "3"]
    assert rows.column("source").to_pylist() == ["pos"] * 3
    # instants keep their offset; wall times and days come without one (read in the business's zone)
    assert rows.column("ordered_at")[0].as_py() == "1997-01-01 00:00:00+00"
    assert rows.column("gross_amount")[0].as_py() == "1997-01-01 00:00:00"
    assert rows.column("category")[0].as_py() == "1997-01-01"
    assert rows.column(ROW_NUMBER).to_pylist() == [1, 2, 3]


def test_sql_errors_name_the_table_key_and_duckdbs_message(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"lines.csv": "invoice,qty\nI1,2\n"})
    with pytest.raises(CustlensError, match=r"^ingest\.tables\.orders\.sql: Binder Error: .*nope"):
        _orders(source, settings, sql="SELECT nope FROM read_csv('lines.csv')")
    with pytest.raises(CustlensError, match=r"^ingest\.tables\.orders\.sql: .*missing\.parquet"):
        _orders(source, settings, sql="SELECT * FROM 'missing.parquet'")


def test_sql_errors_while_reading_rows_are_reported_the_same_way(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"lines.csv": "customer,day,amount\nc1,1997-01-01,x\n"})
    query = (
        "SELECT customer AS source_customer_id, day AS ordered_at, CAST(amount AS INTEGER) AS net_amount "
        "FROM 'lines.csv'"
    )
    export = _orders(source, settings, sql=query)
    with pytest.raises(CustlensError, match=r"^ingest\.tables\.orders\.sql: Conversion Error"):
        _read(export)


def test_a_query_without_a_required_column_is_refused_naming_table_and_column(
    tmp_path: Path, settings: Settings
) -> None:
    source = _folder(tmp_path, {"lines.csv": "customer,amount\nc1,3\n"})
    with pytest.raises(
        CustlensError,
        match=r"ingest\.tables\.orders\.sql yields no column\(s\) ordered_at that table orders requires; "
        r"it yields: source_customer_id, net_amount",
    ):
        _orders(source, settings, sql="SELECT customer AS source_customer_id, amount AS net_amount FROM 'lines.csv'")


# ---------------------------------------------------------------- identity keys


def test_declared_identity_keys_ride_along_under_their_prefix(tmp_path: Path, settings: Settings) -> None:
    source = _folder(
        tmp_path,
        {
            "orders.csv": ORDERS_HEADER,
            "customers.csv": "source,source_customer_id,signup_at,person\npos,c1,2024-01-01,P1\npos,c2,2024-01-01,P1\n",
        },
    )
    exports = find_exports(source, _described(settings, identity_keys=("person",)))
    customers = exports["customers"]
    assert customers is not None and customers.identity_columns == ("person",)
    assert customers.extra_columns == ()
    rows = _read(customers)
    assert rows.column_names[-1] == IDENTITY_PREFIX + "person"
    assert rows.column(IDENTITY_PREFIX + "person").to_pylist() == ["P1", "P1"]
    orders = exports["orders"]
    assert orders is not None and orders.identity_columns == ()


def test_an_identity_key_the_customers_file_lacks_is_refused_listing_its_columns(
    tmp_path: Path, settings: Settings
) -> None:
    source = _folder(
        tmp_path, {"orders.csv": ORDERS_HEADER, "customers.csv": "source,source_customer_id,signup_at,email\n"}
    )
    with pytest.raises(
        CustlensError,
        match=r"ingest\.identity_keys names loyalty_card, not a column of .*customers\.csv \(customers\); "
        r"it has: source, source_customer_id, signup_at, email",
    ):
        find_exports(source, _described(settings, identity_keys=("loyalty_card",)))


# ---------------------------------------------------------------- files that are refused


@pytest.mark.parametrize(
    ("content", "refusal"),
    [
        (b"PAR1" + b"\x00" * 20, r"orders\.csv is a Parquet file, not CSV; rename it to orders\.parquet"),
        (b"", r"orders\.csv is empty; a CSV export needs a header row"),
        (b"\n\n", r"orders\.csv is empty"),
        (b"source_customer_id,ordered_at,net_amount,ordered_at\n", r"names the column\(s\) ordered_at more than once"),
        (b"\xff\xfe\x00garbage\n", r"orders\.csv cannot be read as a UTF-8 CSV file.*csv\.encoding"),
        (b"source_customer_id;ordered_at;net_amount\n", r"\(is it separated by something else than ','\? set ingest"),
    ],
)
def test_unreadable_files_are_refused_naming_the_file(
    tmp_path: Path, settings: Settings, content: bytes, refusal: str
) -> None:
    source = _folder(tmp_path, {"orders.csv": content})
    with pytest.raises(CustlensError, match=refusal):
        find_exports(source, settings)


def test_invalid_utf8_after_a_valid_header_is_refused_when_read(tmp_path: Path, settings: Settings) -> None:
    body = b"source_customer_id,ordered_at,net_amount\n" + b"c1,2024-01-01,1\n" * 5_000 + b"c2,\xff\xfe,2\n"
    export = _orders(_folder(tmp_path, {"orders.csv": body}), settings)
    with pytest.raises(CustlensError, match=r"orders\.csv cannot be read as a UTF-8 CSV file: .*UTF8"):
        _read(export)


def test_rows_with_the_wrong_number_of_values_are_refused(tmp_path: Path, settings: Settings) -> None:
    export = _orders(_folder(tmp_path, {"orders.csv": "source_customer_id,ordered_at,net_amount\nc1,2024\n"}), settings)
    with pytest.raises(CustlensError, match=r"orders\.csv cannot be read as delimited text: .*Expected 3 columns"):
        _read(export)


def test_an_unknown_encoding_is_refused_naming_the_key(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"orders.csv": ORDERS_HEADER})
    with pytest.raises(CustlensError, match=r"ingest\.tables\.orders\.csv\.encoding: 'klingon' is not a known"):
        _orders(source, settings, csv={"encoding": "klingon"})


def test_text_in_a_parquet_file_is_refused(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"orders.parquet": "order_id\nO1\n"})
    with pytest.raises(CustlensError, match=r"orders\.parquet is not a readable Parquet file"):
        find_exports(source, settings)


def test_a_header_only_file_gives_one_empty_chunk_with_the_columns(tmp_path: Path, settings: Settings) -> None:
    export = _orders(_folder(tmp_path, {"orders.csv": ORDERS_HEADER}), settings)
    chunks = list(iter_chunks(export, 10))
    assert len(chunks) == 1 and chunks[0].rows.num_rows == 0
    assert chunks[0].rows.column_names == [ROW_NUMBER, *export.columns]


# ---------------------------------------------------------------- the real CDNOW sample


@pytest.mark.skipif(not CDNOW.is_file(), reason="the shared CDNOW sample is not on this machine")
def test_the_cdnow_transaction_log_reads_as_it_comes(tmp_path: Path, settings: Settings) -> None:
    source = _folder(tmp_path, {"CDNOW_sample.txt": CDNOW.read_bytes()})
    export = _orders(
        source,
        settings,
        file="CDNOW_sample.txt",
        csv={"delimiter": "whitespace", "header": False},
        columns={"source_customer_id": 2, "ordered_at": 3, "items": 4, "net_amount": 5},
    )
    assert export.header == ("1", "2", "3", "4", "5") and export.extra_columns == ("1",)
    assert export.derived == ("order_id", "source", "status")
    rows = _read(export, chunk_rows=1_000)
    assert rows.num_rows == 6_919
    assert len(set(rows.column("source_customer_id").to_pylist())) == 2_357
    assert rows.slice(0, 1).to_pylist() == [
        {ROW_NUMBER: 1, "source_customer_id": "0001", "ordered_at": "19970101", "items": "2", "net_amount": "29.33"}
    ]
    assert rows.column(ROW_NUMBER).to_pylist() == list(range(1, 6_920))
