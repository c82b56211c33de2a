"""Data sufficiency: every split of a model's frame counted (rows, positives, negatives), and a
split below the minimums named, with the key, for what it is not used."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from custlens.settings import TrainingSettings
from training.frames import CannotTrain, ModelFrame, Split
from training.specs import SPECS
from training.sufficiency import Sufficiency

SPLIT = Split(train=(date(2025, 1, 1),), validation=(date(2025, 4, 1),), test=date(2025, 7, 1))


def churn_frame(**per_split: tuple[int, int]) -> ModelFrame:
    """(churners, non-churners) of each split as label rows."""
    rows = [{"split": split, "churned": label} for split, (churners, others) in per_split.items()
            for label in [True] * churners + [False] * others]  # fmt: skip
    return ModelFrame("churn", SPLIT, "churn_v1", pd.DataFrame(rows))


def test_every_split_is_counted_by_class() -> None:
    frame = churn_frame(train=(300, 700), validation=(60, 190), test=(100, 150))

    data = Sufficiency.of(SPECS["churn"], frame, TrainingSettings())

    assert data.shortfalls == {}
    assert data.describe("validation") == "250 rows: 60 churners, 190 non-churners"
    assert data.params()["negatives_test"] == 150 and data.params()["rows_train"] == 1000
    assert data.tags() == {"data_train": "enough", "data_validation": "enough", "data_test": "enough"}


def test_too_few_of_one_class_in_the_test_window_is_not_promoted_and_says_why() -> None:
    frame = churn_frame(train=(300, 700), validation=(60, 190), test=(985, 15))

    data = Sufficiency.of(SPECS["churn"], frame, TrainingSettings())

    assert not data.enough("test") and data.measurable("test")
    assert data.reason("test") == "not promoted: only 15 non-churners in the test window (training.min_class_rows: 30)"


def test_too_few_validation_rows_are_not_tuned_on() -> None:
    frame = churn_frame(train=(300, 700), validation=(10, 10), test=(100, 150))

    data = Sufficiency.of(SPECS["churn"], frame, TrainingSettings(min_split_rows=50))

    assert data.reason("validation") == (
        "not tuned: only 20 rows in the validation window (training.min_split_rows: 50)"
    )
    assert data.enough("test") and data.enough("train")


def test_clv_counts_buyers_and_non_buyers() -> None:
    rows = pd.DataFrame({"split": ["train"] * 4 + ["validation", "test"], "revenue_next": [0, 10.5, -3, 0, 1, 0]})
    frame = ModelFrame("clv", SPLIT, "clv_v1", rows)

    data = Sufficiency.of(SPECS["clv"], frame, TrainingSettings(min_split_rows=1, min_class_rows=1))

    assert data.describe("train") == "4 rows: 1 buyer, 3 non-buyers"  # a net refund is no purchase
    assert data.reason("test") == "not promoted: only 0 buyers in the test window (training.min_class_rows: 1)"
    assert not data.measurable("test")


def test_an_empty_training_split_cannot_train() -> None:
    frame = churn_frame(train=(0, 0), validation=(60, 190), test=(100, 150))

    data = Sufficiency.of(SPECS["churn"], frame, TrainingSettings())

    with pytest.raises(CannotTrain, match=r"not trained: only 0 rows in the training rows at 2025-01-01..2025-01-01 "):
        data.require_training()


def test_a_count_of_one_reads_in_the_singular_and_others_in_the_plural() -> None:
    frame = churn_frame(train=(300, 700), validation=(1, 1), test=(2, 1))

    data = Sufficiency.of(SPECS["churn"], frame, TrainingSettings(min_split_rows=1))

    assert data.describe("validation") == "2 rows: 1 churner, 1 non-churner"
    assert data.describe("test") == "3 rows: 2 churners, 1 non-churner"
    assert data.reason("test") == "not promoted: only 1 non-churner in the test window (training.min_class_rows: 30)"
    assert Sufficiency.of(SPECS["churn"], churn_frame(train=(300, 700), validation=(1, 0), test=(2, 1)),
                          TrainingSettings(min_split_rows=2)).reason("validation") == (
        "not tuned: only 1 row in the validation window (training.min_split_rows: 2)"
    )  # fmt: skip
