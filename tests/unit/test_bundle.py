"""A model bundle is its model's one scoring path: it reads the features it was trained on by
name, in its own order, whatever today's catalog says; an inconsistent bundle or a service that
no longer serves what it reads is refused, never scored. Tiny LightGBM models on random rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from custlens.errors import CustlensError
from features.catalog import STORED_FEATURES
from features.model_inputs import TREE_INPUTS
from training import frames
from training.frames import CATEGORY_FEATURES, NUMERIC_FEATURES, feature_matrix
from training.packaging import CustlensModel, ModelBundle

LABELS = {"city": ["hanoi", "hcmc", "danang"], "acquisition_channel": ["google", "facebook"], "age_band": ["<25"]}


def random_rows(count: int, seed: int) -> pd.DataFrame:
    """Every tree input, a tenth NULL; one category value the training rows never saw."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({name: rng.gamma(2.0, 10.0, count) for name in NUMERIC_FEATURES})
    for name in CATEGORY_FEATURES:
        labels = LABELS.get(name, ["promoter", "passive", "detractor"])
        rows[name] = pd.Series(rng.choice(labels, count), dtype="object")
    for name in rows.columns:
        rows.loc[rng.random(count) < 0.1, name] = None
    rows.loc[0, "city"] = "hue"  # unseen in training: coded NULL, like LightGBM does
    return rows


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    train = random_rows(400, seed=1)
    train_x = feature_matrix(train)
    # A label many inputs move, so the trees split on many of them.
    signal = train_x[list(NUMERIC_FEATURES)].fillna(20.0).to_numpy() @ np.random.default_rng(0).normal(
        size=len(NUMERIC_FEATURES)
    )
    label = (signal + 30.0 * (train_x["city"] == "hanoi").to_numpy() > np.median(signal)).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 10, "verbosity": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(train_x, label), num_boost_round=20)
    categories = {name: list(train_x[name].cat.categories) for name in CATEGORY_FEATURES}
    return ModelBundle(
        model="churn", booster=booster, features=list(train_x.columns), categories=categories,
        calibration=(1.2, -0.3), feature_service="churn_v1",
    )  # fmt: skip


@pytest.fixture()
def saved(bundle: ModelBundle, tmp_path: Path) -> Path:
    return bundle.save(tmp_path)


def rewrite(path: Path, **changes: object) -> None:
    state = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**state, **changes}), encoding="utf-8")


def test_a_bundle_scores_rows_exactly_as_its_trees_read_the_training_frame(bundle: ModelBundle) -> None:
    rows = random_rows(200, seed=2)

    raw = bundle.raw_score(rows)

    # The trees on the pandas frame they were trained from, categories coded by LightGBM itself.
    np.testing.assert_array_equal(raw, bundle.booster.predict(feature_matrix(rows, bundle.categories)))
    assert len(np.unique(raw)) > 10


def test_a_reordered_catalog_scores_a_saved_bundle_the_same(
    bundle: ModelBundle, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = random_rows(200, seed=3)
    before = bundle.predict(rows)

    # Today's catalog and model inputs in another order, the frame's columns too: a bundle read
    # by position would now put every number in the wrong place, at the same width.
    monkeypatch.setattr(frames, "NUMERIC_FEATURES", NUMERIC_FEATURES[::-1])
    monkeypatch.setattr(frames, "CATEGORY_FEATURES", CATEGORY_FEATURES[::-1])
    monkeypatch.setattr("features.catalog.STORED_FEATURES", STORED_FEATURES[::-1])
    reordered = rows[rows.columns[::-1]]
    loaded = ModelBundle.load(saved)
    pyfunc = CustlensModel()
    pyfunc.load_context(SimpleNamespace(artifacts={"bundle": str(saved)}))  # type: ignore[arg-type]

    pd.testing.assert_frame_equal(loaded.predict(reordered), before)
    pd.testing.assert_frame_equal(pyfunc.predict(None, reordered), before)  # type: ignore[arg-type]
    assert loaded.features == bundle.features


def test_rows_without_a_feature_the_bundle_reads_are_refused(bundle: ModelBundle) -> None:
    rows = random_rows(5, seed=4).drop(columns=["orders_30d"])

    with pytest.raises(CustlensError, match=r"the churn model reads orders_30d, which the features to score lack"):
        bundle.predict(rows)


def test_a_bundle_whose_trees_read_another_order_refuses_at_load(bundle: ModelBundle, saved: Path) -> None:
    swapped = list(bundle.features)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    rewrite(saved, features=swapped)

    with pytest.raises(
        CustlensError, match=r"custlens-churn version 7: .*another order \(orders_90d, orders_30d moved\)"
    ):
        ModelBundle.load(saved, origin="custlens-churn version 7")


def test_a_bundle_whose_trees_read_other_features_refuses_at_load(bundle: ModelBundle, saved: Path) -> None:
    rewrite(saved, features=["orders_7d", *bundle.features[1:]])

    with pytest.raises(
        CustlensError, match=r"listed but not in the trees: orders_7d; in the trees but not listed: orders_30d"
    ):
        ModelBundle.load(saved)


def test_a_bundle_without_a_saved_feature_list_refuses_at_load(saved: Path) -> None:
    state = json.loads(saved.read_text(encoding="utf-8"))
    del state["features"]
    saved.write_text(json.dumps(state), encoding="utf-8")

    with pytest.raises(CustlensError, match=r"does not say which features it reads; retrain it"):
        ModelBundle.load(saved)


def test_a_bundle_whose_service_no_longer_serves_a_feature_is_refused(bundle: ModelBundle) -> None:
    served = [name for name in TREE_INPUTS.names if name != "city"]

    bundle.require_served({"churn_v1": TREE_INPUTS.names})
    with pytest.raises(CustlensError, match=r"reads city, which its feature service churn_v1 does not serve.*apply"):
        bundle.require_served({"churn_v1": served})
    with pytest.raises(CustlensError, match=r"names the feature service churn_v1, which the feature store does not"):
        bundle.require_served({"churn_v2": TREE_INPUTS.names})
