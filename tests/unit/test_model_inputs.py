"""Each model version's inputs are declared once (features/model_inputs.py): its FeatureService
serves exactly those, the training frames and the segments read them, and no model reads a raw
instant (the day counts carry them)."""

from __future__ import annotations

import pytest

from features.catalog import STORED_FEATURES, feature
from features.model_inputs import SEGMENT_INPUTS, SERVICE_SPECS, TREE_INPUTS, ModelInputs
from training import frames
from training.packaging import SegmentsBundle

INSTANTS = {f.name for f in STORED_FEATURES if f.kind == "timestamp"}


def test_each_service_serves_exactly_its_models_inputs() -> None:
    from features.repo import feature_services

    for spec in SERVICE_SPECS:
        service = getattr(feature_services, spec.service)
        served = [field.name for projection in service.feature_view_projections for field in projection.features]

        assert sorted(served) == sorted(spec.inputs.names), spec.service
        assert not INSTANTS & set(served)


def test_the_trees_train_on_their_declared_inputs_and_the_segments_read_theirs() -> None:
    assert [*frames.NUMERIC_FEATURES, *frames.CATEGORY_FEATURES] == list(TREE_INPUTS.names)
    assert SegmentsBundle(rfm=None, behaviour=None).inputs == list(SEGMENT_INPUTS.names)
    assert all(feature(name).kind == "category" for name in TREE_INPUTS.categories)


def test_a_model_cannot_declare_a_raw_instant_as_an_input() -> None:
    with pytest.raises(ValueError, match="last_order_at is a timestamp"):
        ModelInputs(numbers=("orders_30d", "last_order_at"))
