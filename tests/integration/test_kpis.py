"""The KPI cube against a direct scan of a generated lake (1,000 customers, segments made up per
customer as a batch run would write them): the same groups, values and reasons for random periods
and every grouping."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from custlens.settings import Settings
from features.kpis import GROUPINGS, KpiCache, build_kpi_cube, build_segment_cubes, kpis, kpis_direct
from features.lake.ingest import ingest
from features.lake.tables import table_path
from features.sample.generate import DEFAULT_END, generate
from tests.support.business import SAMPLE_BUSINESS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(
        business=SAMPLE_BUSINESS, data_dir=tmp_path_factory.mktemp("kpis") / "data", pii_salt=SecretStr("test-salt")
    )
    generate(out_dir=settings.sample_dir, customers=1_000, seed=11, start=None, end=DEFAULT_END, dirty_rate=0.0,
             file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    build_kpi_cube(settings)
    # segments as a batch run would write them, a made-up but fixed one per customer (a few unscored)
    customers = pq.read_table(table_path(settings, "customers"), columns=["customer_id"]).column(0).to_pylist()
    rng = random.Random(3)
    scores = pd.DataFrame(
        [
            (customer, rng.choice(["Champions", "At risk", "New"]), rng.choice(["Deal seekers", "Loyal"]),
             rng.uniform(0, 5e6))
            for customer in customers if rng.random() < 0.9
        ],
        columns=["customer_id", "rfm_segment", "behavioural_segment", "predicted_clv"],
    )  # fmt: skip
    build_segment_cubes(settings, scores, DEFAULT_END)
    return settings


def test_the_cube_agrees_with_a_direct_scan_of_the_lake(generated: Settings) -> None:
    rng = random.Random(7)
    last = DEFAULT_END
    first = last - timedelta(days=3 * 365)
    questions: list[tuple[date, date, Any]] = [(first, last, None), (first, last, "month")]
    for by in (None, *GROUPINGS):
        for _ in range(2):
            start = first + timedelta(days=rng.randrange(0, 3 * 365))
            questions.append((start, min(last, start + timedelta(days=rng.randrange(0, 200))), by))
    with KpiCache() as cache:  # one cache for every question, as a service worker asks them
        for start, end, by in questions:
            cube, direct = kpis(generated, start, end, by, cache), kpis_direct(generated, start, end, by)
            assert cube.groups == direct.groups, (start, end, by)
            for fast, slow in zip(cube.values, direct.values, strict=True):
                where = (start, end, by, fast.group, fast.kpi)
                assert fast.missing == slow.missing, where
                if slow.value is None:
                    assert fast.value is None, where
                else:
                    assert fast.value is not None and math.isclose(
                        fast.value, slow.value, rel_tol=1e-9, abs_tol=1e-9
                    ), (where, fast.value, slow.value)
