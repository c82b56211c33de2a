"""The `btyd` feature family on tiny hand-made lakes: fitted on the cutoff's own history only, the
same numbers as the baselines' BG/NBD and Gamma-Gamma on the same summary, NULL (and said) when the
history cannot fit them, and a fit file beside the snapshot."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from custlens.settings import Settings
from features import layout
from features.btyd import FEATURE_NAMES, fit_sample, stale_windows
from features.catalog import family_features
from features.model_inputs import TREE_INPUTS, TREE_INPUTS_V2
from features.snapshots import build_snapshots, snapshot_path
from tests.unit.test_snapshots import customer, order, write_lake
from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_summary
from training.frames import Split, btyd_windows_note

CUTOFF = date(2024, 7, 1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def _history(customers: int = 80, seed: int = 3) -> tuple[list[dict], list[dict]]:
    """Customers with 1-6 orders each over 2023 to mid-2024, most with repeat purchase days."""
    rng = np.random.default_rng(seed)
    people, orders = [], []
    for k in range(customers):
        cid = f"C{k:03d}"
        people.append(customer(cid, signup="2022-06-01"))
        start = date(2023, 1, 1) + timedelta(days=int(rng.integers(0, 300)))
        for _ in range(int(rng.integers(1, 7))):
            day = start + timedelta(days=int(rng.integers(0, (CUTOFF - start).days)))
            orders.append(order(cid, f"{day.isoformat()} 10:00", f"{rng.integers(10, 200)}.00"))
    return people, orders


def _btyd(settings: Settings, cutoff: date = CUTOFF) -> pd.DataFrame:
    return pd.read_parquet(snapshot_path(settings, "btyd", cutoff)).set_index("customer_id")


def _summary(orders: list[dict], cutoff: date, population: pd.Index) -> pd.DataFrame:
    frame = pd.DataFrame(orders)
    return rfm_summary(frame, pd.Timestamp(cutoff.isoformat(), tz="UTC"), population)


def test_order_after_cutoff_never_changes_the_btyd_family(settings: Settings) -> None:
    # given a lake built once, and the same lake with orders at and after the cutoff added
    people, orders = _history()
    write_lake(settings, customers=people, orders=orders)
    build_snapshots(settings, [CUTOFF])
    before = _btyd(settings)
    fit_before = json.loads(layout.btyd_fit_file(CUTOFF, settings.data_dir).read_text())
    later = [order("C001", "2024-07-01 00:00", "999.00"), order("C002", "2024-08-15 09:00", "50.00"),
             order("C003", "2025-01-02 12:00", "10.00")]  # fmt: skip
    write_lake(settings, customers=people, orders=orders + later)
    # when it is built again
    build_snapshots(settings, [CUTOFF])
    # then neither the values nor the fitted parameters move
    pd.testing.assert_frame_equal(_btyd(settings), before)
    assert json.loads(layout.btyd_fit_file(CUTOFF, settings.data_dir).read_text()) == fit_before


def test_btyd_family_matches_the_baselines_on_the_same_summary(settings: Settings) -> None:
    # given a lake with enough repeat buyers to fit
    people, orders = _history()
    write_lake(settings, customers=people, orders=orders)
    # when the snapshot is built
    build_snapshots(settings, [CUTOFF])
    family = _btyd(settings)
    # then every value is what training.baselines.btyd computes from rfm_summary of the orders
    summary = _summary(orders, CUTOFF, family.index)
    bg, gg = BetaGeo.fit(summary[summary["T"] > 0]), GammaGamma.fit(summary)
    windows = {"churn_window": settings.training.churn_window_days,
               "repurchase_window": settings.training.repurchase_window_days,
               "clv_window": settings.training.clv_window_days}  # fmt: skip
    expected = {
        "btyd_prob_alive": bg.prob_alive(summary),
        "btyd_prob_no_purchase_churn_window": bg.prob_no_purchase(summary, windows["churn_window"]),
        "btyd_expected_purchases_churn_window": bg.expected_purchases(summary, windows["churn_window"]),
        "btyd_prob_no_purchase_repurchase_window": bg.prob_no_purchase(summary, windows["repurchase_window"]),
        "btyd_expected_purchases_repurchase_window": bg.expected_purchases(summary, windows["repurchase_window"]),
        "btyd_expected_purchases_clv_window": bg.expected_purchases(summary, windows["clv_window"]),
        "btyd_expected_order_value": gg.expected_order_value(summary),
        "btyd_expected_revenue_clv_window": expected_revenue(bg, gg, summary, windows["clv_window"]),
    }
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(family[name].to_numpy(), expected[name], rtol=1e-6, err_msg=name)
    # and the fit file says the parameters, the windows and what was fitted on
    fit = json.loads(layout.btyd_fit_file(CUTOFF, settings.data_dir).read_text())
    assert fit["bgnbd"] == pytest.approx({"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b}, rel=1e-9)
    assert fit["window_days"] == windows
    assert fit["fitted_on"] == fit["buyers"] == int((summary["T"] > 0).sum())
    assert fit["unfitted"] == []
    assert list(family.columns) == ["event_timestamp", *(f.name for f in family_features("btyd"))]


def test_too_few_repeat_buyers_give_nulls_and_a_warning(settings: Settings) -> None:
    # given a lake where only two customers ever came back
    people = [customer(c) for c in "ABCD"]
    orders = [order("A", "2024-01-02 10:00", "10.00"), order("A", "2024-03-02 10:00", "20.00"),
              order("B", "2024-02-02 10:00", "30.00"), order("B", "2024-05-02 10:00", "40.00"),
              order("C", "2024-04-02 10:00", "50.00")]  # fmt: skip
    write_lake(settings, customers=people, orders=orders)
    # when the snapshot is built
    report = build_snapshots(settings, [CUTOFF])
    # then the family is there, all NULL, and the build report says why
    family = _btyd(settings)
    assert list(family.index) == ["A", "B", "C", "D"]
    assert family[list(FEATURE_NAMES)].isna().all().all()
    assert "repeat purchase day" in " ".join(report.btyd_unfitted[CUTOFF])
    console = Console(record=True, width=200)
    console.print(report.render())
    assert f"btyd at {CUTOFF}: NULL" in console.export_text()
    assert json.loads(layout.btyd_fit_file(CUTOFF, settings.data_dir).read_text())["bgnbd"] is None


def test_fit_sample_is_fixed_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # given more buyers than the fit sample holds
    monkeypatch.setattr("features.btyd.FIT_SAMPLE_CUSTOMERS", 10)
    summary = pd.DataFrame({"frequency": np.arange(30), "recency": 1.0, "T": np.r_[np.zeros(5), np.ones(25)],
                            "monetary_value": 1.0}, index=pd.Index([f"c{i}" for i in range(30)]))  # fmt: skip
    # when it is drawn twice
    first, second = fit_sample(summary), fit_sample(summary)
    # then it is the same 10 buyers, never a customer without a purchase day
    assert list(first.index) == list(second.index) and len(first) == 10
    assert (first["T"] > 0).all()


def test_a_model_of_other_windows_than_the_snapshots_is_told_so(settings: Settings) -> None:
    # given snapshots built for the default windows, and settings whose churn window changed since
    people, orders = _history()
    write_lake(settings, customers=people, orders=orders)
    build_snapshots(settings, [CUTOFF])
    longer = settings.model_copy(update={"training": settings.training.model_copy(update={"churn_window_days": 120})})
    split = Split(train=(), validation=(CUTOFF,), test=CUTOFF)
    # then the snapshots are stale for them: a v2 frame says so, a v1 frame (no btyd feature) has nothing to say
    assert stale_windows(settings, [CUTOFF]) == [] and stale_windows(longer, [CUTOFF]) == [CUTOFF]
    assert re.search(r"built for other label windows.*features build", btyd_windows_note(longer, split, TREE_INPUTS_V2))
    assert btyd_windows_note(settings, split, TREE_INPUTS_V2) == btyd_windows_note(longer, split, TREE_INPUTS) == ""
