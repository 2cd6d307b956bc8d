"""Distribution-level quality of generated maps: precision, recall and Fréchet distance.

Per-study correlations (:mod:`sematlas.evaluation.metrics`) say whether a model can
reproduce a given map; they cannot say whether its *samples* look like real
studies (precision) or cover the variety of real studies (recall). Both are
measured here in one fixed feature space, the first principal components of the
training maps, so every model and baseline is judged by the same ruler.

- Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019): each set's
  manifold is the union of balls around its points with radius the distance to
  the k-th nearest neighbour within the set. Precision is the fraction of
  generated points inside the real manifold; recall the fraction of real points
  inside the generated manifold.
- Fréchet distance between Gaussians fitted to the two sets (Heusel et al., 2017):
  ``FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``.
- The linear baseline is probabilistic PCA (Tipping & Bishop, 1999;
  :class:`sematlas.evaluation.baselines.ProbabilisticPCA`) with as many components
  as the model has latent dimensions.

Each model is sampled from its prior with the held-out studies' metadata
(:func:`prior_samples`; ``p(z | m)`` for a conditional prior). For the variants whose
training codes are given, three more sets show where its samples stand: codes from
a Gaussian mixture fitted to the training codes (:func:`mixture_samples`, Ghosh et
al. 2020), codes from ``N(0, I)`` whatever the prior (:func:`standard_normal_samples`),
and the model's reconstructions of the held-out maps, the ceiling any sampler of
that decoder can reach.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import linalg

from sematlas.evaluation.baselines import PCABaseline, ProbabilisticPCA
from sematlas.evaluation.cas import sample_generator
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.inference.density import LatentMixture

if TYPE_CHECKING:
    from sematlas.models import VolumetricVAE


def knn_radii(features: np.ndarray, k: int = 3) -> np.ndarray:
    """Distance of every point to its ``k``-th nearest neighbour in the same set.

    Parameters
    ----------
    features : ndarray, shape (n, d)
    k : int

    Returns
    -------
    ndarray, shape (n,)
    """
    if len(features) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(features)}")
    distances = _pairwise(features, features)
    # Column 0 of the sorted rows is the point itself (distance 0).
    return np.sort(distances, axis=1)[:, k]


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(len(a), len(b))``."""
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall of ``generated`` against ``real`` (Kynkäänniemi et al., 2019).

    Parameters
    ----------
    real : ndarray, shape (n_real, d)
    generated : ndarray, shape (n_generated, d)
    k : int
        Neighbourhood size of the manifold estimate (3 in the paper).

    Returns
    -------
    dict
        ``precision`` = mean over g of [exists r: ||g - r|| <= radius_k(r)];
        ``recall`` = mean over r of [exists g: ||r - g|| <= radius_k(g)].
    """
    real_radii, generated_radii = knn_radii(real, k), knn_radii(generated, k)
    distances = _pairwise(generated, real)  # (n_generated, n_real)
    precision = (distances <= real_radii[None, :]).any(axis=1).mean()
    recall = (distances.T <= generated_radii[None, :]).any(axis=1).mean()
    return {"precision": float(precision), "recall": float(recall)}


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets, each ``(n, d)``.

    See :func:`gaussian_frechet_distance`.
    """
    return gaussian_frechet_distance(
        real.mean(0), np.cov(real, rowvar=False), generated.mean(0), np.cov(generated, rowvar=False)
    )


def gaussian_frechet_distance(mu_r: np.ndarray, cov_r: np.ndarray, mu_g: np.ndarray, cov_g: np.ndarray) -> float:
    """Fréchet distance between two Gaussians given by their moments, means ``(d,)`` and covariances ``(d, d)``.

    ``FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` (Heusel et al., 2017); the
    matrix square root's imaginary part (numerical noise from near-singular covariances) is dropped.
    """
    cov_r, cov_g = np.atleast_2d(cov_r), np.atleast_2d(cov_g)
    with warnings.catch_warnings():
        # Fewer samples than feature dimensions make the product singular; the root is still defined.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = np.real(linalg.sqrtm(cov_r @ cov_g))
    return float(((mu_r - mu_g) ** 2).sum() + np.trace(cov_r + cov_g - 2.0 * root))


def prior_samples(model: VolumetricVAE, datamodule: Any, split: str, seed: int) -> torch.Tensor:
    """One map per study of ``split``, decoded from a prior sample with that study's metadata.

    Parameters
    ----------
    model : VolumetricVAE
        A trained network (``AtlasModule.model``); unconditional ones ignore the metadata.
    datamodule : NeurosynthDataModule
        Set up.
    split : str
    seed : int

    Returns
    -------
    Tensor, shape (n_studies, n_mask_voxels)
        The widest-kernel channel inside the brain mask, as in
        :func:`sematlas.evaluation.reconstruction.collect_outputs`
        (:func:`~sematlas.evaluation.cas.sample_generator` on the split's metadata).
    """
    generate = sample_generator(model, datamodule, seed, f"sampling for {split}")
    return torch.from_numpy(generate(datamodule.meta[split]))


@torch.no_grad()
def _decode_codes(
    model: VolumetricVAE, codes: torch.Tensor, meta: torch.Tensor | None, batch_size: int, mask: torch.Tensor
) -> torch.Tensor:
    """Decoded maps of codes ``(n, z)`` (with metadata vectors ``(n, meta_dim)``), widest kernel inside ``mask``."""
    from sematlas.evaluation.reconstruction import native_widest

    chunks = []
    for start in range(0, len(codes), batch_size):
        rows = slice(start, start + batch_size)
        chunks.append(native_widest(model.decode(codes[rows], None if meta is None else meta[rows]), mask))
    return torch.cat(chunks)


def _codes(latents: pd.DataFrame, split: str) -> np.ndarray:
    """The posterior means ``(n, z)`` of ``split``'s studies in a latents table (``z_00`` ... columns)."""
    columns = [c for c in latents.columns if c.startswith("z_")]
    return latents.loc[latents["split"] == split, columns].to_numpy(dtype=np.float64)


@torch.no_grad()
def mixture_samples(
    model: VolumetricVAE, datamodule: Any, latents: pd.DataFrame, n: int, seed: int
) -> tuple[torch.Tensor, LatentMixture]:
    """``n`` maps decoded from a Gaussian mixture fitted to the training studies' codes (Ghosh et al. 2020).

    A conditional model's codes are fitted jointly with their studies' metadata vectors
    ``[z, m]``, so each sample decodes with metadata that goes with its code. The number
    of components is chosen on the validation split's codes (:class:`~sematlas.inference.density.LatentMixture`).

    Parameters
    ----------
    model : VolumetricVAE
    datamodule : NeurosynthDataModule
        Set up; the training and validation metadata, in the latents' study order.
    latents : DataFrame
        The model's latents table (:func:`sematlas.evaluation.reconstruction.latents_table`)
        with the ``train`` and ``val`` splits.
    n : int
    seed : int

    Returns
    -------
    maps : Tensor, shape (n, n_mask_voxels)
    mixture : LatentMixture
        The fitted density (its ``n_components`` and validation log-likelihoods).
    """
    model.eval()
    features = {split: _codes(latents, split) for split in ("train", "val")}
    z_dim = features["train"].shape[1]
    if model.is_conditional:
        features = {
            split: np.concatenate([codes, model.meta_vector(datamodule.meta[split]).numpy()], axis=1)
            for split, codes in features.items()
        }
    mixture = LatentMixture(seed=seed).fit(features["train"], features["val"])
    drawn = torch.from_numpy(mixture.sample(n)).float()
    meta = drawn[:, z_dim:] if model.is_conditional else None
    return _decode_codes(model, drawn[:, :z_dim], meta, datamodule.batch_size, datamodule.brain_mask()), mixture


@torch.no_grad()
def standard_normal_samples(model: VolumetricVAE, datamodule: Any, split: str, seed: int) -> torch.Tensor:
    """One map per study of ``split``: a code ``z ~ N(0, I)`` decoded with the study's metadata, whatever the prior.

    Returns
    -------
    Tensor, shape (n_studies, n_mask_voxels)
    """
    model.eval()
    meta = model.meta_vector(datamodule.meta[split]) if model.is_conditional else None
    n = len(datamodule.meta[split]["cond"])
    codes = torch.randn(n, model.config.z_dim, generator=torch.Generator().manual_seed(seed))
    return _decode_codes(model, codes, meta, datamodule.batch_size, datamodule.brain_mask())


@torch.no_grad()
def reconstructions(
    model: VolumetricVAE, datamodule: Any, split: str, maps: RenderedSplits | None = None
) -> torch.Tensor:
    """The model's reconstructions of ``split``'s maps (posterior means decoded), ``(n_studies, n_mask_voxels)``."""
    from sematlas.evaluation.reconstruction import native_widest

    model.eval()
    mask = datamodule.brain_mask()
    batches = RenderedSplits.shared(maps, datamodule).batches(datamodule, split, description=f"reconstructing {split}")
    return torch.cat([native_widest(model(batch["image"], batch["meta"])["x_hat"], mask) for batch in batches])


def generative_quality(
    real: np.ndarray,
    train: np.ndarray,
    samples: Mapping[str, np.ndarray],
    n_features: int = 64,
    k: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Precision, recall and Fréchet distance of every sample set against held-out real maps.

    Parameters
    ----------
    real : ndarray, shape (n_real, n_voxels)
        Held-out maps.
    train : ndarray, shape (n_train, n_voxels)
        Training maps: they fit the feature space (PCA with ``n_features`` components).
    samples : mapping of str to ndarray, shape (n, n_voxels)
        Generated maps per method (models and baselines).
    n_features, k, seed : int

    Returns
    -------
    DataFrame
        One row per method: ``method``, ``precision``, ``recall``, ``frechet_distance``, ``n``.
    """
    space = PCABaseline(n_features, seed).fit(train)
    real_features = space.transform(real)
    rows = []
    for method, maps in samples.items():
        features = space.transform(maps)
        rows.append(
            {
                "method": method,
                **precision_recall(real_features, features, k),
                "frechet_distance": frechet_distance(real_features, features),
                "n": len(maps),
            }
        )
    return pd.DataFrame(rows)


def evaluate_generation(
    models: Mapping[str, VolumetricVAE],
    datamodule: Any,
    train_maps: torch.Tensor,
    evaluation: Mapping[str, Any],
    z_dim: int,
    seed: int,
    split: str = "test",
    maps: RenderedSplits | None = None,
    latents: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Generative quality of every model next to probabilistic PCA and real training maps.

    Parameters
    ----------
    models : mapping of str to VolumetricVAE
        Trained networks by variant.
    datamodule : NeurosynthDataModule
        Set up; ``split`` holds the real maps.
    train_maps : Tensor, shape (n_train, C, n_mask_voxels)
        The training sample (:func:`sematlas.evaluation.reconstruction.training_sample`): it fits PPCA
        and the feature space.
    evaluation : mapping
        The ``evaluation`` parameters (``prd_features``, ``prd_k``).
    z_dim : int
        PPCA's number of components (the models' latent size).
    seed : int
    split : str
    maps : RenderedSplits, optional
        The stage's rendered splits; by default ``split`` is rendered for this call.
    latents : mapping of str to DataFrame, optional
        Variant -> its latents table with the training and validation splits: these
        variants add ``<variant>_mixture`` (:func:`mixture_samples`, as many maps as
        ``split`` has), ``<variant>_standard_normal`` (:func:`standard_normal_samples`) and
        ``<variant>_reconstruction`` (:func:`reconstructions`).

    Returns
    -------
    DataFrame
        As :func:`generative_quality`, with ``ppca`` (the linear baseline) and
        ``training_maps`` (real maps of the training split: the ceiling) as methods, and a
        ``mixture_components`` column (the chosen size of the mixture rows, missing on the others).
    """
    real = RenderedSplits.shared(maps, datamodule).images(split)[:, -1].numpy()
    train = train_maps[:, -1].numpy()
    rng = np.random.default_rng(seed)
    samples = {name: prior_samples(model, datamodule, split, seed).numpy() for name, model in models.items()}
    components: dict[str, int] = {}
    for name, table in (latents or {}).items():
        model = models[name]
        mixture_maps, mixture = mixture_samples(model, datamodule, table, len(real), seed)
        samples[f"{name}_mixture"] = mixture_maps.numpy()
        components[f"{name}_mixture"] = mixture.n_components
        samples[f"{name}_standard_normal"] = standard_normal_samples(model, datamodule, split, seed).numpy()
        samples[f"{name}_reconstruction"] = reconstructions(model, datamodule, split, maps).numpy()
    samples["ppca"] = ProbabilisticPCA(z_dim, seed).fit(train).sample(len(real), seed)
    samples["training_maps"] = train[rng.choice(len(train), size=min(len(real), len(train)), replace=False)]
    table = generative_quality(real, train, samples, int(evaluation["prd_features"]), int(evaluation["prd_k"]), seed)
    # A nullable count: the rows that are not a mixture have none (missing, not a sentinel).
    table["mixture_components"] = table["method"].map(components).astype("Int64")
    return table
