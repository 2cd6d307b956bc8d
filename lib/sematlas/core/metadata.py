"""The study metadata vector the conditional models see.

:class:`MetadataEncoder` turns study-table rows (or a user's request) into the
tensors of the data contract:

- ``cond`` ``(batch, n_categories + 5)``: task-category one-hot, standardised
  year, standardised log peak count, space-label one-hot (complete fields);
- ``sparse`` ``(batch, 1)``: standardised log sample size, 0 where missing;
- ``sparse_mask`` ``(batch, 1)``: True where the sample size is known;
- ``year_bin`` ``(batch,)`` and ``task`` ``(batch,)``: class indices.

The standardisation statistics are fitted on the training split only and travel
with every checkpoint, so a model decodes a request exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from sematlas.core.params import Params

SPACES = ("MNI", "TAL", "UNKNOWN")
YEAR_RANGE = (1997, 2018)
#: Prior for log sample size when the training split has too few known values to fit one:
#: a typical fMRI study of 2010 had about 20 participants (log 20 = 3.0, sd 0.5).
_DEFAULT_LOG_SAMPLE_SIZE = (3.0, 0.5)


@dataclass
class MetadataEncoder:
    """Encode study metadata as conditioning tensors.

    Parameters
    ----------
    categories : sequence of str
        Task-category names, in one-hot order.
    year_bin_edges : sequence of float
        Edges of the publication-year bins (from curation).

    Notes
    -----
    ``__init__`` only stores parameters; :meth:`fit` learns the statistics.
    """

    categories: Sequence[str]
    year_bin_edges: Sequence[float]
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def cond_dim(self) -> int:
        return len(self.categories) + 2 + len(SPACES)

    @property
    def n_year_bins(self) -> int:
        return len(self.year_bin_edges) - 1

    def fit(self, studies: pd.DataFrame) -> MetadataEncoder:
        """Fit standardisation statistics on (training) study rows."""
        log_peaks = np.log(studies["n_peaks"].to_numpy(dtype=float))
        observed = np.log(studies["sample_size"].dropna().to_numpy(dtype=float))
        mean_ss, std_ss = (observed.mean(), observed.std()) if len(observed) >= 5 else _DEFAULT_LOG_SAMPLE_SIZE
        self.stats = {
            "year_mean": float(studies["year"].mean()),
            "year_std": float(studies["year"].std() or 1.0),
            "log_peaks_mean": float(log_peaks.mean()),
            "log_peaks_std": float(log_peaks.std() or 1.0),
            "log_sample_size_mean": float(mean_ss),
            "log_sample_size_std": float(std_ss or 1.0),
        }
        return self

    def transform(self, studies: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Encode study rows.

        Parameters
        ----------
        studies : DataFrame
            Columns ``task_category``, ``year``, ``n_peaks``, ``space``, ``sample_size`` (NaN = unknown).

        Returns
        -------
        dict of tensors
            ``cond`` (n, cond_dim), ``sparse`` (n, 1), ``sparse_mask`` (n, 1),
            ``year_bin`` (n,), ``task`` (n,).
        """
        if not self.stats:
            raise RuntimeError("MetadataEncoder is not fitted: call fit() on the training studies first")
        unknown = sorted(set(studies["task_category"]) - set(self.categories))
        if unknown:
            raise ValueError(f"unknown task category {unknown[0]!r}; allowed: {', '.join(self.categories)}")
        task = (
            studies["task_category"].map({name: i for i, name in enumerate(self.categories)}).to_numpy(dtype=np.int64)
        )
        space = studies["space"].where(studies["space"].isin(SPACES), "UNKNOWN")
        space_index = space.map({name: i for i, name in enumerate(SPACES)}).to_numpy()
        year = studies["year"].to_numpy(dtype=float)
        s = self.stats
        cond = np.concatenate(
            [
                np.eye(len(self.categories))[task],
                ((year - s["year_mean"]) / s["year_std"])[:, None],
                ((np.log(studies["n_peaks"].to_numpy(dtype=float)) - s["log_peaks_mean"]) / s["log_peaks_std"])[
                    :, None
                ],
                np.eye(len(SPACES))[space_index],
            ],
            axis=1,
        )
        sample_size = studies["sample_size"].to_numpy(dtype=float)
        known = np.isfinite(sample_size)
        sparse = np.where(
            known,
            (np.log(np.where(known, sample_size, 1.0)) - s["log_sample_size_mean"]) / s["log_sample_size_std"],
            0.0,
        )
        year_bin = np.clip(
            np.searchsorted(np.asarray(self.year_bin_edges)[1:-1], year, side="right"), 0, self.n_year_bins - 1
        )
        return {
            "cond": torch.as_tensor(cond, dtype=torch.float32),
            "sparse": torch.as_tensor(sparse[:, None], dtype=torch.float32),
            "sparse_mask": torch.as_tensor(known[:, None]),
            "year_bin": torch.as_tensor(year_bin, dtype=torch.long),
            "task": torch.tensor(task, dtype=torch.long),
        }

    def request(self, metadata: Mapping[str, Any], default_n_peaks: float | None = None) -> dict[str, torch.Tensor]:
        """Encode one user request, e.g. ``{"task": "emotion", "year": 2012, "sample_size": 24}``.

        ``task`` is required; ``year`` defaults to the training mean, ``space`` to
        MNI, ``n_peaks`` to the training geometric mean; a missing ``sample_size``
        stays missing (the model imputes it).

        Raises
        ------
        ValueError
            Unknown key, unknown category (listing the allowed ones), a year outside
            1997-2018, or a non-positive sample size or peak count.
        """
        allowed = {"task", "year", "sample_size", "n_peaks", "space"}
        extra = sorted(set(metadata) - allowed)
        if extra:
            raise ValueError(f"unknown metadata key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")
        if "task" not in metadata:
            raise ValueError(f"metadata needs a 'task'; allowed: {', '.join(self.categories)}")
        if metadata["task"] not in self.categories:
            raise ValueError(f"unknown task category {metadata['task']!r}; allowed: {', '.join(self.categories)}")
        year = float(metadata.get("year", round(self.stats["year_mean"])))
        if not YEAR_RANGE[0] <= year <= YEAR_RANGE[1]:
            raise ValueError(
                f"year {year:g} is outside the years the atlas was trained on "
                f"({YEAR_RANGE[0]}-{YEAR_RANGE[1]}; Neurosynth v7 ends in 2018)"
            )
        sample_size = metadata.get("sample_size")
        if sample_size is not None and not float(sample_size) > 0:
            raise ValueError(f"sample_size must be positive, got {sample_size!r}")
        n_peaks = metadata.get("n_peaks", default_n_peaks or float(np.exp(self.stats["log_peaks_mean"])))
        if not float(n_peaks) > 0:
            raise ValueError(f"n_peaks must be positive, got {n_peaks!r}")
        row = pd.DataFrame(
            {
                "task_category": [metadata["task"]],
                "year": [year],
                "n_peaks": [float(n_peaks)],
                "space": [metadata.get("space", "MNI")],
                "sample_size": [np.nan if sample_size is None else float(sample_size)],
            }
        )
        return self.transform(row)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "categories": list(self.categories), "year_bin_edges": list(self.year_bin_edges)}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> MetadataEncoder:
        return cls(
            categories=list(payload["categories"]),
            year_bin_edges=list(payload["year_bin_edges"]),
            stats=dict(payload["stats"]),
        )


def task_categories(params: Params) -> list[str]:
    """Category names in one-hot order: the mapping's categories, sorted, then ``other``."""
    return sorted(params["curation"]["task_categories"]) + ["other"]
