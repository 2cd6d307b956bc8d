"""Seeded, stratified train/validation/test splits and the development subset.

Studies are stratified by quantile bins (of year and peak count, in curation);
groups of flagged duplicate studies are drawn whole, so a study and its twin
never land in different splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def quantile_bins(values: pd.Series, n_bins: int) -> tuple[pd.Series, np.ndarray]:
    """Bin values by their quantiles, keeping equal values in one bin.

    Returns
    -------
    bins : Series of int
        Bin index per value, ``0 .. len(edges) - 2``.
    edges : ndarray
        Unique quantile edges (fewer bins than asked when values repeat a lot).
    """
    edges = np.unique(np.quantile(values.to_numpy(dtype=float), np.linspace(0, 1, n_bins + 1)))
    bins = np.searchsorted(edges[1:-1], values.to_numpy(dtype=float), side="right")
    return pd.Series(bins, index=values.index, dtype=int), edges


def _allocate(n: int, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Split ``n`` into integer parts proportional to ``fractions`` (largest remainder, random ties)."""
    exact = np.asarray(fractions, dtype=float) * n
    counts = np.floor(exact).astype(int)
    remainder = exact - counts
    order = np.lexsort((rng.random(len(counts)), -remainder))
    counts[order[: n - counts.sum()]] += 1
    return counts


def _units(strata: pd.Series, groups: pd.Series | None) -> pd.DataFrame:
    """Sampling units: a study, or a whole group of flagged duplicates (stratum of its first member)."""
    unit = strata.index.to_series() if groups is None else groups.reindex(strata.index).fillna(strata.index.to_series())
    return pd.DataFrame({"unit": unit.astype(str), "stratum": strata}).sort_index()


def stratified_split(
    strata: pd.Series, fractions: Sequence[float], seed: int, groups: pd.Series | None = None
) -> pd.Series:
    """Seeded train/val/test split, proportional within each stratum.

    Parameters
    ----------
    strata : Series
        Stratum label per study (index: study id).
    fractions : sequence of 3 floats
        Train, validation and test fractions.
    seed : int
    groups : Series, optional
        Group id per study (``<NA>`` for none): studies of one group land in one split.

    Returns
    -------
    Series of str (``train``/``val``/``test``), indexed like ``strata``.
    """
    rng = np.random.default_rng(seed)
    units = _units(strata, groups)
    first = units.drop_duplicates("unit")
    assignment: dict[str, str] = {}
    for _, members in first.groupby("stratum", sort=True):
        order = rng.permutation(members["unit"].to_numpy())
        counts = _allocate(len(order), fractions, rng)
        labels = np.repeat(np.array(SPLITS), counts)
        assignment.update(zip(order, labels))
    return units["unit"].map(assignment).reindex(strata.index).rename("split")


def stratified_subset(strata: pd.Series, size: int, seed: int, groups: pd.Series | None = None) -> pd.Index:
    """Seeded subset of about ``size`` studies, proportional to the strata.

    Duplicate groups are drawn whole, so the subset may exceed ``size`` by the
    size of a group. Returns the chosen study ids.
    """
    units = _units(strata, groups)
    first = units.drop_duplicates("unit")
    if size >= len(first):
        return strata.index
    rng = np.random.default_rng(seed)
    sizes = first.groupby("stratum", sort=True).size()
    quota = _allocate(size, (sizes / sizes.sum()).to_numpy(), rng)
    chosen: list[str] = []
    for (_, members), take in zip(first.groupby("stratum", sort=True), quota):
        chosen.extend(rng.choice(members["unit"].to_numpy(), size=min(take, len(members)), replace=False))
    return units.index[units["unit"].isin(chosen)]
