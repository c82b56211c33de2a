"""The `custlens` command line: one Typer app, one command per stage of the data flow."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from custlens.errors import CustlensError
from custlens.settings import Settings, load_settings

app = typer.Typer(
    name="custlens",
    help="Self-hosted customer intelligence: ingest, features, models, scores and KPIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _print_version(asked: bool) -> None:
    if asked:
        from custlens import __version__

        console.print(f"custlens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Self-hosted customer intelligence: ingest, features, models, scores and KPIs."""

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML merged over configs/default.yaml.", dir_okay=False),
]

F = TypeVar("F", bound=Callable[..., Any])


def user_errors_exit_cleanly(command: F) -> F:
    """Print a CustlensError as one readable message, no traceback, exit status 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CustlensError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise CustlensError(f"{option} {value!r} is not a date; write it as YYYY-MM-DD") from None


@app.command()
@user_errors_exit_cleanly
def generate(
    customers: Annotated[int, typer.Option(min=1, help="How many people to simulate.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 42,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <data_dir>/sample).")] = None,
    start: Annotated[
        str | None, typer.Option(help="First day of history, YYYY-MM-DD (default: 3 years before --end).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last day of history, YYYY-MM-DD.")] = None,
    dirty_rate: Annotated[float, typer.Option(min=0.0, max=0.5, help="Share of rows made bad on purpose.")] = 0.0,
    file_format: Annotated[
        Literal["csv", "parquet"], typer.Option("--format", help="How the exports are written.")
    ] = "csv",
    config: ConfigOption = None,
) -> None:
    """Write realistic sample exports of all six input tables, plus the ground truth."""
    from features.sample.generate import DEFAULT_END
    from features.sample.generate import generate as run_generate

    settings = _settings(config)
    end_day = _parse_day(end, "--end") or DEFAULT_END
    summary = run_generate(
        out_dir=out or settings.sample_dir,
        customers=customers,
        seed=seed,
        start=_parse_day(start, "--start"),
        end=end_day,
        dirty_rate=dirty_rate,
        file_format=file_format,
        console=console,
    )
    console.print(summary.render())


@app.command()
@user_errors_exit_cleanly
def ingest(
    source: Annotated[Path | None, typer.Option(help="Folder of exports (default: <data_dir>/sample).")] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Dry run: read and validate everything, show what was detected and assumed, write nothing."
        ),
    ] = False,
    allow_shrink: Annotated[
        bool,
        typer.Option(
            "--allow-shrink",
            help="Accept tables that lose more than ingest.max_shrink_share of their rows against the current lake.",
        ),
    ] = False,
    drop_table: Annotated[
        list[str] | None,
        typer.Option(
            "--drop-table",
            metavar="NAME",
            help="A table the business no longer exports: remove it from the lake (repeatable).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Validate exports, quarantine bad rows, resolve identities, hash PII, write the lake and its KPI cube."""
    from features.asof import live_as_of
    from features.kpis import kpi_dir
    from features.lake.ingest import ingest as run_ingest

    settings = _settings(config)
    report = run_ingest(
        settings,
        source or settings.sample_dir,
        console=console,
        check=check,
        allow_shrink=allow_shrink,
        drop_tables=tuple(drop_table or ()),
    )
    console.print(report.render())
    if check:
        if not report.ok:
            raise CustlensError(report.failure_message())
        return
    console.print(f"KPI cube: {kpi_dir(settings)}", highlight=False)
    console.print(live_as_of(settings).line("features, scores and the service will be as of"), highlight=False)


@app.command("kpis")
@user_errors_exit_cleanly
def kpis_command(
    date_from: Annotated[
        str | None,
        typer.Option(
            "--from", help="First day, YYYY-MM-DD (the business's local day), included (default: last full month)."
        ),
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (the business's local day), included.")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="month, week, channel, city, segment or behaviour (after scoring).")
    ] = None,
    output_format: Annotated[
        Literal["table", "json", "csv"], typer.Option("--format", help="How the KPIs are printed.")
    ] = "table",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild the KPI cube from the lake first.")] = False,
    config: ConfigOption = None,
) -> None:
    """KPI summary of a period from the daily KPI cube, in the business's local days; revenue is net revenue
    (completed orders minus refunds, guest orders included) and money carries its currency. A KPI without
    data shows as missing, with the reason."""
    from features.kpis import KpiCache, build_kpi_cube, check_grouping, kpi_period
    from features.kpis import kpis as compute_kpis

    settings = _settings(config)
    if rebuild:
        build_kpi_cube(settings)
    grouping = check_grouping(by)
    start = None if date_from is None else _required_day(date_from, "--from")
    end = None if date_to is None else _required_day(date_to, "--to")
    start, end = kpi_period(settings, start, end)  # both or neither (the last full month), in order
    with KpiCache() as cache:
        table = compute_kpis(settings, start, end, grouping, cache)
    if output_format == "table":
        console.print(table.render())
    else:
        sys.stdout.write(table.to_json() + "\n" if output_format == "json" else table.to_csv())


features_app = typer.Typer(
    help="The Feast feature store: build snapshots, apply definitions, materialize, read online.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")


AS_OF_DEFAULT = "{what}, YYYY-MM-DD (default: the as-of the data gives: today if fresh, else its end)."


@features_app.command("build")
@user_errors_exit_cleanly
def features_build(
    as_of: Annotated[
        list[str] | None,
        typer.Option(
            "--as-of",
            help="Cutoff date YYYY-MM-DD (repeatable); default: month starts over the history + the as-of "
            "(today for fresh data, else the end of the data).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Compute per-customer feature snapshots from the lake, from data strictly before each cutoff."""
    from features.snapshots import build_default_snapshots, build_snapshots, snapshot_warnings

    settings = _settings(config)
    if as_of:
        report = build_snapshots(settings, [_required_day(value, "--as-of") for value in as_of], console=console)
    else:
        report = build_default_snapshots(settings, console=console)
    console.print(report.render())
    for warning in snapshot_warnings(settings, report):
        console.print(f"[yellow]{warning}[/]")


@features_app.command("apply")
@user_errors_exit_cleanly
def features_apply(config: ConfigOption = None) -> None:
    """Register the Feast definitions of features/repo; unchanged definitions change nothing."""
    from features.store import apply_definitions

    console.print(apply_definitions(_settings(config)).render())


@features_app.command("materialize")
@user_errors_exit_cleanly
def features_materialize(
    as_of: Annotated[str | None, typer.Option("--as-of", help=AS_OF_DEFAULT.format(what="Snapshot to load"))] = None,
    full: Annotated[bool, typer.Option("--full", help="Write every customer, not only those that changed.")] = False,
    config: ConfigOption = None,
) -> None:
    """Load a snapshot into the online store (SQLite by default, Redis in production)."""
    from features.online import materialize

    report = materialize(_settings(config), _parse_day(as_of, "--as-of"), full=full, console=console)
    console.print(report.render())


@features_app.command("online")
@user_errors_exit_cleanly
def features_online(
    customer_ids: Annotated[
        list[str] | None, typer.Argument(help="Unified customer ids (default: one sample).")
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="Feature service whose features are shown (default: the churn model's next).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Print customers' features as the online store serves them now."""
    from features.model_inputs import service_spec
    from features.online import OnlineFeatures
    from features.snapshot_reader import sample_customer_id

    service = service or service_spec("churn").service
    settings = _settings(config)
    ids = customer_ids or [sample_customer_id(settings)]
    frame = OnlineFeatures(settings).frame(ids, service)
    table = Table(title=f"online features ({service})", show_lines=False)
    table.add_column("feature")
    for customer_id in ids:
        table.add_column(customer_id, overflow="fold")
    for column in frame.columns[1:]:
        table.add_row(column, *(_shown(value) for value in frame[column]))
    console.print(table)


@app.command()
@user_errors_exit_cleanly
def train(
    models: Annotated[
        list[str] | None, typer.Argument(help="churn, repurchase, clv, segments or all (default: all).")
    ] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials per model (default: the config's).")] = None,
    timeout: Annotated[
        int | None, typer.Option(min=1, help="Optuna seconds per model (default: the config's).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Train, tune, evaluate and register the models; promote each that passes the gate (training.registry)."""
    from features.asof import live_as_of
    from training.tracking import tracking_uri
    from training.train import MODELS, render, train_all

    settings = _settings(config)
    chosen = list(MODELS) if not models or "all" in models else list(dict.fromkeys(models))
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise CustlensError(f"unknown model {', '.join(unknown)}; choose from {', '.join(MODELS)} or all")
    budget = {"trials": trials, "timeout_seconds": timeout}
    changes = {key: value for key, value in budget.items() if value is not None}
    settings = settings.model_copy(update={"training": settings.training.model_copy(update=changes)})
    console.print(
        live_as_of(settings).line("the data is as of") + "; each model's test window is the latest that ends by it",
        highlight=False,
    )
    results = train_all(settings, chosen, console=console)
    console.print(render(results))
    # `make mlflow-ui` opens <CUSTLENS_DATA_DIR or data>/mlruns: name the folder when it is another
    folder = "" if settings.data_dir == Path("data") else f" CUSTLENS_DATA_DIR={settings.data_dir}"
    console.print(f"MLflow: {tracking_uri(settings)}; open the UI with `make mlflow-ui{folder}` (http://127.0.0.1:5000)")


@app.command("models")
@user_errors_exit_cleanly
def models_command(config: ConfigOption = None) -> None:
    """List each registered model's versions: kind, aliases, primary test metric and promotion decision."""
    from training.registry import model_versions
    from training.train import MODELS

    listed = model_versions(_settings(config), MODELS)
    if not listed:
        raise CustlensError("no registered model yet; run custlens train first")
    table = Table(title="custlens models", expand=False)
    for column in ("model", "version", "kind", "aliases", "test metric"):
        table.add_column(column)
    for row in listed:
        table.add_row(row.model, row.version, row.kind, ", ".join(f"@{alias}" for alias in row.aliases) or "-",
                      row.metric_shown())  # fmt: skip
    console.print(table)
    for row in listed:
        console.print(f"{row.model} v{row.version}: {row.decision}", highlight=False)


@app.command()
@user_errors_exit_cleanly
def promote(
    model: Annotated[str, typer.Argument(help="churn, repurchase, clv or segments.")],
    version: Annotated[str, typer.Argument(help="The registered version to serve (see custlens models).")],
    reason: Annotated[str, typer.Option("--reason", help="Why, recorded on the version with who and when.")],
    config: ConfigOption = None,
) -> None:
    """Set @champion on a version by hand; the reason, who and when become version tags."""
    from training.registry import promote as promote_version
    from training.train import MODELS

    row = promote_version(_settings(config), model, version, reason, MODELS)
    console.print(f"{row.model} v{row.version} is @champion ({row.kind}, {row.metric_shown()}), promoted by hand; "
                  "the Scorer and the service load it at their next reload", highlight=False)  # fmt: skip


@app.command()
@user_errors_exit_cleanly
def backtest(
    cutoff: Annotated[str, typer.Option("--cutoff", help="First day of the holdout, YYYY-MM-DD.")],
    horizon: Annotated[str, typer.Option("--horizon", help="Holdout length: days (273 or 273d), 39w, 9m or 1y.")],
    output_format: Annotated[
        Literal["table", "json"], typer.Option("--format", help="How the results are printed.")
    ] = "table",
    baselines_only: Annotated[
        bool, typer.Option("--baselines-only", help="Only BG/NBD, Gamma-Gamma and logistic RFM: no LightGBM.")
    ] = False,
    trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials per model (default: the config's).")] = None,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples of the customers.")] = 1000,
    config: ConfigOption = None,
) -> None:
    """Score every model trainable before --cutoff and every baseline on [cutoff, cutoff + horizon), with
    95% bootstrap intervals and each model's paired difference to the best baseline; logged to MLflow."""
    from custlens.settings import parse_days
    from training.backtest import run_backtest

    settings = _settings(config)
    if trials is not None:
        settings = settings.model_copy(update={"training": settings.training.model_copy(update={"trials": trials})})
    try:
        horizon_days = int(parse_days(horizon))
    except ValueError as exc:
        raise CustlensError(f"--horizon: {exc}") from None
    if horizon_days < 1:
        raise CustlensError(f"--horizon {horizon!r} is empty; give at least one day")
    quiet = output_format == "json"  # stdout is the JSON alone
    result = run_backtest(settings, _required_day(cutoff, "--cutoff"), horizon_days, learned=not baselines_only,
                          resamples=resamples, console=err_console if quiet else console)  # fmt: skip
    if quiet:
        sys.stdout.write(result.to_json() + "\n")
        return
    console.print(result.render())
    console.print(f"MLflow run {result.run_id} (experiment custlens-backtest)", highlight=False)


@app.command()
@user_errors_exit_cleanly
def score(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help=AS_OF_DEFAULT.format(what="Snapshot date to score"))
    ] = None,
    sink: Annotated[
        str | None,
        typer.Option(
            "--sink",
            help="sqlite:///path.db, postgresql://user@host:5432/db, parquet:FOLDER or csv:FOLDER "
            "(default: batch.sink, else sqlite:///<data_dir>/scores/scores.db).",
        ),
    ] = None,
    customers: Annotated[
        Path | None,
        typer.Option(
            "--customers", help="File of customer ids (unified or CRM), one a line; default: everyone.", dir_okay=False
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Score every customer of a feature snapshot (or the listed ones) and write the scores to a sink."""
    from serving.batch import score_customers

    report = score_customers(_settings(config), _parse_day(as_of, "--as-of"), sink, customers, console=console)
    console.print(report.render())


@app.command()
@user_errors_exit_cleanly
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: serving.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on (default: serving.port).")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: serving.workers).")] = None,
    config: ConfigOption = None,
) -> None:
    """Start the online service: POST /score and /kpis, GET /metadata, /healthz, /readyz, /metrics."""
    import os

    from custlens.settings import PROJECT_ROOT
    from serving.runtime import CONFIG_ENV

    settings = _settings(config)
    if not settings.api_key_set():
        err_console.print(
            "[yellow]warning:[/] CUSTLENS_API_KEYS is not set: /score, /kpis and /metadata will answer 401"
        )
    # The workers load the same settings: the config file by absolute path, the data folder
    # resolved from here, the worker count where BentoML reads it.
    env = dict(os.environ)
    if config is not None:
        env[CONFIG_ENV] = str(config.resolve())
    env["CUSTLENS_DATA_DIR"] = str(settings.data_dir.resolve())
    env["CUSTLENS_SERVING__WORKERS"] = str(workers or settings.serving.workers)
    host, port = host or settings.serving.host, port or settings.serving.port
    _check_can_listen(host, port)
    console.print(f"serving on http://{host}:{port} (readiness: GET /readyz)", highlight=False)
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:Custlens", "--host", host,
               "--port", str(port), "--working-dir", str(PROJECT_ROOT)]  # fmt: skip
    os.execvpe(sys.executable, command, env)  # BentoML takes over this process (and its signals)


def _check_can_listen(host: str, port: int) -> None:
    """A taken port or an address this machine does not have, as one line now rather than a
    traceback from BentoML's process manager after the start."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind((host, port))
    except OSError as exc:
        raise CustlensError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop what listens there, or choose "
            "another --host/--port (serving.host, serving.port)"
        ) from None


def _shown(value: Any) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "[dim]null[/]"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return str(value)


def _required_day(value: str, option: str) -> date:
    day = _parse_day(value, option)
    assert day is not None
    return day


def main() -> None:  # pragma: no cover - the console-script entry point
    sys.exit(app())
