"""Held-out evaluation of brain maps: the metric definitions everyone uses.

- Reconstruction: voxel-wise Pearson r and SSIM between the input map and its
  reconstruction inside the brain mask, plus MSE and PSNR; per study, then
  summarised by median and mean.
- Linear baselines at equal latent size: PCA fitted on the training split
  (reconstruction), ridge regression from the same metadata vector to the map
  (conditional generation) and the training-set mean map.

Maps are compared on one channel, the widest kernel (12 mm FWHM by default):
that is the channel of the reference figures in the design card. All functions
take maps flattened to the brain mask, ``(n_studies, n_voxels)``, except SSIM,
which needs the volume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from sematlas.models import VolumetricVAE


def masked_pearson(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson r of each row pair.

    Parameters
    ----------
    prediction, target : Tensor, shape (n_studies, n_voxels)

    Returns
    -------
    Tensor, shape (n_studies,)
        NaN where either row is constant (r is undefined there).
    """
    p = prediction.double() - prediction.double().mean(dim=1, keepdim=True)
    t = target.double() - target.double().mean(dim=1, keepdim=True)
    denominator = p.norm(dim=1) * t.norm(dim=1)
    r = (p * t).sum(dim=1) / denominator
    return torch.where(denominator > 0, r, torch.full_like(r, float("nan"))).float()


def _gaussian_window(sigma: float, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (x / sigma) ** 2)
    return (window / window.sum()).float()


def _blur(volume: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``(n, 1, D, H, W)`` with zero padding."""
    pad = len(window) // 2
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(window)
        padding = [0, 0, 0]
        padding[axis] = pad
        volume = F.conv3d(volume, window.view(shape), padding=tuple(padding))
    return volume


def ssim3d(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004) in 3-D, averaged inside the mask.

    Local means, variances and covariance use a Gaussian window (sigma in voxels)
    as in the original paper; ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.

    Parameters
    ----------
    prediction, target : Tensor, shape (n_studies, D, H, W)
    mask : Tensor of bool, shape (D, H, W)

    Returns
    -------
    Tensor, shape (n_studies,)
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    window = _gaussian_window(sigma)
    x, y = prediction.float().unsqueeze(1), target.float().unsqueeze(1)
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    # SSIM = (2 mu_x mu_y + C1)(2 cov + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map[:, 0][:, mask].mean(dim=1)


def unmask(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scatter ``(n, n_voxels)`` rows back into ``(n, D, H, W)`` volumes (zeros outside)."""
    volume = flat.new_zeros((flat.shape[0], *mask.shape))
    volume[:, mask] = flat
    return volume


def map_metrics(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0, chunk_size: int = 64
) -> pd.DataFrame:
    """Per-study metrics of predicted maps.

    Parameters
    ----------
    prediction, target : Tensor, shape (n_studies, n_voxels)
        Maps flattened to ``mask``.
    mask : Tensor of bool, shape (D, H, W)
    chunk_size : int
        Studies per SSIM pass: SSIM holds about a dozen full volumes per study, so
        thousands at once would not fit in memory.

    Returns
    -------
    DataFrame with columns ``pearson_r``, ``ssim``, ``mse``, ``psnr`` (one row per study).
    """
    mse = ((prediction.double() - target.double()) ** 2).mean(dim=1)
    psnr = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))
    return pd.DataFrame(
        {
            "pearson_r": masked_pearson(prediction, target).numpy(),
            "ssim": torch.cat(
                [
                    ssim3d(unmask(prediction[rows], mask), unmask(target[rows], mask), mask, data_range)
                    for rows in torch.arange(len(target)).split(chunk_size)
                ]
            ).numpy(),
            "mse": mse.numpy(),
            "psnr": psnr.numpy(),
        }
    )


def summarise(per_study: pd.DataFrame) -> dict[str, float]:
    """Median and mean of every metric column: ``{"pearson_r_median": ..., "pearson_r_mean": ...}``."""
    summary = {}
    for column in per_study.columns:
        values = per_study[column].dropna()
        summary[f"{column}_median"] = float(values.median())
        summary[f"{column}_mean"] = float(values.mean())
    summary["n_studies"] = len(per_study)
    return summary


class PCABaseline:
    """Reconstruction through the first ``k`` principal components of the training maps.

    Parameters
    ----------
    n_components : int
        Equal to the model's latent size for a fair comparison.
    seed : int
        For the randomized SVD.
    """

    def __init__(self, n_components: int, seed: int = 0) -> None:
        self.n_components = n_components
        self.seed = seed

    def fit(self, maps: np.ndarray) -> PCABaseline:
        """Fit on training maps ``(n_train, n_features)``."""
        from sklearn.decomposition import PCA

        k = min(self.n_components, maps.shape[0] - 1, maps.shape[1])
        self.pca_ = PCA(n_components=k, svd_solver="randomized", random_state=self.seed).fit(maps)
        return self

    def reconstruct(self, maps: np.ndarray) -> np.ndarray:
        """Project ``(n, n_features)`` onto the components and back."""
        return self.pca_.inverse_transform(self.pca_.transform(maps))

    def transform(self, maps: np.ndarray) -> np.ndarray:
        """PCA scores ``(n, k)``: features of the same size as the model's latents."""
        return self.pca_.transform(maps)


class RidgeBaseline:
    """Conditional generation by ridge regression from the metadata vector to the map.

    Parameters
    ----------
    alphas : sequence of float
        Regularisation strengths tried by efficient leave-one-out CV (``RidgeCV``).
    """

    def __init__(self, alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)) -> None:
        self.alphas = alphas

    def fit(self, metadata: np.ndarray, maps: np.ndarray) -> RidgeBaseline:
        from sklearn.linear_model import RidgeCV

        self.ridge_ = RidgeCV(alphas=self.alphas).fit(metadata, maps)
        return self

    def predict(self, metadata: np.ndarray) -> np.ndarray:
        return self.ridge_.predict(metadata)


def metadata_matrix(meta: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The metadata vector of the data contract as a plain matrix ``(n, cond_dim + n_sparse)``.

    Missing sparse values stay 0 (the training mean after standardisation), which
    is what a linear model without an imputation head can do.
    """
    return torch.cat([meta["cond"], meta["sparse"] * meta["sparse_mask"]], dim=1).numpy()


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``labels`` (chance = 1 / n_classes)."""
    classes = np.unique(labels)
    return float(np.mean([(predictions[labels == c] == c).mean() for c in classes]))


def training_sample_rows(n_train: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted rows of the seeded sample of at most ``max_rows`` training maps that fits the linear baselines.

    One rule for every stage (PCA, ridge, PPCA, the probe's PCA features), so they all see the same maps
    and the memory of a CPU bounds them.
    """
    return np.sort(np.random.default_rng(seed).permutation(n_train)[:max_rows])


def training_sample(datamodule: Any, max_rows: int, seed: int) -> torch.Tensor:
    """The training maps of :func:`training_sample_rows`, rendered once, shape ``(n, C, n_mask_voxels)``."""
    rows = training_sample_rows(datamodule.train_size, max_rows, seed)
    return datamodule.all_images("train", rows=rows)


# ------------------------------------------------------------------ evaluating a run
def _widest(maps: torch.Tensor) -> torch.Tensor:
    """The last (widest-kernel) channel of ``(n, C, V)`` maps, ``(n, V)``."""
    return maps[:, -1]


def native_widest(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The widest-kernel channel of padded maps ``(n, C, G, G, G)`` inside the native-grid ``mask``, ``(n, V)``."""
    d, h, w = mask.shape
    return _widest(volume[..., :d, :h, :w][..., mask])


@torch.no_grad()
def collect_outputs(
    model: VolumetricVAE, datamodule: Any, split: str, n_prior_samples: int, seed: int
) -> dict[str, Any]:
    """Run a model over a split (no augmentation) and keep everything evaluation needs.

    Returns
    -------
    dict
        ``target``, ``reconstruction``, ``generated`` (n, V) on the widest channel
        inside the mask; ``inputs`` (n, C, V), every channel of the input maps;
        ``mu``, ``logvar`` (n, z); ``year_pred``, ``year_bin`` (n,) when the model
        has a year head; ``meta`` (the split's metadata tensors); ``id``.
    """
    model.eval()
    mask = torch.from_numpy(datamodule.grid.mask())
    d, h, w = mask.shape
    generator = torch.Generator().manual_seed(seed)
    keys = ("inputs", "reconstruction", "generated", "mu", "logvar", "year_pred")
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    ids: list[str] = []
    for batch in datamodule.loader(split):
        image, meta = batch["image"], batch["meta"]
        out = model(image, meta)
        parts["inputs"].append(image[..., :d, :h, :w][..., mask])
        parts["reconstruction"].append(native_widest(out["x_hat"], mask))
        # Generation from metadata alone: the average decoded map over prior samples.
        z_dim = out["mu"].shape[1]
        samples = [
            model.decode(torch.randn(image.shape[0], z_dim, generator=generator), meta)
            for _ in range(max(n_prior_samples, 1))
        ]
        parts["generated"].append(native_widest(torch.stack(samples).mean(0), mask))
        parts["mu"].append(out["mu"])
        parts["logvar"].append(out["logvar"])
        if "year_logits" in out:
            parts["year_pred"].append(out["year_logits"].argmax(1))
        ids += batch["id"]
    collected: dict[str, Any] = {key: torch.cat(value) for key, value in parts.items() if value}
    collected["target"] = _widest(collected["inputs"])
    collected["meta"] = datamodule.meta[split]
    collected["id"] = ids
    return collected


def evaluate_run(
    model: VolumetricVAE, datamodule: Any, variant: str, evaluation: Mapping[str, Any], seed: int, split: str = "test"
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
        The ``evaluation`` parameters (``n_prior_samples``, ``pca_max_train``).
    seed : int
    split : str
        The held-out split (``test``).

    Returns
    -------
    results : dict
        ``reconstruction`` (model / pca / mean_map), ``conditional_generation``
        (model / ridge / mean_map), ``year_debiasing``, ``active_units``, sizes.
    per_study : DataFrame
        One row per held-out study: every method's Pearson r and SSIM.
    """
    from sematlas.training.module import ACTIVE_UNIT_THRESHOLD

    out = collect_outputs(model, datamodule, split, int(evaluation["n_prior_samples"]), seed)
    mask = torch.from_numpy(datamodule.grid.mask())
    target = out["target"]
    z_dim = out["mu"].shape[1]

    train_maps = datamodule.all_images("train")  # (n_train, C, V)
    n_train = len(train_maps)
    mean_map = _widest(train_maps).mean(0, keepdim=True).expand_as(target)
    rows = training_sample_rows(n_train, int(evaluation["pca_max_train"]), seed)
    train_maps = train_maps[rows]
    pca = PCABaseline(z_dim, seed).fit(train_maps.flatten(1).numpy())
    test_maps = out["inputs"]  # rendered once, by collect_outputs
    pca_reconstruction = torch.from_numpy(pca.reconstruct(test_maps.flatten(1).numpy())).float()
    pca_reconstruction = pca_reconstruction.view_as(test_maps)[:, -1]
    ridge = RidgeBaseline().fit(metadata_matrix(datamodule.meta["train"])[rows], _widest(train_maps).numpy())
    ridge_prediction = torch.from_numpy(ridge.predict(metadata_matrix(out["meta"]))).float()
    del train_maps

    methods = {
        ("reconstruction", "model"): out["reconstruction"],
        ("reconstruction", "pca"): pca_reconstruction,
        ("reconstruction", "mean_map"): mean_map,
        ("conditional_generation", "model"): out["generated"],
        ("conditional_generation", "ridge"): ridge_prediction,
        ("conditional_generation", "mean_map"): mean_map,
    }
    results: dict[str, Any] = {
        "variant": variant,
        "split": split,
        "n_studies": len(target),
        "z_dim": z_dim,
        "n_train": n_train,
        "pca_fitted_on": len(rows),
        "ridge_fitted_on": len(rows),
        "channel": "widest kernel",
        "reconstruction": {},
        "conditional_generation": {},
    }
    per_study = pd.DataFrame({"id": out["id"]})
    for (task, method), prediction in methods.items():
        metrics = map_metrics(prediction, target, mask)
        results[task][method] = summarise(metrics)
        per_study[f"{task}_{method}_pearson_r"] = metrics["pearson_r"].to_numpy()
        per_study[f"{task}_{method}_ssim"] = metrics["ssim"].to_numpy()
    results["reconstruction"]["model_beats_pca_fraction"] = float(
        (per_study["reconstruction_model_pearson_r"] > per_study["reconstruction_pca_pearson_r"]).mean()
    )
    results["conditional_generation"]["uses_metadata"] = model.is_conditional
    results["active_units"] = int((out["mu"].var(0, unbiased=False) > ACTIVE_UNIT_THRESHOLD).sum())
    if "year_pred" in out:
        accuracy = balanced_accuracy(out["meta"]["year_bin"].numpy(), out["year_pred"].numpy())
        n_bins = int(datamodule.encoder.n_year_bins)
        results["year_debiasing"] = {
            "balanced_accuracy": accuracy,
            "chance": 1.0 / n_bins,
            "goal_at_most": 0.15,
            "n_bins": n_bins,
            "meets_goal": accuracy <= 0.15,
        }
    else:
        results["year_debiasing"] = None
    return results, per_study


@torch.no_grad()
def latents_table(model: VolumetricVAE, datamodule: Any) -> pd.DataFrame:
    """Posterior means of every study of every split.

    Returns
    -------
    DataFrame
        ``id``, ``split``, ``z_00`` ... one column per latent dimension, and
        ``logvar_mean`` (mean posterior log-variance, a per-study uncertainty).
    """
    model.eval()
    frames = []
    for split in datamodule.tables:
        for batch in datamodule.loader(split):
            mu, logvar = model.encode(batch["image"], batch["meta"])
            frame = pd.DataFrame(mu.numpy(), columns=[f"z_{k:02d}" for k in range(mu.shape[1])])
            frame.insert(0, "split", split)
            frame.insert(0, "id", batch["id"])
            frame["logvar_mean"] = logvar.mean(1).numpy()
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def results_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Long table of every (variant, task, method) summary; baselines appear once per task."""
    rows: list[dict[str, Any]] = []
    for variant, result in results.items():
        for task in ("reconstruction", "conditional_generation"):
            for method, summary in result[task].items():
                if not isinstance(summary, dict):
                    continue
                if method != "model" and any(r["task"] == task and r["method"] == method for r in rows):
                    continue
                label = f"{task.replace('_', ' ')}: {variant if method == 'model' else method}"
                rows.append(
                    {
                        "task": task,
                        "method": method,
                        "variant": variant if method == "model" else "",
                        "label": label,
                        **summary,
                    }
                )
    return pd.DataFrame(rows)


def save_results(results: Mapping[str, Any], per_study: pd.DataFrame, latents: pd.DataFrame, folder: Any) -> None:
    """Write ``test_results.json``, ``per_study.parquet`` and ``latents.parquet`` atomically."""
    from pathlib import Path

    from sematlas.core.io import write_json, write_parquet

    folder = Path(folder)
    write_parquet(per_study, folder / "per_study.parquet")
    write_parquet(latents, folder / "latents.parquet")
    write_json(results, folder / "test_results.json")
