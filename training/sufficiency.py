"""How much data each split of a model's frame holds, and what it is enough for: the training
rows to train at all, the validation rows to tune and calibrate, the test rows to promote
(`training.min_split_rows`, `training.min_class_rows`). A split below them is stated in the run
and the summary, with its counts, and never used as if it were enough."""

from __future__ import annotations

from dataclasses import dataclass

from custlens.settings import TrainingSettings
from custlens.words import counted
from training.frames import CannotTrain, ModelFrame, SplitName
from training.specs import ModelSpec

SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
# How a split is named in a sentence, and what a split too small is not used for.
WHERE = {"train": "training rows", "validation": "validation window", "test": "test window"}
NOT_USED_FOR = {"train": "not trained", "validation": "not tuned", "test": "not promoted"}


@dataclass(frozen=True)
class SplitCount:
    rows: int
    positives: int  # the spec's positive class: churners, buyers

    @property
    def negatives(self) -> int:
        return self.rows - self.positives


@dataclass(frozen=True)
class Sufficiency:
    """Rows, positives and negatives of each split, and why a split falls short (absent: enough)."""

    classes: tuple[str, str]  # (positive, negative) in words, one of each: ("churner", "non-churner")
    counts: dict[SplitName, SplitCount]
    shortfalls: dict[SplitName, str]

    @classmethod
    def of(cls, spec: ModelSpec, frame: ModelFrame, minimums: TrainingSettings) -> Sufficiency:
        counts, shortfalls = {}, {}
        train = frame.split.train
        # the training cutoffs named: a history that starts after them (snapshots built before the
        # first order) leaves them empty
        where = {**WHERE, "train": f"{WHERE['train']} at {train[0]}..{train[-1]}"}
        for split in SPLITS:
            rows = frame.part(split)
            count = counts[split] = SplitCount(len(rows), int(spec.is_positive(rows).sum()))
            if count.rows < minimums.min_split_rows:
                minimum = minimums.min_split_rows
                shortfalls[split] = (
                    f"only {counted(count.rows, 'row')} in the {where[split]} (training.min_split_rows: {minimum})"
                )
                continue
            fewest, name = min((count.positives, spec.classes[0]), (count.negatives, spec.classes[1]))
            if fewest < minimums.min_class_rows:
                shortfalls[split] = (
                    f"only {counted(fewest, name)} in the {where[split]} "
                    f"(training.min_class_rows: {minimums.min_class_rows})"
                )
        return cls(spec.classes, counts, shortfalls)

    def enough(self, split: SplitName) -> bool:
        return split not in self.shortfalls

    def measurable(self, split: SplitName) -> bool:
        """Whether the split's metrics are defined at all (rows of both classes), enough or not."""
        count = self.counts[split]
        return count.positives > 0 and count.negatives > 0

    def require_training(self) -> None:
        if not self.enough("train"):
            raise CannotTrain(f"{NOT_USED_FOR['train']}: {self.shortfalls['train']}")

    def reason(self, split: SplitName) -> str:
        """`not tuned: only 15 non-churners in the validation window (training.min_class_rows: 30)`."""
        return f"{NOT_USED_FOR[split]}: {self.shortfalls[split]}"

    def params(self) -> dict[str, int]:
        """The counts as run parameters: rows_test, positives_test, negatives_test, ..."""
        logged: dict[str, int] = {}
        for split, count in self.counts.items():
            logged |= {f"rows_{split}": count.rows, f"positives_{split}": count.positives,
                       f"negatives_{split}": count.negatives}  # fmt: skip
        return logged

    def tags(self) -> dict[str, str]:
        """One tag per split: `enough`, or why it falls short and what it is not used for."""
        return {f"data_{split}": self.reason(split) if split in self.shortfalls else "enough" for split in SPLITS}

    def describe(self, split: SplitName) -> str:
        """`1,204 rows: 312 churners, 892 non-churners`."""
        count = self.counts[split]
        positive, negative = self.classes
        return (
            f"{counted(count.rows, 'row')}: {counted(count.positives, positive)}, {counted(count.negatives, negative)}"
        )
