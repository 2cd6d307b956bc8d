"""The linear baselines every model is compared with, at the model's latent size.

- :class:`PCABaseline`: reconstruction through the first principal components of
  the training maps (also the fixed feature space of generative quality and probes);
- :class:`RidgeBaseline`: conditional generation by ridge regression from the same
  metadata vector the models read (:func:`metadata_matrix`) to the map;
- :class:`MLPBaseline`: the same generation by a small neural network, from that vector
  to the maps' principal-component scores (a non-linear function of the metadata, as the models are);
- :class:`ProbabilisticPCA`: the linear generative model (Tipping & Bishop, 1999);
- :func:`mkda_map`: a coordinate-based meta-analysis of some studies (NiMARE's MKDA density),
  the meta-analyst's baseline of a category's map;
- :func:`training_sample_rows`: the training maps they are fitted on.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from sematlas.core.grid import Grid

#: The map of NiMARE's MKDA result a category is compared with (:func:`mkda_map`): the density
#: statistic (the studies with a peak within 10 mm of a voxel), like the held-out category map
#: a sum over studies. The z map is a monotone, non-linear transform of it through the null;
#: on quick it correlated less with the held-out category maps (median r 0.84 against 0.89).
MKDA_MAP = "stat"


def training_sample_rows(n_train: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted rows of the seeded sample of at most ``max_rows`` training maps that fits the linear baselines.

    One rule for every stage (PCA, ridge, PPCA, the probe's PCA features), so they all see the same maps
    and the memory of a CPU bounds them.
    """
    return np.sort(np.random.default_rng(seed).permutation(n_train)[:max_rows])


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


class MLPBaseline:
    """Conditional generation by a multilayer perceptron from the metadata vector to the map's PCA scores.

    The map is predicted in the space of the first ``n_components`` principal components
    of the training maps and mapped back through them: a 256-dimensional code holds most of
    what any method predicts from metadata (PCA-256 reconstructs held-out maps at r = 0.76,
    against about 0.2 for the best generation from metadata), and 256 outputs instead of
    ~28,500 voxels keep the network small and its fit to seconds. Inputs are standardised
    first: the one-hot and standardised fields are on one scale, topic weights are not, and
    an MLP trained by Adam is sensitive to the scale of its inputs. Training stops when the
    score on a held-out tenth of the sample stops improving (``early_stopping``).

    Parameters
    ----------
    n_components : int
        PCA components of the targets (at most ``n_train - 1``).
    hidden_layer_sizes : tuple of int
    seed : int
        Seeds the randomized SVD, the network's initialisation and the validation split.
    """

    def __init__(
        self, n_components: int = 256, hidden_layer_sizes: tuple[int, ...] = (256, 256), seed: int = 0
    ) -> None:
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.seed = seed

    def fit(self, metadata: np.ndarray, maps: np.ndarray) -> MLPBaseline:
        """Fit PCA on ``maps`` ``(n_train, n_voxels)`` and the network from ``metadata`` ``(n_train, n_features)``."""
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.pca_ = PCABaseline(self.n_components, self.seed).fit(maps)
        scores = self.pca_.transform(maps)
        network = MLPRegressor(hidden_layer_sizes=self.hidden_layer_sizes, early_stopping=True, random_state=self.seed)
        self.network_ = make_pipeline(StandardScaler(), network).fit(metadata, scores)
        return self

    def predict(self, metadata: np.ndarray) -> np.ndarray:
        """Maps ``(n, n_voxels)`` predicted from ``metadata`` ``(n, n_features)``."""
        return self.pca_.pca_.inverse_transform(self.network_.predict(metadata))


def metadata_matrix(meta: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The metadata vector of the data contract as a plain matrix ``(n, cond_dim + n_sparse)``.

    Missing sparse values stay 0 (the training mean after standardisation), which
    is what a linear model without an imputation head can do.
    """
    return torch.cat([meta["cond"], meta["sparse"] * meta["sparse_mask"]], dim=1).numpy()


class ProbabilisticPCA:
    """Probabilistic PCA (Tipping & Bishop, 1999): the linear generative baseline.

    ``x = mu + W z + sigma * eps`` with ``z ~ N(0, I_q)``, ``eps ~ N(0, I)``,
    ``W = U_q (Lambda_q - sigma^2 I)^(1/2)`` and ``sigma^2`` the mean discarded variance.

    Parameters
    ----------
    n_components : int
        ``q``, equal to the model's latent size.
    seed : int
        For the randomized SVD.
    """

    def __init__(self, n_components: int, seed: int = 0) -> None:
        self.n_components = n_components
        self.seed = seed

    def fit(self, maps: np.ndarray) -> ProbabilisticPCA:
        """Fit on training maps ``(n_train, n_voxels)``."""
        from sklearn.decomposition import PCA

        q = min(self.n_components, maps.shape[0] - 1, maps.shape[1])
        pca = PCA(n_components=q, svd_solver="randomized", random_state=self.seed).fit(maps)
        self.mean_ = pca.mean_
        self.noise_variance_ = float(pca.noise_variance_)
        scale = np.sqrt(np.maximum(pca.explained_variance_ - self.noise_variance_, 0.0))
        self.loadings_ = pca.components_.T * scale[None, :]  # W, (n_voxels, q)
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` maps ``(n, n_voxels)`` drawn from the fitted model."""
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.loadings_.shape[1]))
        noise = rng.standard_normal((n, self.loadings_.shape[0])) * np.sqrt(self.noise_variance_)
        return self.mean_[None, :] + z @ self.loadings_.T + noise


def mkda_map(peaks: pd.DataFrame, study_ids: Sequence[str], grid: Grid, map_name: str = MKDA_MAP) -> np.ndarray:
    """NiMARE's MKDA density of some studies, on ``grid`` inside its brain mask.

    Multilevel kernel density analysis (Wager et al. 2007; Kober et al. 2008), as NiMARE's
    ``MKDADensity`` runs it by default: each study's peaks become 10 mm spheres (one
    indicator map per study, ``MKDAKernel``), the statistic counts the studies whose map
    covers a voxel, and its null is the approximate one. Each study is one analysis (its
    peaks pooled, as Neurosynth and the renderer treat a study). The studyset's masker is
    ``grid``'s brain mask, so the kernel and the statistic are computed at the grid's voxel
    size (4 mm: about 8 times fewer voxels than NiMARE's 2 mm template); the map is then
    resampled onto the grid, a no-op unless NiMARE returns another one.

    Parameters
    ----------
    peaks : DataFrame
        Curated peaks: ``id``, ``x``, ``y``, ``z`` (MNI mm), e.g. ``peaks.parquet``.
    study_ids : sequence of str
        The studies meta-analysed; each has peaks in ``peaks``.
    grid : Grid
    map_name : str
        The map of NiMARE's result: ``stat`` (the density) or ``z``.

    Returns
    -------
    ndarray, shape (n_mask_voxels,)
        In the order of ``grid.mask()``, as the rendered maps.
    """
    from nilearn.image import resample_img
    from nimare.meta.cbma.mkda import MKDADensity

    # nilearn runs the garbage collector on every image it reads (``safe_get_data``), each a
    # walk over every object of the process (a quarter of a second in a stage that has imported
    # torch, sklearn and NiMARE): the objects alive before the fit are frozen out of those walks.
    gc.freeze()
    try:
        result = MKDADensity().fit(_studyset(peaks, study_ids, grid))
        image = resample_img(
            result.get_map(map_name),
            target_affine=grid.affine,
            target_shape=grid.shape,
            interpolation="continuous",
            force_resample=True,
            copy_header=True,
        )
    finally:
        gc.unfreeze()
    return np.asarray(image.get_fdata(), dtype=np.float64)[grid.mask()]


def _studyset(peaks: pd.DataFrame, study_ids: Sequence[str], grid: Grid) -> Any:
    """A NiMARE ``Studyset`` of some studies' peaks, one analysis per study, masked by ``grid``'s brain mask.

    The NIMADS document, a few Python objects per peak, is freed once the Studyset holds
    its columns, so the collections during the fit do not walk it.
    """
    from nimare.studyset import Studyset

    chosen = peaks[peaks["id"].astype(str).isin({str(i) for i in study_ids})].sort_values("id", kind="stable")
    ids = chosen["id"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    points = np.split(chosen[["x", "y", "z"]].to_numpy(dtype=float), starts[1:])
    document = {
        "id": "sematlas-mkda",
        "name": "sematlas category",
        "studies": [
            {
                "id": ids[start],
                "analyses": [{"id": "1", "points": [{"coordinates": xyz, "space": "MNI"} for xyz in rows.tolist()]}],
            }
            for start, rows in zip(starts, points, strict=True)
        ],
    }
    return Studyset(document, target="mni152_2mm", mask=grid.to_nifti(grid.mask().astype(np.float32)))
