"""Canonical correlation between two latent spaces of the same studies (stage 06).

The volumetric model (a density map per study) and the point-cloud model (a
peak set per study) encode the same held-out studies into two latent spaces.
:class:`LatentCCA` asks which directions of one space are linearly predictable
from the other:

- each view is standardised on the held-out studies and scikit-learn's
  :class:`~sklearn.cross_decomposition.CCA` gives the reported fit (canonical
  weights, variates and correlations);
- significance comes from a permutation test of shuffled pairings (rows of the
  volumetric view permuted, the point-cloud view fixed), done stepwise as in
  Winkler et al. (2020, NeuroImage 220:117065): the null of component ``k`` is
  the first canonical correlation of the two views after the first ``k - 1``
  observed canonical variates are removed from each. The null is computed with
  an exact SVD-based CCA (:func:`canonical_correlations`, equal to
  scikit-learn's on the unpermuted data to numerical precision), which makes a
  thousand permutations per component take well under a second;
- each canonical variate is read in the original latent units by its structure
  coefficients (the correlation of each latent unit with the variate) and
  decoded by moving ``t`` standard deviations along it (:meth:`LatentCCA.latent_path`).

>>> cca = LatentCCA(n_components=2, n_permutations=1000, seed=0).fit(x, y)   # doctest: +SKIP
>>> cca.correlations_, cca.p_values_                                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from sklearn.cross_decomposition import CCA
from sklearn.preprocessing import StandardScaler

from sematlas.core.io import write_nifti

logger = logging.getLogger(__name__)

#: The two views, in the order :meth:`LatentCCA.fit` takes them.
VIEWS = ("volumetric", "pointcloud")
#: How far decoded variates go each side of the mean, in SD of the variate: far enough to show
#: the direction, within the range of most studies (about 95% of a Gaussian variate).
STEP_SD = 2.0


def paired_latents(
    volumetric: pd.DataFrame, pointcloud: pd.DataFrame, split: str = "test"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latent codes of one split's studies present in both tables, paired by study id.

    Parameters
    ----------
    volumetric, pointcloud : DataFrame
        Latent tables (``id``, ``split``, ``z_00`` ..., ``logvar_mean``) of the two models.
    split : str
        The held-out split.

    Returns
    -------
    x : DataFrame, shape (n, p)
        Volumetric ``z_*`` columns, indexed by ``id`` (sorted).
    y : DataFrame, shape (n, q)
        Point-cloud ``z_*`` columns, same index.
    """
    tables = []
    for table in (volumetric, pointcloud):
        rows = table[table["split"] == split]
        tables.append(rows.set_index(rows["id"].astype(str))[[c for c in rows.columns if c.startswith("z_")]])
    ids = tables[0].index.intersection(tables[1].index).sort_values()
    return tables[0].loc[ids], tables[1].loc[ids]


def clip_components(requested: int, n_studies: int, x_dim: int, y_dim: int) -> int:
    """The number of canonical pairs that exist: at most ``min(x_dim, y_dim, n_studies - 1)``.

    Logs a warning when ``requested`` is clipped.

    Raises
    ------
    ValueError
        ``requested`` < 1 or fewer than 3 studies.
    """
    if requested < 1:
        raise ValueError(f"n_components must be at least 1, got {requested}")
    if n_studies < 3:
        raise ValueError(f"CCA needs at least 3 paired studies, got {n_studies}")
    available = min(x_dim, y_dim, n_studies - 1)
    if requested > available:
        logger.warning(
            "n_components=%d clipped to %d (latent dims %d and %d, %d studies)",
            requested,
            available,
            x_dim,
            y_dim,
            n_studies,
        )
    return min(requested, available)


def _column_basis(x: np.ndarray) -> np.ndarray:
    """An orthonormal basis ``(n, rank)`` of the column space of a centred ``(n, p)`` matrix."""
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    tol = s.max(initial=0.0) * max(x.shape) * np.finfo(float).eps
    return u[:, s > tol]


def _canonical_bases(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotated orthonormal bases of the two column spaces whose leading columns are the canonical variates.

    Returns
    -------
    bx : ndarray, shape (n, rank_x)
    by : ndarray, shape (n, rank_y)
        ``bx[:, k]`` and ``by[:, k]`` are the ``k``-th canonical variates (unit norm)
        for ``k < min(rank_x, rank_y)``; the remaining columns complete each basis.
    correlations : ndarray, shape (min(rank_x, rank_y),)
        Canonical correlations, descending.
    """
    qx, qy = _column_basis(x - x.mean(0)), _column_basis(y - y.mean(0))
    left, s, right_t = np.linalg.svd(qx.T @ qy, full_matrices=True)
    return qx @ left, qy @ right_t.T, np.clip(s, 0.0, 1.0)


def canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact canonical correlations of two views (Björck & Golub, 1973): the singular values of
    ``Qxᵀ Qy`` for orthonormal bases of the centred column spaces.

    Parameters
    ----------
    x : ndarray, shape (n, p)
    y : ndarray, shape (n, q)

    Returns
    -------
    ndarray, shape (min(rank x, rank y),)
        Descending, in [0, 1].
    """
    return _canonical_bases(np.asarray(x, float), np.asarray(y, float))[2]


def stepwise_permutation_null(
    x: np.ndarray, y: np.ndarray, n_components: int, n_permutations: int, seed: int
) -> np.ndarray:
    """Permutation null of each canonical correlation, stepwise (Winkler et al., 2020).

    For component ``k`` the first ``k - 1`` observed canonical variates are removed from
    each view (what remains is spanned by the trailing columns of the rotated bases of
    :func:`_canonical_bases`), the rows of the ``x`` remainder are permuted and the first
    canonical correlation of the pair is recorded; on the unpermuted data it is the
    observed ``k``-th correlation. Without the removal the null of ``k > 1`` ignores the
    variance the earlier components already explain and its error rate is inflated: with
    one planted shared factor (100 studies, 8 and 6 units, 1,000 simulations, 99
    permutations) the null second component was rejected at 5% in 29% of simulations by the
    plain null and in 4.6% by this one. The same permutations serve every component.

    Parameters
    ----------
    x : ndarray, shape (n, p)
    y : ndarray, shape (n, q)
    n_components : int
        At most ``min(rank x, rank y)``.
    n_permutations : int
    seed : int
        Seeds the permutations (NumPy ``default_rng``).

    Returns
    -------
    ndarray, shape (n_permutations, n_components)
    """
    bx, by, correlations = _canonical_bases(np.asarray(x, float), np.asarray(y, float))
    if n_components > len(correlations):
        raise ValueError(f"n_components={n_components} exceeds the {len(correlations)} canonical pairs")
    rng = np.random.default_rng(seed)
    permutations = np.stack([rng.permutation(len(bx)) for _ in range(n_permutations)])
    null = np.empty((n_permutations, n_components))
    for k in range(n_components):
        rest_x, rest_y = bx[:, k:], by[:, k:]
        for start in range(0, n_permutations, 250):  # bounded memory: 250 x n x p floats at a time
            block = permutations[start : start + 250]
            cross = np.einsum("bni,nj->bij", rest_x[block], rest_y)
            null[start : start + 250, k] = np.linalg.svd(cross, compute_uv=False)[:, 0]
    return null


def permutation_p_values(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-component permutation p-values and their family-wise version.

    Parameters
    ----------
    observed : ndarray, shape (k,)
    null : ndarray, shape (n_permutations, k)
        From :func:`stepwise_permutation_null`.

    Returns
    -------
    p : ndarray, shape (k,)
        ``(1 + #{null_k >= observed_k}) / (1 + n_permutations)``: the observed pairing counts
        as one of the permutations, so p is never 0.
    p_fwe : ndarray, shape (k,)
        The running maximum of ``p``: components are tested in order and ``k`` can be
        significant only if every earlier one is (closed testing, Winkler et al., 2020),
        which controls the family-wise error rate.
    """
    exceed = (null >= np.asarray(observed)[None, :] - 1e-12).sum(0)
    p = (1.0 + exceed) / (1.0 + null.shape[0])
    return p, np.maximum.accumulate(p)


class LatentCCA:
    """CCA between two latent spaces with a stepwise permutation test.

    Parameters
    ----------
    n_components : int
        Canonical pairs to fit (clipped by :func:`clip_components` at ``fit``).
    n_permutations : int
        Shuffled pairings per component for the null.
    seed : int
        Seeds the permutations.
    max_iter, tol : int, float
        Of scikit-learn's NIPALS solver, per component. Its default tolerance (1e-6) leaves
        correlations of nearly tied components ~1e-5 off the exact ones; 1e-10 gets ~1e-9.

    Attributes
    ----------
    n_components_ : int
        After clipping.
    scalers_ : tuple of StandardScaler
        Per view, fitted on the studies passed to ``fit``.
    cca_ : sklearn.cross_decomposition.CCA
        The reported fit, on the standardised views.
    correlations_ : ndarray, shape (n_components_,)
        Correlation of each pair of canonical variates.
    null_ : ndarray, shape (n_permutations, n_components_)
    p_values_, p_fwe_ : ndarray, shape (n_components_,)
        See :func:`permutation_p_values`.
    weights_ : tuple of ndarray, shapes (p, n_components_) and (q, n_components_)
        Canonical weights on the standardised units: variate ``k`` of view ``v`` is
        ``standardised(v) @ weights_[v][:, k]``.
    scores_ : tuple of ndarray, shape (n, n_components_)
        Canonical variates of the fitted studies (centred).
    structure_ : tuple of ndarray, shapes (p, n_components_) and (q, n_components_)
        Structure coefficients: the correlation of each latent unit with its view's
        variate ``k``. Signs are fixed so that the largest volumetric coefficient of each
        component is positive (both views are flipped together, keeping the correlation).
    """

    def __init__(
        self, n_components: int, n_permutations: int = 1000, seed: int = 0, max_iter: int = 5000, tol: float = 1e-10
    ) -> None:
        self.n_components = n_components
        self.n_permutations = n_permutations
        self.seed = seed
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, x: np.ndarray | pd.DataFrame, y: np.ndarray | pd.DataFrame) -> LatentCCA:
        """Fit on paired studies.

        Each view is standardised on these same studies. CCA's correlations are unchanged
        by any affine map of either view, so the choice affects only the units the results
        are read in: here a unit's structure coefficient is a plain correlation on the
        analysed studies, and :meth:`latent_path` steps in their standard deviations around
        their mean, with nothing to carry over from the training studies.

        Parameters
        ----------
        x : array, shape (n, p)
            Volumetric latent codes.
        y : array, shape (n, q)
            Point-cloud latent codes, row ``i`` the same study as ``x``'s.
        """
        x, y = np.asarray(x, float), np.asarray(y, float)
        if len(x) != len(y):
            raise ValueError(f"the views pair {len(x)} and {len(y)} studies")
        self.n_components_ = clip_components(self.n_components, len(x), x.shape[1], y.shape[1])
        self.scalers_ = (StandardScaler().fit(x), StandardScaler().fit(y))
        xs, ys = self.scalers_[0].transform(x), self.scalers_[1].transform(y)
        self.cca_ = CCA(n_components=self.n_components_, scale=False, max_iter=self.max_iter, tol=self.tol).fit(xs, ys)
        u, v = self.cca_.transform(xs, ys)
        weights = [self.cca_.x_rotations_, self.cca_.y_rotations_]
        structure = [_correlations(xs, u), _correlations(ys, v)]
        signs = np.sign(structure[0][np.abs(structure[0]).argmax(0), np.arange(self.n_components_)])
        signs[signs == 0] = 1.0
        self.weights_ = (weights[0] * signs, weights[1] * signs)
        self.structure_ = (structure[0] * signs, structure[1] * signs)
        self.scores_ = (u * signs, v * signs)
        self.correlations_ = np.array([np.corrcoef(u[:, k], v[:, k])[0, 1] for k in range(self.n_components_)])
        self.null_ = stepwise_permutation_null(xs, ys, self.n_components_, self.n_permutations, self.seed)
        self.p_values_, self.p_fwe_ = permutation_p_values(self.correlations_, self.null_)
        return self

    def latent_path(self, view: int, component: int, steps: Sequence[float]) -> np.ndarray:
        """Latent codes ``t`` standard deviations along a canonical variate, in the view's original units.

        The step is the forward pattern of the variate (Haufe et al., 2014), not its weight
        vector: the expected code of a study whose variate is ``t`` SD from the mean, i.e.
        the mean plus ``t`` times each unit's SD times its structure coefficient. Its
        canonical score is exactly ``t`` SD of the variate, and unlike a step along the
        weights it stays where the studies are when latent units are correlated.

        Parameters
        ----------
        view : int
            0 volumetric, 1 point cloud.
        component : int
            0-based.
        steps : sequence of float
            ``t`` values in SD of the variate (0 is the mean code).

        Returns
        -------
        ndarray, shape (len(steps), p or q)
        """
        scaler = self.scalers_[view]
        direction = self.structure_[view][:, component] * scaler.scale_
        return scaler.mean_[None, :] + np.asarray(steps, float)[:, None] * direction[None, :]

    def transform(self, view: int, codes: np.ndarray) -> np.ndarray:
        """Canonical variates ``(n, n_components_)`` of latent codes ``(n, p or q)`` of one view."""
        return self.scalers_[view].transform(np.asarray(codes, float)) @ self.weights_[view]

    def results(self) -> list[dict[str, float]]:
        """One record per component: ``component`` (1-based), ``r``, ``p``, ``p_fwe``, ``null_q95``."""
        q95 = np.quantile(self.null_, 0.95, axis=0)
        return [
            {"component": k + 1, "r": float(r), "p": float(p), "p_fwe": float(pf), "null_q95": float(q)}
            for k, (r, p, pf, q) in enumerate(zip(self.correlations_, self.p_values_, self.p_fwe_, q95))
        ]

    def shared_dimensions(self, names: tuple[Sequence[str], Sequence[str]], top: int = 3) -> pd.DataFrame:
        """The latent units that carry each canonical pair, one row per (component, view, unit).

        Parameters
        ----------
        names : pair of sequences of str
            Latent unit names of each view (e.g. the ``z_*`` columns).
        top : int
            Units kept per view and component, by absolute structure coefficient.

        Returns
        -------
        DataFrame
            ``component``, ``r``, ``p``, ``p_fwe``, ``view``, ``rank``, ``unit``,
            ``structure`` (correlation of the unit with the variate) and ``weight``
            (canonical weight on the standardised unit).
        """
        rows = []
        for record in self.results():
            k = record["component"] - 1
            for view, view_name in enumerate(VIEWS):
                coefficients = self.structure_[view][:, k]
                for rank, unit in enumerate(np.argsort(-np.abs(coefficients))[:top], start=1):
                    rows.append(
                        {
                            "component": record["component"],
                            "r": record["r"],
                            "p": record["p"],
                            "p_fwe": record["p_fwe"],
                            "view": view_name,
                            "rank": rank,
                            "unit": str(names[view][unit]),
                            "structure": float(coefficients[unit]),
                            "weight": float(self.weights_[view][unit, k]),
                        }
                    )
        return pd.DataFrame(rows)


def _correlations(data: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``data (n, p)`` with every column of ``scores (n, k)``: ``(p, k)``."""
    a = (data - data.mean(0)) / data.std(0).clip(min=np.finfo(float).tiny)
    b = (scores - scores.mean(0)) / scores.std(0).clip(min=np.finfo(float).tiny)
    return a.T @ b / len(data)


def neutral_metadata(studies: pd.DataFrame) -> dict[str, object]:
    """The one metadata request every decoded variate uses: the most common task category of
    ``studies`` (ties: alphabetical) and their median year, rounded; peak count and space take the
    encoders' defaults (training geometric mean, MNI) and sample size is left to imputation.
    """
    counts = studies["task_category"].value_counts()
    task = sorted(counts.index[counts == counts.max()])[0]
    return {"task": str(task), "year": int(round(float(studies["year"].median())))}


def write_maps(images: Mapping[str, nib.Nifti1Image], folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``<name>.nii.gz`` for each image, atomically; return the paths."""
    written = []
    for name, image in images.items():
        written.append(write_nifti(image, Path(folder) / f"{name}.nii.gz"))
    return written
