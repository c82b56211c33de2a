"""The test-window figures of a run (training/plots.py): the gains and calibration figures draw every
named predictor of the same test rows on one figure, the run's own first and in front, with the
reference lines, and nothing of the figure falls outside its canvas."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from training import plots
from training.evaluation import equal_count_bins, expected_calibration_error

ROWS = 400


def predictors(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A binary label and three scores of it: a good one (the run's own), a weaker one and noise."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(size=ROWS)
    label = (rng.uniform(size=ROWS) < truth).astype(float)
    noise = rng.uniform(size=ROWS)
    return label, {"candidate": truth, "bgnbd": 0.5 * truth + 0.5 * noise, "champion v1": noise}


def legend_names(figure: Figure) -> list[str]:
    legend = figure.axes[0].get_legend()
    assert legend is not None
    return [text.get_text() for text in legend.get_texts()]


def drawn_inside(figure: Figure) -> bool:
    """Every axis label and title lies within the figure once it is rendered as it is logged."""
    figure.savefig(io.BytesIO(), format="png")
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    canvas = figure.bbox
    texts = [text for axis in figure.axes for text in (axis.xaxis.label, axis.yaxis.label, axis.title)]
    return all(
        canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1
        for box in (text.get_window_extent(renderer) for text in texts if text.get_text())
    )


def test_gains_draws_each_predictor_first_then_perfect_and_random() -> None:
    label, scores = predictors()

    figure = plots.gains_figure(label, scores, "churn: cumulative gains (test)")

    assert legend_names(figure) == ["candidate", "bgnbd", "champion v1", "perfect (ranked by the outcome)", "random"]
    lines = figure.axes[0].get_lines()
    own = lines[0]
    assert own.get_linewidth() > max(line.get_linewidth() for line in lines[1:])
    assert own.get_zorder() > max(line.get_zorder() for line in lines[1:])
    assert len({line.get_color() for line in lines[:3]}) == 3
    for line in lines[:4]:  # every ranking starts at nobody reached and ends at everything captured
        x, y = line.get_xydata().T  # type: ignore[union-attr]
        assert (x[0], y[0]) == (0.0, 0.0) and (x[-1], y[-1]) == pytest.approx((1.0, 1.0))
    perfect = lines[3].get_ydata()
    assert all(np.all(np.asarray(line.get_ydata()) <= np.asarray(perfect) + 1e-12) for line in lines[:3])
    assert drawn_inside(figure)
    plots.close(figure)


def test_gains_of_many_rows_is_drawn_at_a_bounded_number_of_points() -> None:
    rng = np.random.default_rng(1)
    revenue = rng.gamma(0.5, 100.0, size=50_000)

    figure = plots.gains_figure(revenue, {"candidate": revenue + rng.normal(0, 50, size=revenue.size)}, "clv")

    assert len(figure.axes[0].get_lines()[0].get_xdata()) <= 1001  # type: ignore[arg-type]
    plots.close(figure)


def test_calibration_draws_each_predictor_at_the_bins_of_the_calibration_error() -> None:
    label, scores = predictors()

    figure = plots.calibration_figure(label, scores, "churn: calibration (test)")

    assert legend_names(figure) == ["candidate", "bgnbd", "champion v1", "perfectly calibrated"]
    calibration, counts = figure.axes
    for line, (name, score) in zip(calibration.get_lines(), scores.items(), strict=False):
        bins = equal_count_bins(score)
        predicted, observed = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        np.testing.assert_allclose(predicted, [score[b].mean() for b in bins])
        weighted = sum(len(b) * abs(o - p) for b, o, p in zip(bins, observed, predicted, strict=True)) / ROWS
        assert weighted == pytest.approx(expected_calibration_error(label, score)), name
    # where the customers are: one step histogram per predictor, in the predictor's colour
    assert len(counts.patches) == len(scores)
    for patch, line in zip(counts.patches, calibration.get_lines(), strict=False):
        assert patch.get_edgecolor() == pytest.approx(to_rgba(line.get_color(), patch.get_edgecolor()[3]))
    assert drawn_inside(figure)
    plots.close(figure)


def test_calibration_of_a_value_is_predicted_against_actual_by_decile_without_a_histogram() -> None:
    rng = np.random.default_rng(2)
    revenue = rng.gamma(0.5, 100.0, size=ROWS)
    scores = {"candidate": revenue * 0.9 + 5.0, "bgnbd_gamma_gamma": np.full(ROWS, revenue.mean())}

    figure = plots.calibration_figure(revenue, scores, "clv: predicted vs actual by decile (test)", probability=False)

    assert len(figure.axes) == 1
    assert legend_names(figure) == ["candidate", "bgnbd_gamma_gamma", "perfectly calibrated"]
    model = figure.axes[0].get_lines()[0]
    assert len(model.get_xdata()) == 10  # type: ignore[arg-type]
    # a constant prediction is one mean predicted value, whatever its bins hold
    assert set(np.round(figure.axes[0].get_lines()[1].get_xdata(), 9)) == {round(revenue.mean(), 9)}  # type: ignore[arg-type]
    assert drawn_inside(figure)
    plots.close(figure)
