"""The linear baselines every model is compared with, at the model's latent size.

- :class:`PCABaseline`: reconstruction through the first principal components of
  the training maps (also the fixed feature space of generative quality and probes);
- :class:`RidgeBaseline`: conditional generation by ridge regression from the same
  metadata vector the models read (:func:`metadata_matrix`) to the map;
- :class:`ProbabilisticPCA`: the linear generative model (Tipping & Bishop, 1999);
- :func:`training_sample_rows`: the training maps they are fitted on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


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
