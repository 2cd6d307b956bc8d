"""A density of the training studies' codes, for sampling that covers the data and for typicality.

A VAE's prior and its aggregate posterior ``q(z) = E_x q(z | x)`` disagree: decoded
prior samples land where no training code is, and come out near the mean map.
Ex-post density estimation (Ghosh et al., "From variational to deterministic
autoencoders", ICLR 2020) fits a Gaussian mixture to the training codes after
training and samples from it instead. :class:`LatentMixture` does that, choosing the
number of components by the held-out log-likelihood of the validation split's codes,
and scores how typical a code is (its log density), which out-of-distribution
detection can read.

A conditional decoder also needs metadata to decode a code; its codes are then fitted
jointly with their metadata vectors, ``[z, m]`` (one row per study), so a sample is a
code with metadata that goes with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: Component counts tried by :meth:`LatentMixture.fit` (those under the training size).
DEFAULT_COMPONENTS = (1, 2, 4, 8, 16, 32)


@dataclass
class LatentMixture:
    """A full-covariance Gaussian mixture over codes ``(n, d)``, its size chosen on held-out codes.

    Parameters
    ----------
    components : sequence of int
        Candidate numbers of components.
    seed : int
        Seeds the k-means initialisation and the samples.
    reg_covar : float
        Added to the covariances' diagonals (sklearn's ``reg_covar``): posterior means of
        inactive units have almost no variance.

    Attributes
    ----------
    mixture_ : sklearn.mixture.GaussianMixture
        The chosen mixture (after :meth:`fit`).
    validation_log_likelihood_ : dict of int to float
        Mean held-out log-likelihood per candidate size.
    """

    components: Sequence[int] = DEFAULT_COMPONENTS
    seed: int = 0
    reg_covar: float = 1e-4

    def fit(self, train: np.ndarray, validation: np.ndarray) -> LatentMixture:
        """Fit one mixture per candidate size on ``train`` and keep the one that scores ``validation`` best.

        Parameters
        ----------
        train, validation : ndarray, shape (n, d)

        Returns
        -------
        LatentMixture
            ``self``.
        """
        from sklearn.mixture import GaussianMixture

        candidates = [k for k in self.components if k < len(train)]
        if not candidates:
            raise ValueError(f"a mixture needs more training codes than components, got {len(train)}")
        fitted, self.validation_log_likelihood_ = {}, {}
        for k in candidates:
            mixture = GaussianMixture(
                n_components=k, covariance_type="full", reg_covar=self.reg_covar, random_state=self.seed
            ).fit(train)
            fitted[k] = mixture
            self.validation_log_likelihood_[k] = float(mixture.score(validation))
        best = max(self.validation_log_likelihood_, key=self.validation_log_likelihood_.__getitem__)
        logger.info(
            "latent mixture: %d components (validation log-likelihood %.2f)",
            best,
            self.validation_log_likelihood_[best],
        )
        self.mixture_ = fitted[best]
        return self

    @property
    def n_components(self) -> int:
        """Components of the chosen mixture."""
        return int(self.mixture_.n_components)

    def sample(self, n: int) -> np.ndarray:
        """``n`` codes ``(n, d)`` drawn from the mixture, seeded by ``seed`` (the same ``n`` gives the same codes)."""
        self.mixture_.random_state = self.seed
        codes, _ = self.mixture_.sample(n)
        # sklearn returns the draws grouped by component: shuffle so any prefix is a mixture sample.
        return codes[np.random.default_rng(self.seed).permutation(n)]

    def log_density(self, codes: np.ndarray) -> np.ndarray:
        """Log density of each code ``(n, d)`` under the mixture, ``(n,)``: how typical it is."""
        return self.mixture_.score_samples(codes)


__all__ = ["DEFAULT_COMPONENTS", "LatentMixture"]
