"""Each model version's inputs are declared once (features/model_inputs.py): its FeatureService
serves exactly those, the training frames and the segments read them, and no model reads a raw
instant (the day counts carry them)."""

from __future__ import annotations

import pytest

from features.catalog import BTYD_SUMMARY_FEATURES, feature
from features.model_inputs import SEGMENT_INPUTS, TREE_INPUTS, ModelInputs
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
