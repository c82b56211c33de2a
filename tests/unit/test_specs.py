"""The per-model specs: every supervised model has one that agrees with the labels, the metrics
and the baselines, and the training code asks the spec instead of branching on a model's name."""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custlens.settings import Settings
from features.lake.tables import cutoff_instant, table_path
from training.baselines import BASELINES, baselines_for
from training.frames import ModelFrame, Split
from training.labels import compute_labels
from training.specs import SPECS
from training.train import MODELS

TRAINING = Path(__file__).resolve().parents[2] / "training"
TEST_CUTOFF = date(2025, 1, 1)


def write_orders(settings: Settings, customers: int, seed: int) -> list[str]:
    """Completed orders of simulated customers over the two years before TEST_CUTOFF."""
    rng = np.random.default_rng(seed)
    ids, instants, amounts = [], [], []
    end = pd.Timestamp(cutoff_instant(TEST_CUTOFF))
    for n in range(customers):
        for days_before in rng.uniform(1, 730, size=1 + rng.poisson(4)):
            ids.append(f"C{n:03d}")
            instants.append((end - pd.Timedelta(days=float(days_before))).floor("s").to_pydatetime())
            amounts.append(float(rng.gamma(4.0, 50.0)))
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    table = pa.table({"customer_id": ids, "ordered_at": pa.array(instants, pa.timestamp("us", "UTC")),
                      "status": ["completed"] * len(ids), "net_amount": amounts})  # fmt: skip
    pq.write_table(table, table_path(settings, "orders"))
    return sorted(set(ids))


def test_every_model_but_the_segments_has_a_spec_under_its_own_name() -> None:
    # the segments are clusters, not a label: trained apart, last
    assert set(MODELS) - set(SPECS) == {"segments"} and MODELS[-1] == "segments"
    assert set(SPECS) <= set(MODELS)
    assert all(spec.name == name for name, spec in SPECS.items())


def test_every_spec_learns_a_label_column_that_compute_labels_gives(settings: Settings) -> None:
    write_orders(settings, customers=3, seed=1)

    columns = set(compute_labels(settings, [TEST_CUTOFF]).columns)

    for spec in SPECS.values():
        assert spec.label in columns, spec.name
        assert spec.timing is None or spec.timing.target in columns, spec.name


def test_every_spec_is_measured_by_its_primary_metric() -> None:
    rng = np.random.default_rng(0)
    actual = (rng.random(200) < 0.4).astype(float) * rng.gamma(2.0, 100.0, 200)

    for spec in SPECS.values():
        label = actual > 0 if spec.output == "probability" else actual
        metrics = spec.test_metrics(label.astype(float), rng.random(200))
        assert np.isfinite(metrics[spec.primary_metric]), spec.name


def test_only_probabilities_are_calibrated_and_only_classifiers_output_them() -> None:
    for spec in SPECS.values():
        assert (spec.output == "probability") == (spec.objective == "binary"), spec.name
        assert not spec.calibrated or spec.output == "probability", spec.name


def test_every_spec_names_baselines_that_exist() -> None:
    for spec in SPECS.values():
        assert spec.baselines, f"{spec.name} must beat at least one baseline"
        assert set(spec.baselines) <= set(BASELINES), spec.name


def test_bgnbd_predicts_no_purchase_for_churn_and_a_purchase_for_repurchase(settings: Settings) -> None:
    ids = write_orders(settings, customers=200, seed=2)
    same_window = settings.training.model_copy(update={"churn_window_days": 30, "repurchase_window_days": 30})
    settings = settings.model_copy(update={"training": same_window})
    split = Split(train=(date(2024, 10, 1),), validation=(date(2024, 11, 1),), test=TEST_CUTOFF)
    rows = pd.DataFrame({"customer_id": ids, "split": "test"})

    churn = baselines_for(settings, SPECS["churn"])["bgnbd"](ModelFrame("churn", split, "churn_v1", rows))
    repurchase = baselines_for(settings, SPECS["repurchase"])["bgnbd"](
        ModelFrame("repurchase", split, "repurchase_v1", rows)
    )

    assert ((churn.predicted > 0) & (churn.predicted < 1)).all()
    np.testing.assert_allclose(churn.predicted + repurchase.predicted, 1.0)
    assert set(churn.params) == {"r", "alpha", "a", "b"} and churn.params == repurchase.params  # one fit, logged


@pytest.mark.parametrize("module", ["train.py", "registry.py", "baselines/__init__.py"])
def test_training_asks_the_spec_and_never_spells_a_model_name(module: str) -> None:
    """A `model == "clv"` branch or a dict keyed by model names would bring back what the specs replace."""
    tree = ast.parse((TRAINING / module).read_text(encoding="utf-8"))

    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}

    assert not literals & set(SPECS)


def test_the_known_directions_become_monotone_constraints_in_the_matrix_order() -> None:
    columns = ["orders_365d", "btyd_prob_alive", "days_since_last_order"]

    assert SPECS["churn"].tree_params(columns) == {
        "monotone_constraints": [0, -1, 1], "monotone_constraints_method": "intermediate"}  # fmt: skip
    assert SPECS["repurchase"].tree_params(columns)["monotone_constraints"] == [0, 1, -1]
    assert SPECS["clv"].tree_params(columns) == {}  # no direction holds for every customer's value
    assert SPECS["churn"].tree_params(["orders_365d"]) == {}
