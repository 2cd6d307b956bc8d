"""Held-out evaluation of a trained volumetric run against the linear baselines at equal latent size.

- Reconstruction: the model against PCA fitted on the training split and the
  training-set mean map;
- conditional generation: the model against ridge regression from the same
  metadata vector to the map, and the mean map.

The metrics are :mod:`sematlas.evaluation.metrics`' (Pearson r and SSIM inside
the brain mask, on the widest-kernel channel), the baselines
:mod:`sematlas.evaluation.baselines`'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from sematlas.core.metadata import meta_batches
from sematlas.evaluation.baselines import training_sample_rows
from sematlas.evaluation.criteria import YEAR_DEBIASING_GOAL
from sematlas.evaluation.linear import linear_baseline_scores
from sematlas.evaluation.metrics import balanced_accuracy, map_metrics, summarise
from sematlas.evaluation.paired import paired_bootstrap
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.models.base import ACTIVE_UNIT_THRESHOLD

if TYPE_CHECKING:
    from pathlib import Path

    from sematlas.core.paths import ProfilePaths
    from sematlas.core.results import StageResults
    from sematlas.evaluation.results import VolumetricResults
    from sematlas.models import VolumetricVAE


def training_sample(datamodule: Any, max_rows: int, seed: int, maps: RenderedSplits | None = None) -> torch.Tensor:
    """The training maps of :func:`training_sample_rows`, shape ``(n, C, n_mask_voxels)``.

    From the stage's rendered splits when given (they then hold the whole training split,
    which the stage's other evaluations need anyway); otherwise only the sample is rendered.
    """
    rows = training_sample_rows(datamodule.train_size, max_rows, seed)
    if maps is None:
        return datamodule.all_images("train", rows=rows)
    return RenderedSplits.shared(maps, datamodule).images("train")[torch.from_numpy(rows)]


# ------------------------------------------------------------------ evaluating a run
def _widest(maps: torch.Tensor) -> torch.Tensor:
    """The last (widest-kernel) channel of ``(n, C, V)`` maps, ``(n, V)``."""
    return maps[:, -1]


def native_widest(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The widest-kernel channel of network-grid maps ``(n, C, d, h, w)`` inside ``mask`` (network grid), ``(n, V)``."""
    return _widest(volume[..., mask])


@torch.no_grad()
def collect_outputs(
    model: VolumetricVAE, datamodule: Any, split: str, maps: RenderedSplits | None = None
) -> dict[str, Any]:
    """Run a model over a split (no augmentation) and keep everything evaluation needs.

    Parameters
    ----------
    model : VolumetricVAE
    datamodule : NeurosynthDataModule
        Set up; its batch size, metadata and ids.
    split : str
    maps : RenderedSplits, optional
        The stage's rendered splits; by default the split is rendered for this call.

    Returns
    -------
    dict
        ``target``, ``reconstruction``, ``generated`` (n, V) on the widest channel
        inside the mask (``generated``: the decoded prior mean, :meth:`~VolumetricVAE.generate_mean`);
        ``inputs`` (n, C, V), every channel of the input maps; ``mu``, ``logvar`` (n, z);
        ``year_pred``, ``year_bin`` (n,) when the model has a year head; ``meta`` (the
        split's metadata tensors); ``id``.
    """
    model.eval()
    maps = RenderedSplits.shared(maps, datamodule)
    mask = datamodule.brain_mask()
    keys = ("reconstruction", "generated", "mu", "logvar", "year_pred")
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    ids: list[str] = []
    for batch in maps.batches(datamodule, split, description=f"evaluating on {split}"):
        image, meta = batch["image"], batch["meta"]
        out = model(image, meta)
        parts["reconstruction"].append(native_widest(out["x_hat"], mask))
        parts["generated"].append(
            native_widest(model.generate_mean(meta if model.is_conditional else None, len(image)), mask)
        )
        parts["mu"].append(out["mu"])
        parts["logvar"].append(out["logvar"])
        if "year_logits" in out:
            parts["year_pred"].append(out["year_logits"].argmax(1))
        ids += batch["id"]
    collected: dict[str, Any] = {key: torch.cat(value) for key, value in parts.items() if value}
    collected["inputs"] = maps.images(split)
    collected["target"] = _widest(collected["inputs"])
    collected["meta"] = datamodule.meta[split]
    collected["id"] = ids
    return collected


@torch.no_grad()
def generation_estimators(
    model: VolumetricVAE,
    datamodule: Any,
    split: str,
    n_studies: int,
    n_samples: int,
    seed: int,
    maps: RenderedSplits | None = None,
) -> dict[str, Any]:
    """The two point predictions from metadata alone, scored on the first ``n_studies`` of ``split``.

    The decoded prior mean ``decode(mu(m), m)`` (what :func:`collect_outputs` scores on every
    study) against the average of ``n_samples`` decoded samples of ``p(z | m)``: the
    expected map, which costs ``n_samples`` decodes per study.

    Returns
    -------
    dict
        ``n_studies``, ``n_samples``, ``prior_mean_r_median``, ``sample_average_r_median``
        and their paired comparison ``sample_average_vs_prior_mean``.
    """
    model.eval()
    maps = RenderedSplits.shared(maps, datamodule)
    mask = datamodule.brain_mask()
    generator = torch.Generator().manual_seed(seed)
    rows = min(n_studies, len(datamodule.tables[split]))
    prior_mean, sample_average = [], []
    for meta in meta_batches(datamodule.meta[split], datamodule.batch_size, rows):
        count = len(meta["cond"])
        conditioning = meta if model.is_conditional else None
        prior_mean.append(native_widest(model.generate_mean(conditioning, count), mask))
        draws = model.generate(conditioning, n_samples, generator)
        if not model.is_conditional:
            draws = draws.expand(-1, count, *draws.shape[2:])
        sample_average.append(native_widest(draws.mean(0), mask))
    target = _widest(maps.images(split)[:rows])
    scores = {
        name: map_metrics(torch.cat(values), target, torch.from_numpy(datamodule.grid.mask()))["pearson_r"].to_numpy()
        for name, values in (("prior_mean", prior_mean), ("sample_average", sample_average))
    }
    return {
        "n_studies": rows,
        "n_samples": n_samples,
        "prior_mean_r_median": float(pd.Series(scores["prior_mean"]).median()),
        "sample_average_r_median": float(pd.Series(scores["sample_average"]).median()),
        "sample_average_vs_prior_mean": paired_bootstrap(
            scores["sample_average"], scores["prior_mean"], seed
        ).to_dict(),
    }


def evaluate_run(
    model: VolumetricVAE,
    datamodule: Any,
    variant: str,
    evaluation: Mapping[str, Any],
    seed: int,
    split: str = "test",
    maps: RenderedSplits | None = None,
    baseline_store: Path | None = None,
    outputs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Held-out metrics of a model against the linear baselines at equal latent size.

    Parameters
    ----------
    model : VolumetricVAE
        The trained network (``AtlasModule.model``).
    datamodule : NeurosynthDataModule
        Set up; its training split fits the baselines.
    variant : str
    evaluation : mapping
        The ``evaluation`` parameters (``pca_max_train``, ``estimator_studies``, ``estimator_samples``).
    seed : int
    split : str
        The held-out split (``test``).
    maps : RenderedSplits, optional
        The stage's rendered splits, shared by its evaluations; by default the
        held-out and training splits are rendered for this call, once each.
    baseline_store : Path, optional
        Where the linear baselines' scores are kept across evaluations and stages
        (:func:`~sematlas.evaluation.linear.linear_baseline_scores`,
        ``ProfilePaths.linear_baselines``); ``None`` fits and scores them for this call.
    outputs : mapping, optional
        The model's :func:`collect_outputs` on ``split``, when the caller has them (its codes
        also make the latents table); by default they are collected here.

    Returns
    -------
    results : dict
        ``reconstruction`` (model / pca / mean_map), ``conditional_generation``
        (model / ridge / mlp / mean_map), ``year_debiasing``, ``active_units``, sizes: the
        fields of :class:`~sematlas.evaluation.results.VolumetricResults` but its
        training summary (the ablation protocol keeps this mapping as it is).
    per_study : DataFrame
        One row per held-out study: every method's Pearson r and SSIM.
    """
    maps = RenderedSplits.shared(maps, datamodule)
    out = collect_outputs(model, datamodule, split, maps) if outputs is None else outputs
    mask = torch.from_numpy(datamodule.grid.mask())
    target = out["target"]
    z_dim = out["mu"].shape[1]
    # The same for every model with this latent size: fitted and scored once, then read back.
    linear = linear_baseline_scores(
        maps, datamodule, split, z_dim, int(evaluation["pca_max_train"]), seed, store=baseline_store
    )
    metrics_of = {
        ("reconstruction", "model"): map_metrics(out["reconstruction"], target, mask),
        ("reconstruction", "pca"): linear.metrics["pca"],
        ("reconstruction", "mean_map"): linear.metrics["mean_map"],
        ("conditional_generation", "model"): map_metrics(out["generated"], target, mask),
        ("conditional_generation", "ridge"): linear.metrics["ridge"],
        ("conditional_generation", "mlp"): linear.metrics["mlp"],
        ("conditional_generation", "mean_map"): linear.metrics["mean_map"],
    }
    results: dict[str, Any] = {
        "variant": variant,
        "split": split,
        "n_studies": len(target),
        "z_dim": z_dim,
        "n_train": linear.n_train,
        "pca_fitted_on": linear.fitted_on,
        "ridge_fitted_on": linear.fitted_on,
        "channel": "widest kernel",
        "reconstruction": {},
        "conditional_generation": {},
    }
    per_study = pd.DataFrame({"id": out["id"]})
    for (task, method), metrics in metrics_of.items():
        results[task][method] = summarise(metrics)
        per_study[f"{task}_{method}_pearson_r"] = metrics["pearson_r"].to_numpy()
        per_study[f"{task}_{method}_ssim"] = metrics["ssim"].to_numpy()
    results["reconstruction"]["model_beats_pca_fraction"] = float(
        (per_study["reconstruction_model_pearson_r"] > per_study["reconstruction_pca_pearson_r"]).mean()
    )
    results["conditional_generation"]["uses_metadata"] = model.is_conditional
    results["conditional_generation"]["estimators"] = generation_estimators(
        model,
        datamodule,
        split,
        int(evaluation["estimator_studies"]),
        int(evaluation["estimator_samples"]),
        seed,
        maps,
    )
    # Each claim against its baseline on the same studies: paired bootstrap CIs of the median r difference.
    generation_baselines = ("ridge", "mlp", "mean_map")
    for task, baselines in (("reconstruction", ("pca", "mean_map")), ("conditional_generation", generation_baselines)):
        for baseline in baselines:
            model_r, baseline_r = (per_study[f"{task}_{method}_pearson_r"].to_numpy() for method in ("model", baseline))
            results[task][f"vs_{baseline}"] = paired_bootstrap(model_r, baseline_r, seed).to_dict()
    results["active_units"] = int((out["mu"].var(0, unbiased=False) > ACTIVE_UNIT_THRESHOLD).sum())
    if "year_pred" in out:
        accuracy = balanced_accuracy(out["meta"]["year_bin"].numpy(), out["year_pred"].numpy())
        n_bins = int(datamodule.encoder.n_year_bins)
        results["year_debiasing"] = {
            "balanced_accuracy": accuracy,
            "chance": 1.0 / n_bins,
            "goal_at_most": YEAR_DEBIASING_GOAL.threshold,
            "n_bins": n_bins,
            "meets_goal": YEAR_DEBIASING_GOAL.met(accuracy),
        }
    else:
        results["year_debiasing"] = None
    return results, per_study


@torch.no_grad()
def latents_table(
    model: VolumetricVAE,
    datamodule: Any,
    maps: RenderedSplits | None = None,
    splits: Sequence[str] | None = None,
    collected: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Posterior means of every study of ``splits`` (default: every split).

    Parameters
    ----------
    model : VolumetricVAE
    datamodule : NeurosynthDataModule
        Set up.
    maps : RenderedSplits, optional
        The stage's rendered splits; by default every split is rendered for this call.
    splits : sequence of str, optional
        The splits encoded, in this order (default: the DataModule's, train, val, test).
    collected : mapping of str to mapping, optional
        Split -> the model's :func:`collect_outputs` on it: those splits' codes are read from
        there, not encoded again (the encoder in eval mode gives the same posterior).

    Returns
    -------
    DataFrame
        ``id``, ``split``, ``z_00`` ... one column per latent dimension, and
        ``logvar_mean`` (mean posterior log-variance, a per-study uncertainty).
    """
    model.eval()
    maps = RenderedSplits.shared(maps, datamodule)
    collected = collected or {}
    frames = []
    for split in datamodule.tables if splits is None else splits:
        if split in collected:
            out = collected[split]
            frames.append(_latents_frame(split, out["id"], out["mu"], out["logvar"]))
            continue
        for batch in maps.batches(datamodule, split, description=f"encoding {split}"):
            frames.append(_latents_frame(split, batch["id"], *model.encode(batch["image"], batch["meta"])))
    return pd.concat(frames, ignore_index=True)


def _latents_frame(split: str, ids: Sequence[str], mu: torch.Tensor, logvar: torch.Tensor) -> pd.DataFrame:
    """Rows of :func:`latents_table` for studies ``ids`` with posteriors ``mu``, ``logvar`` (n, z)."""
    frame = pd.DataFrame(mu.numpy(), columns=[f"z_{k:02d}" for k in range(mu.shape[1])])
    frame.insert(0, "split", split)
    frame.insert(0, "id", list(ids))
    frame["logvar_mean"] = logvar.mean(1).numpy()
    return frame


def results_table(results: Mapping[str, VolumetricResults]) -> pd.DataFrame:
    """Long table of every (variant, task, method) summary; baselines appear once per task.

    Parameters
    ----------
    results : mapping
        Variant -> its :class:`~sematlas.evaluation.results.VolumetricResults`.

    Returns
    -------
    DataFrame
        ``task``, ``method``, ``variant`` (empty for a baseline), ``label``, then every
        field of :class:`~sematlas.evaluation.results.MapMetrics`.
    """
    from sematlas.evaluation.results import metric_blocks  # here: it imports the criteria (see evaluate_run)

    rows: list[dict[str, Any]] = []
    for variant, result in results.items():
        for task in ("reconstruction", "conditional_generation"):
            for method, summary in metric_blocks(getattr(result, task)).items():
                if method != "model" and any(r["task"] == task and r["method"] == method for r in rows):
                    continue
                label = f"{task.replace('_', ' ')}: {variant if method == 'model' else method}"
                rows.append(
                    {
                        "task": task,
                        "method": method,
                        "variant": variant if method == "model" else "",
                        "label": label,
                        **summary.to_dict(),
                    }
                )
    return pd.DataFrame(rows)


def save_results(results: StageResults, per_study: pd.DataFrame, latents: pd.DataFrame, paths: ProfilePaths) -> Path:
    """Write a run's results file with ``per_study.parquet`` and ``latents.parquet`` beside it, each atomically.

    Parameters
    ----------
    results : StageResults
        :class:`~sematlas.evaluation.results.VolumetricResults` or ``PointCloudResults``; its
        :meth:`~sematlas.core.results.StageResults.location` names the folder.
    per_study : DataFrame
        One row per held-out study.
    latents : DataFrame
        :func:`latents_table` (or its point-cloud twin).
    paths : ProfilePaths

    Returns
    -------
    Path
        The results file.
    """
    from sematlas.core.io import write_parquet

    target = results.location(paths)
    write_parquet(per_study, target.parent / "per_study.parquet")
    write_parquet(latents, target.parent / "latents.parquet")
    return results.save(target)
