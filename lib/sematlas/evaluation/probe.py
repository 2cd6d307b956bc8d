"""Zero-shot linear probe of frozen latents on task contrasts the models never saw.

The research plan asks whether the latent space carries task information that
generalises beyond Neurosynth's training studies. HCP contrasts are not
available offline; NiMARE ships a real, later corpus instead: the NeuroStore
2026-07 studyset of n-back and flanker analyses (905 usable analyses from 320
studies, most published after Neurosynth v7 ends in 2018). Each analysis is
curated by the same rules as a Neurosynth study (2 mm grid, distance to the
brain, minimum peak count), rendered by the same renderer and encoded by each
frozen model; a logistic regression then separates n-back from flanker under
study-grouped cross-validation (analyses of one study never straddle folds).

Two things keep the probe honest:

- The encoder is conditioned on *neutral* metadata (task ``other``, year 2018,
  sample size unknown, the analysis' own peak count): giving it the true task
  category would hand the label to the probe.
- Studies that are also in Neurosynth (matched by PMID, title or DOI) are
  flagged; balanced accuracy is reported for the new studies alone next to all,
  so training overlap cannot inflate the result.

Baselines at equal size: PCA of the training maps with ``k = z_dim``, and the raw
voxels of the widest kernel inside the brain mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from sematlas.core.grid import Grid
from sematlas.core.params import Params
from sematlas.data.curation import drop_sparse_studies, validate_coordinates
from sematlas.data.datamodule import PeakTable
from sematlas.data.render import PeakRenderer
from sematlas.data.samplesize import load_neurostore_peaks, match_sample_sizes

#: The probe's target: 1 for n-back, 0 for flanker.
POSITIVE_TASK = "n-back"
#: Neutral conditioning of the encoder: the year Neurosynth v7 ends (most analyses are later).
NEUTRAL_YEAR = 2018


def probe_analyses(curation: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The NeuroStore n-back/flanker analyses, curated like Neurosynth studies.

    Parameters
    ----------
    curation : mapping
        The ``curation`` parameters (``validation_voxel_size``, ``max_distance_to_mask_mm``, ``min_peaks``).

    Returns
    -------
    analyses : DataFrame
        One row per kept analysis: ``id`` (the analysis id), ``neurostore_study_id``,
        ``comparison_task``, ``label`` (1 = n-back), ``n_peaks``.
    peaks : DataFrame
        ``id``, ``x``, ``y``, ``z`` (MNI mm) of the kept peaks.
    """
    raw = load_neurostore_peaks().rename(columns={"analysis_id": "id"})
    grid = Grid(int(curation["validation_voxel_size"]))
    peaks, _ = validate_coordinates(raw, grid, float(curation["max_distance_to_mask_mm"]))
    peaks, _ = drop_sparse_studies(peaks, int(curation["min_peaks"]))
    analyses = (
        peaks.groupby("id", sort=True)
        .agg(
            neurostore_study_id=("neurostore_study_id", "first"),
            comparison_task=("comparison_task", "first"),
            n_peaks=("x", "size"),
        )
        .reset_index()
    )
    analyses["label"] = (analyses["comparison_task"] == POSITIVE_TASK).astype(int)
    return analyses, peaks[["id", "x", "y", "z"]]


def flag_neurosynth_overlap(
    analyses: pd.DataFrame, neurosynth: pd.DataFrame, training_ids: set[str] | None = None
) -> pd.DataFrame:
    """Mark analyses whose study is also a Neurosynth study.

    Parameters
    ----------
    analyses : DataFrame
        From :func:`probe_analyses`.
    neurosynth : DataFrame
        Curated Neurosynth studies (``id``, ``title``, ``doi``).
    training_ids : set of str, optional
        Neurosynth ids a model trained on.

    Returns
    -------
    DataFrame
        ``analyses`` with ``in_neurosynth`` (bool) and ``in_training`` (bool).
    """
    matched = match_sample_sizes(neurosynth[["id", "title", "doi"]], id_is_pmid=True)
    matched = matched.dropna(subset=["neurostore_study_id"])
    in_neurosynth = analyses["neurostore_study_id"].isin(set(matched["neurostore_study_id"]))
    trained_on = set(matched.loc[matched["id"].astype(str).isin(training_ids or set()), "neurostore_study_id"])
    return analyses.assign(
        in_neurosynth=in_neurosynth.to_numpy(), in_training=analyses["neurostore_study_id"].isin(trained_on).to_numpy()
    )


def render_analyses(
    analyses: pd.DataFrame, peaks: pd.DataFrame, grid: Grid, fwhms: tuple[float, ...], truncate: float
) -> torch.Tensor:
    """Density maps of the analyses, rendered exactly like Neurosynth studies.

    Returns
    -------
    Tensor, shape (n_analyses, len(fwhms), D, H, W)
        On the native grid of ``grid``.
    """
    table = PeakTable.build(analyses[["id"]], peaks, grid)
    ijk, study_index = table.gather(range(len(table)))
    return PeakRenderer(grid, fwhms=fwhms, truncate=truncate).render(ijk, study_index, len(table))


def neutral_metadata(encoder: Any, analyses: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Label-free conditioning: task ``other`` (with the corpus's mean topic profile), year 2018,
    unknown sample size, the own peak count.

    Parameters
    ----------
    encoder : MetadataEncoder
        The model's (fitted on its training split).
    analyses : DataFrame
        Needs ``n_peaks``.
    """
    frame = pd.DataFrame(
        {
            "task_category": "other",
            "year": NEUTRAL_YEAR,
            "n_peaks": analyses["n_peaks"].to_numpy(),
            "space": "MNI",
            "sample_size": np.nan,
        }
    )
    # A topics encoder reads topic weights: the corpus mean says nothing about the analysis.
    frame[list(encoder.topic_columns)] = np.tile(encoder.corpus_profile, (len(frame), 1))
    return encoder.transform(frame)


def row_space_coordinates(
    train: np.ndarray, test: np.ndarray, tolerance: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of ``train`` ``(n, d)`` and ``test`` ``(m, d)`` in an orthonormal basis of the rows of ``train``.

    With ``G = X X^T = V L V^T`` the basis is ``U = X^T V L^(-1/2)`` (the right singular
    vectors), so ``X U = V L^(1/2)`` and ``Y U = (Y X^T) V L^(-1/2)``: only Gram products,
    far cheaper than an SVD when ``d >> n``.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(train @ train.T)
    keep = eigenvalues > tolerance * eigenvalues.max()
    eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
    return eigenvectors * np.sqrt(eigenvalues)[None, :], (test @ train.T) @ eigenvectors / np.sqrt(eigenvalues)[None, :]


def grouped_probe(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_splits: int = 5, C: float = 1.0, seed: int = 0
) -> dict[str, Any]:
    """Logistic regression with study-grouped, stratified cross-validation.

    Parameters
    ----------
    features : ndarray, shape (n, d)
    labels : ndarray of int, shape (n,)
    groups : ndarray, shape (n,)
        Study ids: all analyses of one study fall in the same fold.
    n_splits : int
    C : float
        Inverse L2 strength (features are standardised within each training fold).
    seed : int

    Returns
    -------
    dict
        ``balanced_accuracy`` (pooled out-of-fold), ``fold_mean``, ``fold_sd`` and
        ``predictions`` (ndarray, shape (n,), out-of-fold).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.preprocessing import StandardScaler

    predictions = np.zeros(len(labels), dtype=int)
    fold_scores = []
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in folds.split(features, labels, groups):
        # float64: the Gram eigendecomposition of standardised voxels is ill-conditioned in float32.
        scaler = StandardScaler().fit(features[train].astype(np.float64))
        train_x = scaler.transform(features[train].astype(np.float64))
        test_x = scaler.transform(features[test].astype(np.float64))
        if train_x.shape[1] > len(train):
            # With more features than training rows (raw voxels) the L2-penalised solution lies in the span of
            # the rows: rotating onto an orthonormal basis of that span leaves the fit unchanged and makes it cheap.
            train_x, test_x = row_space_coordinates(train_x, test_x)
        # Newton steps converge in a few iterations however ill-conditioned the (rotated) features are.
        classifier = LogisticRegression(C=C, solver="newton-cholesky", max_iter=200, class_weight="balanced")
        classifier.fit(train_x, labels[train])
        predictions[test] = classifier.predict(test_x)
        fold_scores.append(balanced_accuracy_score(labels[test], predictions[test]))
    return {
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "fold_mean": float(np.mean(fold_scores)),
        "fold_sd": float(np.std(fold_scores)),
        "predictions": predictions,
    }


def summarise_probe(name: str, probe: Mapping[str, Any], analyses: pd.DataFrame) -> dict[str, Any]:
    """One results row: balanced accuracy on all analyses, on studies new to Neurosynth, and on overlapping ones."""
    from sematlas.evaluation.metrics import balanced_accuracy

    labels, predictions = analyses["label"].to_numpy(), probe["predictions"]
    row: dict[str, Any] = {
        "features": name,
        "balanced_accuracy": probe["balanced_accuracy"],
        "fold_mean": probe["fold_mean"],
        "fold_sd": probe["fold_sd"],
        "n": len(labels),
    }
    for subset, keep in (
        ("new_studies", ~analyses["in_neurosynth"].to_numpy()),
        ("neurosynth_studies", analyses["in_neurosynth"].to_numpy()),
    ):
        both_classes = keep.any() and len(np.unique(labels[keep])) == 2
        row[f"balanced_accuracy_{subset}"] = (
            balanced_accuracy(labels[keep], predictions[keep]) if both_classes else None
        )
        row[f"n_{subset}"] = int(keep.sum())
    return row


def run_probe(
    models: Mapping[str, Any], datamodule: Any, train_maps: torch.Tensor, params: Params
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The zero-shot probe for every model and both baselines.

    Parameters
    ----------
    models : mapping of str to AtlasModel
        Frozen models by variant.
    datamodule : NeurosynthDataModule
        Set up: its grid, kernels and training split (overlap flags).
    train_maps : Tensor, shape (n_train, C, n_mask_voxels)
        The training sample (:func:`sematlas.evaluation.reconstruction.training_sample`) that fits the PCA baseline.
    params : mapping
        Profile parameters (``curation``, ``evaluation.probe_folds``, ``evaluation.probe_C``,
        ``model.z_dim``, ``seed``).

    Returns
    -------
    results : DataFrame
        One row per feature set (:func:`summarise_probe`).
    analyses : DataFrame
        The probed analyses with overlap flags and every feature set's out-of-fold prediction.
    """
    from sematlas.evaluation.baselines import PCABaseline

    seed, evaluation = int(params["seed"]), params["evaluation"]
    analyses, peaks = probe_analyses(params["curation"])
    neurosynth = pd.read_parquet(datamodule.processed_dir / "studies.parquet")
    training_ids = set(datamodule.tables["train"].studies["id"].astype(str))
    analyses = flag_neurosynth_overlap(analyses, neurosynth, training_ids)
    maps = render_analyses(analyses, peaks, datamodule.grid, datamodule.fwhms, datamodule.truncate)
    mask = torch.from_numpy(datamodule.grid.mask())
    voxels = maps[..., mask]  # (n, C, V)

    features: dict[str, np.ndarray] = {}
    for name, model in models.items():
        encoded = [
            model.encode(maps[start : start + 64], neutral_metadata(model.encoder, analyses.iloc[start : start + 64]))
            for start in range(0, len(maps), 64)
        ]
        features[name] = torch.cat(encoded).cpu().numpy()
    pca = PCABaseline(int(params["model"]["z_dim"]), seed).fit(train_maps.flatten(1).numpy())
    features["pca"] = pca.transform(voxels.flatten(1).numpy())
    features["raw_voxels"] = voxels[:, -1].numpy()

    labels, groups = analyses["label"].to_numpy(), analyses["neurostore_study_id"].to_numpy()
    results = []
    for name, matrix in features.items():
        probe = grouped_probe(
            matrix, labels, groups, int(evaluation["probe_folds"]), float(evaluation["probe_C"]), seed
        )
        results.append(summarise_probe(name, probe, analyses))
        analyses[f"prediction_{name}"] = probe["predictions"]
    return pd.DataFrame(results), analyses
