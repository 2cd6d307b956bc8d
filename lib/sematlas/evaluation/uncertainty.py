"""Is the ensemble's uncertainty any good? Calibration and out-of-distribution detection.

- Calibration of the predictive Gaussian ``N(mean, aleatoric + epistemic)`` on
  held-out voxels inside the brain mask: for each level ``p`` in 0.05 ... 0.95
  the fraction of true values inside the central ``p`` interval
  (:func:`interval_coverage`), and the expected calibration error
  ``ECE = mean_p |observed(p) - p|`` (:func:`expected_calibration_error`).
  :class:`TemperatureScaling` fits one scalar multiplying the predictive
  standard deviation (Guo et al. 2017; Kuleshov et al. 2018 for regression).
- Out-of-distribution detection: maps unlike any study, rendered from peaks by
  the same renderer and kernels as the real studies, with the peak counts of
  the test studies (:func:`ood_peak_lists`); the score is the ensemble's
  disagreement, the mean epistemic variance of the reconstruction inside the
  mask, and :func:`ood_auroc` measures how well it separates them from test maps.

Maps are compared on the widest-kernel channel, as in :mod:`sematlas.evaluation.reconstruction`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from scipy.stats import norm

from sematlas.core.grid import Grid
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.evaluation.metrics import masked_pearson
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.inference.ensemble import AtlasEnsemble

#: Central-interval levels of the reliability diagram: 0.05, 0.10, ..., 0.95.
CALIBRATION_LEVELS = np.round(np.arange(1, 20) * 0.05, 2)

OOD_KINDS: tuple[str, ...] = ("uniform", "white_matter", "nimare_synthetic")


# ------------------------------------------------------------------ calibration
def _standardised_residuals(target: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``|target - mean| / sd``, flattened; a zero ``sd`` counts a zero residual as inside every interval."""
    residual = np.abs(np.asarray(target, dtype=np.float64) - np.asarray(mean, dtype=np.float64)).ravel()
    sd = np.asarray(sd, dtype=np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(residual == 0, 0.0, residual / sd)


def _coverage_from_sorted(sorted_residuals: np.ndarray, half_widths: np.ndarray) -> np.ndarray:
    """Fraction of standardised residuals within each half-width (any shape)."""
    return np.searchsorted(sorted_residuals, half_widths, side="right") / max(len(sorted_residuals), 1)


def interval_coverage(
    target: np.ndarray, mean: np.ndarray, sd: np.ndarray, levels: np.ndarray = CALIBRATION_LEVELS
) -> np.ndarray:
    """Observed coverage of the central intervals of ``N(mean, sd^2)``.

    The central ``p`` interval is ``mean +/- Phi^-1((1 + p) / 2) * sd``; a
    calibrated predictive distribution covers a fraction ``p`` of the true values.

    Parameters
    ----------
    target, mean, sd : array, same shape (e.g. (n_studies, n_voxels))
    levels : array of float, shape (L,)
        Interval probabilities in (0, 1).

    Returns
    -------
    ndarray, shape (L,)
        Observed fraction of targets inside each interval.
    """
    residuals = _standardised_residuals(target, mean, sd)
    half_widths = norm.ppf((1.0 + np.asarray(levels)) / 2.0)
    # Millions of residuals against a few half-widths: bin each residual by the first half-width it does not
    # exceed (O(n log L)) instead of sorting the residuals (O(n log n)); equal counts, as many times faster.
    order = np.argsort(half_widths)
    first_covering = np.searchsorted(half_widths[order], residuals, side="left")
    covered = np.cumsum(np.bincount(first_covering, minlength=len(levels) + 1))[: len(levels)]
    coverage = np.empty(len(levels))
    coverage[order] = covered / max(len(residuals), 1)
    return coverage


def expected_calibration_error(
    target: np.ndarray, mean: np.ndarray, sd: np.ndarray, levels: np.ndarray = CALIBRATION_LEVELS
) -> float:
    """``ECE = mean_p |observed(p) - p|`` over the central-interval levels (see :func:`interval_coverage`)."""
    return float(np.mean(np.abs(interval_coverage(target, mean, sd, levels) - levels)))


class TemperatureScaling:
    """One scalar ``T`` multiplying the predictive standard deviation, fitted to minimise the ECE.

    ``T > 1`` widens an overconfident distribution, ``T < 1`` narrows an
    underconfident one. Fitted by a grid search over ``log T`` (the ECE is a
    step function of ``T``, so gradient methods do not apply); each candidate
    costs one ``searchsorted`` over the sorted standardised residuals.

    Parameters
    ----------
    levels : array of float
        Interval levels of the ECE.
    bounds : (float, float)
        Range of ``T`` searched.
    n_grid : int
        Log-spaced candidates.

    Attributes
    ----------
    temperature_ : float
        The fitted ``T`` (after :meth:`fit`).
    """

    def __init__(
        self, levels: np.ndarray = CALIBRATION_LEVELS, bounds: tuple[float, float] = (0.01, 100.0), n_grid: int = 801
    ) -> None:
        self.levels = levels
        self.bounds = bounds
        self.n_grid = n_grid

    def fit(self, target: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> TemperatureScaling:
        """Fit ``T`` on (validation) targets and predictive moments of the same shape."""
        levels = np.asarray(self.levels)
        residuals = np.sort(_standardised_residuals(target, mean, sd))
        candidates = np.geomspace(self.bounds[0], self.bounds[1], self.n_grid)
        half_widths = candidates[:, None] * norm.ppf((1.0 + levels) / 2.0)[None, :]
        ece = np.abs(_coverage_from_sorted(residuals, half_widths) - levels).mean(axis=1)
        self.temperature_ = float(candidates[int(np.argmin(ece))])
        return self

    def transform(self, sd: np.ndarray) -> np.ndarray:
        """Scaled standard deviations ``T * sd``."""
        return np.asarray(sd) * self.temperature_


# ------------------------------------------------------------------ OOD detection
def ood_auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher on out-of-distribution maps.

    Parameters
    ----------
    in_scores : array, shape (n_in,)
        Scores of in-distribution (test) maps: label 0.
    out_scores : array, shape (n_out,)
        Scores of OOD maps: label 1.

    Returns
    -------
    float
        0.5 is chance, 1 perfect separation.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    return float(roc_auc_score(labels, np.concatenate([np.asarray(in_scores), np.asarray(out_scores)])))


def split_peak_lists(datamodule: NeurosynthDataModule, split: str, n: int | None = None) -> list[np.ndarray]:
    """The voxel indices ``(k_i, 3)`` of the peaks of the first ``n`` studies of a split."""
    table = datamodule.tables[split]
    rows = range(len(table) if n is None else min(n, len(table)))
    return [table.ijk[table.offsets[r] : table.offsets[r + 1]] for r in rows]


def uniform_brain_peaks(grid: Grid, counts: Sequence[int], seed: int) -> list[np.ndarray]:
    """Peaks drawn uniformly among the brain-mask voxels, ``counts[i]`` for map ``i``."""
    rng = np.random.default_rng(seed)
    voxels = np.argwhere(grid.mask())
    return [voxels[rng.integers(len(voxels), size=int(k))] for k in counts]


@lru_cache(maxsize=2)
def _white_matter(voxel_size: int) -> np.ndarray:
    """nilearn's bundled MNI152 white-matter mask on the grid (nearest), inside the brain mask."""
    from nilearn.datasets import load_mni152_wm_mask
    from nilearn.image import resample_img

    grid = Grid(voxel_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's resampling notes on binary images
        image = resample_img(
            load_mni152_wm_mask(),
            target_affine=grid.affine,
            target_shape=grid.shape,
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        )
    return (np.asarray(image.get_fdata()) > 0) & grid.mask()


def shift_to_white_matter(grid: Grid, peak_lists: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Move every peak to the nearest white-matter voxel (outside grey matter, inside the brain).

    Keeps each study's spatial layout and peak count while taking every peak
    off the grey matter where activation is reported: a near-distribution shift.
    """
    from scipy.ndimage import distance_transform_edt

    # For every voxel, the index of the nearest zero of ~wm, i.e. of the nearest white-matter voxel.
    nearest = distance_transform_edt(~_white_matter(grid.voxel_size), return_distances=False, return_indices=True)
    shape = np.array(grid.shape)
    shifted = []
    for ijk in peak_lists:
        i, j, k = np.clip(ijk, 0, shape - 1).T
        shifted.append(np.stack([nearest[0][i, j, k], nearest[1][i, j, k], nearest[2][i, j, k]], axis=1))
    return shifted


def nimare_synthetic_peaks(grid: Grid, counts: Sequence[int], n_true_foci: int, seed: int) -> list[np.ndarray]:
    """Studies of NiMARE's synthetic coordinate generator, cut to ``counts[i]`` peaks each.

    ``nimare.generate.create_coordinate_studyset`` (the Studyset twin of
    ``create_coordinate_dataset``) draws ``n_true_foci`` shared "true" foci, each
    study reporting them with spatial noise, plus uniformly placed noise foci;
    each study's peaks are then subsampled to the count of a test study.
    """
    from nimare.generate import create_coordinate_studyset

    rng = np.random.default_rng(seed)
    _, studyset = create_coordinate_studyset(
        foci=n_true_foci, n_noise_foci=max(int(max(counts)), 1), n_studies=len(counts), seed=seed
    )
    coordinates = studyset.coordinates
    peaks = []
    for study_id, k in zip(sorted(coordinates["id"].unique(), key=_natural_key), counts, strict=True):
        xyz = coordinates.loc[coordinates["id"] == study_id, ["x", "y", "z"]].to_numpy(dtype=float)
        ijk = grid.mm_to_voxel(xyz[rng.permutation(len(xyz))[: int(k)]])
        peaks.append(ijk[grid.contains(ijk)])
    return peaks


def _natural_key(study_id: str) -> tuple[int, ...]:
    """``study-10-1`` after ``study-9-1``: NiMARE's ids in generation order."""
    return tuple(int(part) for part in study_id.split("-") if part.isdigit())


def ood_peak_lists(
    datamodule: NeurosynthDataModule, n: int, n_true_foci: int, seed: int
) -> dict[str, list[np.ndarray]]:
    """The three OOD kinds, ``n`` maps each, paired with the first ``n`` test studies' peak counts.

    Returns
    -------
    dict
        ``uniform`` (:func:`uniform_brain_peaks`), ``white_matter``
        (:func:`shift_to_white_matter` of the test studies' own peaks) and
        ``nimare_synthetic`` (:func:`nimare_synthetic_peaks`): lists of ``(k_i, 3)`` voxel indices.
    """
    test = split_peak_lists(datamodule, "test", n)
    counts = [len(p) for p in test]
    return {
        "uniform": uniform_brain_peaks(datamodule.grid, counts, seed),
        "white_matter": shift_to_white_matter(datamodule.grid, test),
        "nimare_synthetic": nimare_synthetic_peaks(datamodule.grid, counts, n_true_foci, seed),
    }


def render_peak_lists(datamodule: NeurosynthDataModule, peak_lists: Sequence[np.ndarray]) -> torch.Tensor:
    """Render peak lists with the DataModule's renderer (same kernels, no augmentation).

    Returns
    -------
    Tensor, shape (n, C, d, h, w)
        On the network grid, like a batch's ``image``.
    """
    ijk = np.concatenate(peak_lists) if peak_lists else np.zeros((0, 3), dtype=np.int64)
    study_index = np.repeat(np.arange(len(peak_lists)), [len(p) for p in peak_lists])
    channels = [len(datamodule.fwhms) - 1] if datamodule.kernel_choice == "random" else None
    image = datamodule.renderer.render(ijk, study_index, len(peak_lists), channels=channels)
    return datamodule.grid.to_network(image)


# ------------------------------------------------------------------ running an ensemble over maps
def split_batches(
    maps: RenderedSplits, datamodule: NeurosynthDataModule, split: str, n: int | None = None
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``(image, meta)`` batches of the first ``n`` studies of a split, unaugmented, from the rendered splits."""
    for batch in maps.batches(datamodule, split, n, description=f"ensemble on {split}"):
        yield batch["image"], batch["meta"]


def image_batches(
    images: torch.Tensor, meta: Mapping[str, torch.Tensor], batch_size: int
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``(image, meta)`` batches of rendered maps and the metadata rows they are paired with."""
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        yield images[rows], {key: value[rows] for key, value in meta.items()}


@torch.no_grad()
def predict_maps(
    ensemble: AtlasEnsemble, batches: Iterable[tuple[torch.Tensor, Mapping[str, torch.Tensor]]]
) -> dict[str, torch.Tensor]:
    """Reconstructions of maps by an ensemble, on the widest channel inside the brain mask.

    Returns
    -------
    dict of Tensor, each shape (n, n_voxels)
        ``target``, ``mean``, ``aleatoric``, ``epistemic``.
    """
    mask = torch.from_numpy(ensemble.grid.mask())
    network_mask = torch.from_numpy(ensemble.grid.network_mask())
    parts: dict[str, list[torch.Tensor]] = {"target": [], "mean": [], "aleatoric": [], "epistemic": []}
    for image, meta in batches:
        prediction = ensemble.reconstruct(image, meta)
        parts["target"].append(image[:, -1][:, network_mask])
        for field in ("mean", "aleatoric", "epistemic"):
            parts[field].append(getattr(prediction, field)[:, -1][:, mask])
    return {key: torch.cat(value) for key, value in parts.items()}


def evaluate_ensemble(
    ensemble: AtlasEnsemble,
    single: AtlasEnsemble,
    datamodule: NeurosynthDataModule,
    ood_images: Mapping[str, torch.Tensor],
    temperature_threshold: float,
    n_eval: int | None = None,
    maps: RenderedSplits | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibration, OOD detection and reconstruction of one ensemble method on held-out maps.

    Parameters
    ----------
    ensemble : AtlasEnsemble
    single : AtlasEnsemble
        One member alone, deterministic: the reconstruction reference.
    datamodule : NeurosynthDataModule
        Set up; its validation split fits the temperature, its test split is evaluated.
    ood_images : mapping
        OOD kind -> rendered maps ``(n_ood, C, d, h, w)``, paired row by row with the
        first test studies' metadata.
    temperature_threshold : float
        The temperature is applied when the validation ECE exceeds it.
    n_eval : int, optional
        Use only the first ``n_eval`` validation and test studies.
    maps : RenderedSplits, optional
        The stage's rendered splits, shared by the methods it compares; by default the
        validation and test studies are rendered for this call, once each.

    Returns
    -------
    results : dict
        ``ece_val``, ``ece_test_before``, ``ece_test_after``, ``temperature``,
        ``temperature_applied``, ``ood_auroc`` (per kind, of the ensemble disagreement),
        ``ood_auroc_predictive_nll`` (per kind), ``recon_median_r_ensemble``,
        ``recon_median_r_single``, ``n_passes``, ``n_test``, ``n_val``.
    details : dict
        For figures: ``coverage_before``/``coverage_after`` (per level), ``scores``
        (per score of :func:`ood_scores`: ``test`` and each OOD kind, one value per map),
        and the test predictions.
    """
    maps = RenderedSplits.shared(maps, datamodule)
    val = predict_maps(ensemble, split_batches(maps, datamodule, "val", n_eval))
    test = predict_maps(ensemble, split_batches(maps, datamodule, "test", n_eval))
    sd = {"val": _predictive_sd(val), "test": _predictive_sd(test)}
    ece_val = expected_calibration_error(val["target"].numpy(), val["mean"].numpy(), sd["val"])
    scaling = TemperatureScaling().fit(val["target"].numpy(), val["mean"].numpy(), sd["val"])
    applied = ece_val > temperature_threshold
    test_sd_after = scaling.transform(sd["test"]) if applied else sd["test"]
    target, mean = test["target"].numpy(), test["mean"].numpy()

    scores = {name: {"test": values} for name, values in ood_scores(test).items()}
    test_meta = datamodule.meta["test"]
    for kind, images in ood_images.items():
        meta = {key: value[: len(images)] for key, value in test_meta.items()}
        prediction = predict_maps(ensemble, image_batches(images, meta, datamodule.batch_size))
        for name, values in ood_scores(prediction).items():
            scores[name][kind] = values
    single_mean = predict_maps(single, split_batches(maps, datamodule, "test", n_eval))["mean"]
    results = {
        "n_passes": ensemble.n_passes,
        "n_test": len(target),
        "n_val": len(val["target"]),
        "ece_val": ece_val,
        "ece_test_before": expected_calibration_error(target, mean, sd["test"]),
        "ece_test_after": expected_calibration_error(target, mean, test_sd_after),
        "temperature": scaling.temperature_,
        "temperature_applied": bool(applied),
        "ood_auroc": {
            kind: ood_auroc(scores["disagreement"]["test"], scores["disagreement"][kind]) for kind in ood_images
        },
        "ood_auroc_predictive_nll": {
            kind: ood_auroc(scores["predictive_nll"]["test"], scores["predictive_nll"][kind]) for kind in ood_images
        },
        "recon_median_r_ensemble": float(np.nanmedian(masked_pearson(test["mean"], test["target"]).numpy())),
        "recon_median_r_single": float(np.nanmedian(masked_pearson(single_mean, test["target"]).numpy())),
        "mean_aleatoric_variance": float(test["aleatoric"].mean()),
        "mean_epistemic_variance": float(test["epistemic"].mean()),
    }
    details = {
        "coverage_before": interval_coverage(target, mean, sd["test"]),
        "coverage_after": interval_coverage(target, mean, test_sd_after),
        "scores": scores,
        "test": test,
    }
    return results, details


def ood_scores(prediction: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-map out-of-distribution scores (higher: less like the training data) of an ensemble's prediction.

    - ``disagreement``: the mean epistemic variance over brain voxels, i.e. how much the
      members (or MC-dropout passes) disagree (Lakshminarayanan et al., 2017).
    - ``predictive_nll``: the mean Gaussian negative log-likelihood of the input map under
      the predictive distribution ``N(mean, aleatoric + epistemic)``,
      ``0.5 * mean_v[log(2 pi s_v^2) + (x_v - mu_v)^2 / s_v^2]``: a map the ensemble cannot
      reconstruct within its own stated uncertainty scores high, even where the members
      agree on a wrong answer.

    Parameters
    ----------
    prediction : mapping
        From :func:`predict_maps`: ``target``, ``mean``, ``aleatoric``, ``epistemic``, each (n, n_voxels).

    Returns
    -------
    dict of ndarray, each shape (n,)
    """
    variance = (prediction["aleatoric"] + prediction["epistemic"]).clamp_min(1e-12)
    squared_error = (prediction["target"] - prediction["mean"]) ** 2
    nll = 0.5 * (torch.log(2 * math.pi * variance) + squared_error / variance)
    return {
        "disagreement": prediction["epistemic"].mean(1).numpy(),
        "predictive_nll": nll.mean(1).numpy(),
    }


def _predictive_sd(prediction: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Standard deviation of the predictive Gaussian, ``sqrt(aleatoric + epistemic)``."""
    return (prediction["aleatoric"] + prediction["epistemic"]).sqrt().numpy()


__all__ = [
    "CALIBRATION_LEVELS",
    "OOD_KINDS",
    "TemperatureScaling",
    "evaluate_ensemble",
    "expected_calibration_error",
    "image_batches",
    "interval_coverage",
    "nimare_synthetic_peaks",
    "ood_auroc",
    "ood_peak_lists",
    "predict_maps",
    "render_peak_lists",
    "shift_to_white_matter",
    "split_batches",
    "split_peak_lists",
    "uniform_brain_peaks",
]
