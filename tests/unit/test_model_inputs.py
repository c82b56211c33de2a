"""Each model version's inputs are declared once (features/model_inputs.py): its FeatureService
serves exactly those, the training frames and the segments read them, and no model reads a raw
instant (the day counts carry them)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from features.catalog import BTYD_SUMMARY_FEATURES, family_features, feature
from features.model_inputs import SEGMENT_INPUTS, TREE_INPUTS, TREE_INPUTS_V2, ModelInputs, spec_of_service
from training import frames
from training.packaging import SegmentsBundle


def test_the_trees_train_on_their_declared_inputs_and_the_segments_read_theirs() -> None:
    assert [*frames.NUMERIC_FEATURES, *frames.CATEGORY_FEATURES] == list(TREE_INPUTS.names)
    assert SegmentsBundle(rfm=None, behaviour=None).inputs == list(SEGMENT_INPUTS.names)
    assert all(feature(name).kind == "category" for name in TREE_INPUTS.categories)


def test_a_model_cannot_declare_a_raw_instant_as_an_input() -> None:
    with pytest.raises(ValueError, match="last_order_at is a timestamp"):
        ModelInputs(numbers=("orders_30d", "last_order_at"))


def test_version_1_services_do_not_read_the_btyd_summary_that_came_after_them() -> None:
    # the trained v1 models read what they were trained on; a version that reads these is a new one
    assert not set(BTYD_SUMMARY_FEATURES) & set(TREE_INPUTS.names)
    assert not set(BTYD_SUMMARY_FEATURES) & set(SEGMENT_INPUTS.names)


def test_version_2_services_read_version_1_the_btyd_summary_and_the_btyd_family() -> None:
    btyd = {f.name for f in family_features("btyd")}
    assert not btyd & set(TREE_INPUTS.names)  # v1 stays what registered v1 versions read
    assert TREE_INPUTS_V2.names[: len(TREE_INPUTS.numbers)] == TREE_INPUTS.numbers
    assert set(TREE_INPUTS_V2.names) == set(TREE_INPUTS.names) | set(BTYD_SUMMARY_FEATURES) | btyd
    for model in ("churn", "repurchase", "clv"):
        assert spec_of_service(f"{model}_v1").inputs == TREE_INPUTS
        assert spec_of_service(f"{model}_v2").inputs == TREE_INPUTS_V2


def test_a_training_frame_reads_the_inputs_of_its_service() -> None:
    split = frames.Split(train=(), validation=(date(2024, 1, 1),), test=date(2024, 2, 1))
    for service, inputs in (("churn_v1", TREE_INPUTS), ("churn_v2", TREE_INPUTS_V2)):
        frame = frames.ModelFrame("churn", split, service, pd.DataFrame())
        assert frame.inputs == inputs and frame.features == list(inputs.names)
