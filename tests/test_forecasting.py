"""Stage 08 forecasting: yearly series, baselines, trajectory GRU, Fréchet scoring, prevalence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from sklearn.covariance import LedoitWolf

from sematlas.analysis import forecasting as fc

#: Fixed within-year offsets, centred: every year of a constructed series has the same spread.
OFFSETS = np.array([[0.3, -0.1], [-0.2, 0.25], [0.1, 0.05], [-0.2, -0.2]])
OFFSETS = OFFSETS - OFFSETS.mean(0)


def drifting(
    slope: tuple[float, float] = (0.05, -0.03), skip: tuple[int, ...] = (), thin: tuple[int, ...] = ()
) -> pd.DataFrame:
    """Studies of 1997-2018 whose year mean moves on a straight line; ``skip`` years have none, ``thin`` one."""
    rows = []
    for year in range(1997, 2019):
        if year in skip:
            continue
        centre = np.array([0.2, -0.1]) + np.asarray(slope) * (year - 1997)
        points = centre + (OFFSETS[:1] if year in thin else OFFSETS)
        rows += [
            {"year": year, "task_category": "a" if i % 2 else "b", "z_00": p[0], "z_01": p[1]}
            for i, p in enumerate(points)
        ]
    return pd.DataFrame(rows)


def test_yearly_series_against_numpy():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(8, 3))
    years = np.array([2000, 2000, 2000, 2001, 2002, 2002, 2002, 2002])
    series = fc.yearly_series(latents, years, min_studies=2, year_range=(1999, 2003))
    assert series.years.tolist() == [1999, 2000, 2001, 2002, 2003]
    assert series.n.tolist() == [0, 3, 1, 4, 0]
    assert series.observed.tolist() == [False, True, False, True, False]
    assert np.isnan(series.mean[[0, 2, 4]]).all() and np.isnan(series.cov[[0, 2, 4]]).all()
    for year, rows in ((2000, slice(0, 3)), (2002, slice(4, 8))):
        t = series.index(year)
        np.testing.assert_allclose(series.mean[t], latents[rows].mean(0))
        np.testing.assert_allclose(series.sample_cov[t], np.cov(latents[rows], rowvar=False, ddof=0))
        np.testing.assert_allclose(series.variance[t], latents[rows].var(0))
        np.testing.assert_allclose(series.cov[t], LedoitWolf().fit(latents[rows]).covariance_)
        # Shrinkage towards the scaled identity keeps the total variance.
        assert np.trace(series.cov[t]) == pytest.approx(np.trace(series.sample_cov[t]))
        assert 0.0 <= series.shrinkage[t] <= 1.0
    assert series.observed_years(until=2001).tolist() == [2000]


def test_yearly_series_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        fc.yearly_series(np.zeros((3, 2)), np.array([2000] * 3), min_studies=1)
    with pytest.raises(ValueError, match="outside"):
        fc.yearly_series(np.zeros((2, 2)), np.array([1990, 2000]), min_studies=2)


def test_series_by_group_and_table():
    frame = drifting()
    groups = fc.yearly_series_by_group(frame, min_studies=2)
    assert list(groups) == ["all", "a", "b"]
    assert groups["a"].n.sum() + groups["b"].n.sum() == groups["all"].n.sum() == len(frame)
    table = fc.series_table(groups)
    assert len(table) == 3 * 22 and set(table["group"]) == {"all", "a", "b"}
    assert {"mean_00", "mean_01", "var_00", "var_01", "shrinkage"} <= set(table.columns)
    assert all(len(c) == 4 for c in table["cov"])


def test_persistence_repeats_last_observed_year():
    # 2014 is empty, so the last observed year up to the cutoff is 2013.
    series = fc.yearly_series_by_group(drifting(skip=(2014,)), min_studies=2)["all"]
    forecast = fc.persistence_forecast(series, 2014, [2015, 2016])
    last = series.index(2013)
    for year in (2015, 2016):
        mean, cov = forecast.at(year)
        np.testing.assert_array_equal(mean, series.mean[last])
        np.testing.assert_array_equal(cov, series.cov[last])


def test_linear_trend_forecasts_a_linear_drift_exactly():
    frame = drifting()
    series = fc.yearly_series_by_group(frame, min_studies=2)["all"]
    held_out = list(range(2015, 2019))
    forecasts = {
        "linear_trend": fc.linear_trend_forecast(series, 2014, held_out),
        "persistence": fc.persistence_forecast(series, 2014, held_out),
    }
    for year in held_out:
        np.testing.assert_allclose(forecasts["linear_trend"].at(year)[0], series.mean[series.index(year)], atol=1e-10)
    # The pooled within-year covariance is the spread of the offsets.
    np.testing.assert_allclose(forecasts["linear_trend"].cov[0], np.cov(OFFSETS, rowvar=False), atol=1e-12)
    table = fc.frechet_by_year(frame[["z_00", "z_01"]].to_numpy(), frame["year"].to_numpy(), forecasts, 2014, 2)
    assert table["year"].unique().tolist() == held_out and (table["n"] == 4).all()
    trend = table[table["method"] == "linear_trend"]
    persistence = table[table["method"] == "persistence"]
    assert trend["frechet"].abs().max() < 1e-8
    assert (persistence["frechet"].to_numpy() > 1e-3).all()
    assert np.all(np.diff(persistence["mean_term"].to_numpy()) > 0)  # the error grows with the horizon


def test_a_forecast_is_scored_against_the_gaussian_fitted_to_the_year():
    rng = np.random.default_rng(1)
    observed = rng.normal(size=(9, 3)) + 2.0
    root = rng.normal(size=(3, 3))
    forecast = fc.Forecast(np.array([2016]), rng.normal(size=(1, 3)), (root @ root.T + 0.1 * np.eye(3))[None])
    table = fc.frechet_by_year(observed, np.full(9, 2016), {"f": forecast}, cutoff=2015, min_studies=5)
    mean, cov = forecast.at(2016)
    # By hand: ||mu_o - mu_f||^2 + Tr(S_o + S_f - 2 (S_o S_f)^(1/2)), S_o the year's sample covariance.
    cov_o = np.cov(observed, rowvar=False)
    root_product = np.real(scipy.linalg.sqrtm(cov_o @ cov))
    expected = ((observed.mean(0) - mean) ** 2).sum() + np.trace(cov_o + cov - 2 * root_product)
    assert table["frechet"].item() == pytest.approx(expected, rel=1e-9)


def test_gaussian_nll_is_the_per_study_likelihood():
    rng = np.random.default_rng(2)
    points = [rng.normal(size=(n, 3)) for n in (5, 7)]
    mean, logvar = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)) * 0.3
    direct = sum(
        0.5 * (np.log(2 * np.pi) + logvar[t] + (p - mean[t]) ** 2 / np.exp(logvar[t])).sum()
        for t, p in enumerate(points)
    ) / sum(len(p) for p in points)
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)
    value = fc.gaussian_nll(
        as_tensor(mean),
        as_tensor(logvar),
        as_tensor([p.mean(0) for p in points]),
        as_tensor([p.var(0) for p in points]),
        as_tensor([len(p) for p in points]),
    )
    assert float(value) == pytest.approx(direct)


def _fit(series: fc.YearlySeries, seed: int = 0) -> fc.TrajectoryGRU:
    return fc.fit_trajectory_gru(series, 2012, window=5, hidden_size=8, max_epochs=150, lr=0.03, seed=seed)[0]


@pytest.fixture(scope="module")
def drift_series() -> fc.YearlySeries:
    return fc.yearly_series_by_group(drifting(slope=(0.08, -0.05)), min_studies=2)["all"]


def test_gru_starts_as_persistence(drift_series):
    model = fc.TrajectoryGRU(latent_dim=2, hidden_size=4)
    forecast = fc.gru_forecast(model, drift_series, 2012, window=5)
    for year in range(2013, 2019):
        np.testing.assert_allclose(forecast.at(year)[0], drift_series.mean[drift_series.index(2012)], atol=1e-6)


@pytest.mark.slow
def test_gru_learns_a_drift_better_than_persistence(drift_series):
    model = _fit(drift_series)
    held_out = list(range(2013, 2019))
    forecasts = {
        "gru": fc.gru_forecast(model, drift_series, 2012, window=5),
        "persistence": fc.persistence_forecast(drift_series, 2012, held_out),
    }
    assert forecasts["gru"].years.tolist() == list(range(1998, 2019))
    frame = drifting(slope=(0.08, -0.05))
    table = fc.frechet_by_year(frame[["z_00", "z_01"]].to_numpy(), frame["year"].to_numpy(), forecasts, 2012, 2)
    mean = table.groupby("method")["frechet"].mean()
    assert mean["gru"] < 0.5 * mean["persistence"]


@pytest.mark.slow
def test_gru_is_deterministic(drift_series):
    first = fc.gru_forecast(_fit(drift_series, seed=3), drift_series, 2012, window=5)
    second = fc.gru_forecast(_fit(drift_series, seed=3), drift_series, 2012, window=5)
    np.testing.assert_array_equal(first.mean, second.mean)
    np.testing.assert_array_equal(first.cov, second.cov)


def test_empty_and_thin_years_are_handled():
    # Nothing before 2000, an empty 2005 inside the training years, a one-study 2016 among the held-out years.
    frame = drifting(skip=(1997, 1998, 1999, 2005), thin=(2016,))
    series = fc.yearly_series_by_group(frame, min_studies=2)["all"]
    assert series.observed_years(until=2014)[0] == 2000 and not series.observed[series.index(2005)]
    inputs = fc.gru_inputs(series, 2000, 2006)
    np.testing.assert_array_equal(inputs[5], inputs[4])  # 2005 carries 2004 forward
    with pytest.raises(ValueError, match="not observed"):
        fc.gru_inputs(series, 1999, 2006)
    model, nll = fc.fit_trajectory_gru(series, 2014, window=5, hidden_size=4, max_epochs=5, lr=0.01, seed=0)
    assert np.isfinite(nll)
    forecasts = {
        "gru": fc.gru_forecast(model, series, 2014, window=5),
        "persistence": fc.persistence_forecast(series, 2014, range(2015, 2019)),
        "linear_trend": fc.linear_trend_forecast(series, 2014, range(2015, 2019)),
    }
    assert np.isfinite(forecasts["gru"].mean).all()
    table = fc.frechet_by_year(frame[["z_00", "z_01"]].to_numpy(), frame["year"].to_numpy(), forecasts, 2014, 2)
    assert sorted(table["year"].unique()) == [2015, 2017, 2018]
    assert np.isfinite(table["frechet"]).all()
    with pytest.raises(ValueError, match="need 2"):
        fc.linear_trend_forecast(series, 2000, [2001])


def test_prevalence_tables():
    assignments = pd.DataFrame({"year": [2000, 2000, 2000, 2001, 2001], "cluster": [0, 1, -1, 1, 1]})
    share = fc.cluster_prevalence(assignments, {0: "C0", 1: "C1"})
    assert share.columns.tolist() == ["C0", "C1", "noise"]
    np.testing.assert_allclose(share.sum(1), 1.0)
    assert share.loc[2001, "C1"] == 1.0
    years = np.arange(2000, 2010)
    studies = pd.DataFrame({"year": years, "topic_00": 0.1, "topic_01": 0.01 * (years - 2000), "topic_02": 0.5})
    names = pd.Series(["flat", "rising", "also flat"], index=["topic_00", "topic_01", "topic_02"])
    topics = fc.topic_prevalence(studies, names, top=1)
    assert topics.columns.tolist() == ["01 rising"] and topics.index.tolist() == years.tolist()
