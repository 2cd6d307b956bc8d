"""Conditional beta-VAE: DenseNet encoder with dilation, FiLM, imputation, year de-biasing.

Data flow of :meth:`ConditionalBetaVAE.forward`::

    image -> stem -> strided convs to 16^3 -> dense block 1 ----------------.
                                                  |                         |
                       mean over space ++ cond -> imputation head           |
                                                  |  (mu, logvar) per sparse field
      m = cond ++ (observed sparse value | imputed sample or mean)          |
                                                  |                         v
                          FiLM generator(m) -> FiLM on dense block 1, transition,
                                                  dense block 2 (dilated), FiLM,
                                                  transition -> (mu, logvar) -> z
      cond ++ observed sparse (0 where missing) -> prior network -> (prior_mu, prior_logvar): p(z | m)
      eps = (z - prior_mu) / prior_sigma -> GRL -> year head -> year_logits
      z, FiLM(m) -> decoder -> x_hat

The imputation head reads the output of the first dense block, before any
FiLM: the metadata vector ``m`` that drives the FiLM layers contains the
imputed fields, so it has to exist before the first modulated feature map
(reading modulated features would make ``m`` depend on itself). The decoder is
conditioned on the same filled ``m``, so generation from metadata alone needs
only ``cond`` and, where known, the sparse fields.

The prior network makes the metadata worth reading: with the KL to ``N(0, I)``
the encoder, which sees ``m``, stores the task in ``z`` and the decoder has no
reason to use its FiLM input; with the KL to ``p(z | m)`` what ``m`` predicts
costs nothing in ``z``, so generation from ``m`` alone (sampling ``p(z | m)``)
and counterfactuals (keeping ``eps``, changing ``m``) carry the condition. The
year adversary reads ``eps``, what the code holds beyond the metadata, so the
year acts through ``m`` only and can be changed on purpose.

The objective is :meth:`ConditionalBetaVAE.loss`. Choices of
:class:`~sematlas.models.config.CBVAEConfig` exist for the ablation protocol
(``params/ablations/``), each removing one component: ``conditioning="concat"``
replaces FiLM by concatenation (``m`` appended to the encoder's flattened
features and to ``z``), ``decoder="sbd"`` swaps the transposed-convolution
decoder for a FiLM-conditioned Spatial Broadcast Decoder,
``imputation=False`` drops the imputation head (a missing sparse field takes its
training mean), ``prior="standard"`` the prior network and ``likelihood="fixed"``
the calibrated decoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sematlas.models.base import VolumetricVAE
from sematlas.models.baseline import ResNetEncoder
from sematlas.models.blocks import ConvDecoder, FiLMGenerator, reparameterise
from sematlas.models.conditional import ConcatConditioned, conditional_decoder
from sematlas.models.config import CBVAEConfig, ModelConfig
from sematlas.models.densenet import DenseEncoder
from sematlas.models.losses import (
    check_finite,
    gaussian_kl_between_per_dim,
    gaussian_kl_per_dim,
    gaussian_nll_observed,
    gaussian_nll_sum,
    masked_mse_sum,
    no_autocast,
    optimal_sigma_nll,
)

if TYPE_CHECKING:
    from sematlas.core.params import TrainingParams


class _GradientReversalFunction(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-lambda`` (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_  # type: ignore[attr-defined]  # FunctionCtx declares no attributes; saved for backward
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad_output, None  # type: ignore[attr-defined]  # set in forward


def grad_reverse(x: Tensor, lambda_: float) -> Tensor:
    """Gradient reversal: returns ``x``; in backward, ``dL/dx = -lambda_ * dL/dy``.

    Parameters
    ----------
    x : Tensor, any shape
    lambda_ : float
        Reversal factor (0 blocks the adversary's gradient).

    Returns
    -------
    Tensor, same shape as ``x``
    """
    return _GradientReversalFunction.apply(x, lambda_)


class GradientReversal(nn.Module):
    """Gradient Reversal Layer with a settable factor ``lambda_``.

    The adversarial head below it learns to predict the publication year
    from ``z`` while the encoder receives the reversed gradient, i.e. learns to
    make ``z`` uninformative about the year (domain-adversarial training,
    Ganin et al. 2016). ``lambda_`` is a plain attribute so a callback can ramp it.

    Parameters
    ----------
    lambda_ : float
        Initial reversal factor.
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: Tensor) -> Tensor:
        """Identity on ``x`` (any shape); reversed, scaled gradient."""
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


#: Bounds of the imputation head: its mean within +/- 3 training sd of log sample size (3 to
#: 150 participants around a typical 20), its standard deviation at least 0.1 sd. The imputed
#: value reaches the decoder, so an unbounded head is a channel around the KL bottleneck:
#: under the calibrated likelihood one drove its KL to 230 nats per study within two epochs
#: (a log-variance under -400, then, with that floored, a mean near 20 sd).
IMPUTATION_RANGE = 3.0
IMPUTATION_LOGVAR_MIN = 2.0 * math.log(0.1)


def _floored_logvar(raw: Tensor, floor: float) -> Tensor:
    """``floor + softplus(raw - floor)``: ``raw`` above the floor, smoothly bounded below it (gradient never 0)."""
    return floor + F.softplus(raw - floor)


class PriorNetwork(nn.Module):
    """``m -> (mu, logvar)`` of ``p(z | m)``: a linear map plus a two-layer MLP, both starting at 0.

    Starting at ``N(0, I)`` for every study, training begins from the standard VAE's
    objective and moves the prior only as far as the metadata predicts the codes. The
    linear path gives the regression a meta-analyst would fit (ridge-like) directly; the
    MLP adds what is not linear.

    Parameters
    ----------
    meta_dim, z_dim, hidden_dim : int
    """

    def __init__(self, meta_dim: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(meta_dim, 2 * z_dim)
        last = nn.Linear(hidden_dim, 2 * z_dim)
        self.mlp = nn.Sequential(nn.Linear(meta_dim, hidden_dim), nn.SiLU(), last)
        for layer in (self.linear, last):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, m: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)``, each (B, z_dim), of metadata vectors (B, meta_dim)."""
        mu, logvar = (self.linear(m) + self.mlp(m)).chunk(2, 1)
        return mu, logvar


class ConditionalBetaVAE(VolumetricVAE):
    """Conditional beta-VAE with FiLM, amortised imputation and adversarial year de-biasing.

    Parameters
    ----------
    config : CBVAEConfig
        Architecture.
    """

    config: CBVAEConfig
    is_conditional: ClassVar[bool] = True

    def __init__(self, config: CBVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = DenseEncoder(config)
        self.encoder_film = (
            FiLMGenerator(config.meta_dim, self.encoder.block_channels, config.hidden_dim)
            if config.conditioning == "film"
            else None
        )
        self.imputer = (
            nn.Sequential(
                nn.Linear(self.encoder.block_channels[0] + config.cond_dim, config.hidden_dim),
                nn.SiLU(),
                nn.Linear(config.hidden_dim, 2 * config.n_sparse),
            )
            if config.imputation
            else None
        )
        self.prior_net = (
            PriorNetwork(config.meta_dim, config.z_dim, config.hidden_dim) if config.prior == "conditional" else None
        )
        self.grl = GradientReversal(config.grl_lambda)
        self.year_head = nn.Sequential(
            nn.Linear(config.z_dim, config.hidden_dim), nn.SiLU(), nn.Linear(config.hidden_dim, config.n_year_bins)
        )
        self.decoder = conditional_decoder(
            config, config.meta_dim, concat=config.conditioning == "concat", aleatoric=config.aleatoric
        )
        # Conv weights in the layout of the activations (torch's stubs lack Module.to(memory_format=)).
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def _encode(self, image: Tensor, meta: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """Posterior, imputation and filled metadata vector (see :meth:`forward`)."""
        if meta is None:
            raise TypeError(f"{type(self).__name__} is conditional: pass meta (cond, sparse, sparse_mask)")
        cond = meta["cond"].to(image.dtype)
        features = self.encoder.features(image)
        out: dict[str, Tensor] = {}
        if self.imputer is None:
            # Standardised sparse fields: 0 is the training mean, the fill when nothing imputes.
            fill = torch.zeros_like(meta["sparse"], dtype=image.dtype)
        else:
            # Imputation reads pooled trunk features and the complete metadata; a plain
            # mean over space (not AdaptiveAvgPool3d) keeps the backward deterministic-safe.
            pooled = torch.cat([features.mean(dim=(2, 3, 4)), cond], 1)
            raw_mu, raw_logvar = self.imputer(pooled).chunk(2, 1)
            out["imputed_mu"] = IMPUTATION_RANGE * torch.tanh(raw_mu / IMPUTATION_RANGE)
            out["imputed_logvar"] = _floored_logvar(raw_logvar, IMPUTATION_LOGVAR_MIN)
            # A reparameterised sample during training lets the reconstruction train the
            # imputation head and exposes the decoder to imputation uncertainty.
            fill = reparameterise(out["imputed_mu"], out["imputed_logvar"], sample=self.training)
        observed = meta["sparse_mask"].bool()
        m = torch.cat([cond, torch.where(observed, meta["sparse"].to(image.dtype), fill)], dim=1)
        film_params = self.encoder_film(m) if self.encoder_film is not None else [None] * len(self.encoder.blocks)
        out["mu"], out["logvar"] = self.encoder.posterior(features, film_params, m)
        out["m"] = m
        return out

    def encode(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Posterior ``(mu, logvar)``, each (B, z_dim), of images (B, C, d, h, w) given their metadata."""
        out = self._encode(image, meta)
        return out["mu"], out["logvar"]

    def meta_vector(self, meta: Mapping[str, Tensor]) -> Tensor:
        """Metadata vector without an image: ``cond ++ sparse``, 0 where a sparse field is missing.

        Sparse fields are standardised, so 0 is the training mean: the natural
        fill when no image is there to impute from.

        Parameters
        ----------
        meta : mapping
            ``cond`` (B, cond_dim), ``sparse`` (B, n_sparse), ``sparse_mask`` (B, n_sparse).

        Returns
        -------
        Tensor, shape (B, cond_dim + n_sparse)
        """
        sparse = torch.where(meta["sparse_mask"].bool(), meta["sparse"].float(), 0.0)
        return torch.cat([meta["cond"].float(), sparse], dim=1)

    def prior(self, meta: Mapping[str, Tensor] | Tensor | None, rows: int = 1) -> tuple[Tensor, Tensor]:
        """``p(z | m)``: the prior network's ``(mu, logvar)``, each (B, z_dim); ``N(0, I)`` with ``prior="standard"``.

        Parameters
        ----------
        meta : Tensor of shape (B, meta_dim), or mapping
            The metadata vector ``m``, or a meta dict (turned into ``m`` by :meth:`meta_vector`:
            a missing sparse field at its training mean, never an imputed value).
        rows : int
            Unused: a conditional model always has ``meta``.
        """
        if meta is None:
            raise TypeError(f"{type(self).__name__} is conditional: pass meta (a mapping or the vector m)")
        if self.prior_net is None:
            return super().prior(meta, rows)
        device = next(self.parameters()).device
        m = meta if isinstance(meta, Tensor) else self.meta_vector(meta)
        return self.prior_net(m.to(device=device, dtype=torch.float32))

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The prior network at ``config.prior_lr_scale`` times the learning rate, everything else at 1."""
        if self.prior_net is None:
            return super().parameter_groups()
        prior = {id(p) for p in self.prior_net.parameters()}
        rest = [p for p in self.parameters() if id(p) not in prior]
        return [
            {"params": rest, "lr_scale": 1.0},
            {"params": list(self.prior_net.parameters()), "lr_scale": self.config.prior_lr_scale},
        ]

    def decode(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None = None) -> Tensor:
        """Maps from latents and metadata.

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
        meta : Tensor of shape (B, cond_dim + n_sparse), or mapping
            The metadata vector ``m`` (e.g. ``forward(...)["m"]``), or a meta
            dict, turned into ``m`` by :meth:`meta_vector`.

        Returns
        -------
        Tensor, shape (B, C, d, h, w), values in (0, 1)
        """
        if meta is None:
            raise TypeError(f"{type(self).__name__} is conditional: pass meta (a mapping or the vector m)")
        m = meta if isinstance(meta, Tensor) else self.meta_vector(meta).to(z.device)
        return self.decoder(z, m.to(z.dtype))

    @property
    def is_aleatoric(self) -> bool:
        """Whether the decoder predicts a per-voxel variance (``config.aleatoric``)."""
        return self.config.aleatoric

    def decode_distribution(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and per-voxel log-variances of an aleatoric model (``config.aleatoric``).

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
        meta : Tensor of shape (B, cond_dim + n_sparse), or mapping
            As in :meth:`decode`.

        Returns
        -------
        mean, logvar : Tensor, shape (B, C, d, h, w)
            ``mean`` equals :meth:`decode`; ``logvar`` is bounded (see
            :func:`~sematlas.models.blocks.bounded_logvar`).
        """
        m = meta if isinstance(meta, Tensor) else self.meta_vector(meta).to(z.device)
        return self._predict(z, m.to(z.dtype))

    def _predict(self, z: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and log-variances from the decoder's aleatoric head."""
        if not isinstance(self.decoder, ConvDecoder | ConcatConditioned):
            raise ValueError("this model's decoder has no aleatoric head (build it with aleatoric=True)")
        return self.decoder.predict(z, m)

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode, impute, sample (``z = mu`` in eval mode), predict the year adversarially, decode.

        Parameters
        ----------
        image : Tensor, shape (B, C, d, h, w)
        meta : mapping
            ``cond`` (B, cond_dim), ``sparse`` (B, n_sparse), ``sparse_mask``
            (B, n_sparse) bool.

        Returns
        -------
        dict
            ``x_hat`` (B, C, d, h, w); ``mu``, ``logvar``, ``z`` (B, z_dim);
            ``imputed_mu``, ``imputed_logvar`` (B, n_sparse), without them when
            ``config.imputation`` is off; ``m`` (B,
            cond_dim + n_sparse): the metadata vector with missing sparse fields
            filled by an imputed sample (training) or mean (eval);
            ``prior_mu``, ``prior_logvar`` (B, z_dim): ``p(z | m)`` (:meth:`prior`);
            ``year_logits`` (B, n_year_bins), computed through the GRL from the residual
            ``(z - prior_mu) / prior_sigma``; ``x_logvar`` (B, C, d, h, w) when ``config.aleatoric``.
        """
        out = self._encode(image, meta)
        z = reparameterise(out["mu"], out["logvar"], sample=self.training)
        out["z"] = z
        # The prior reads what is known without the image (a missing field at its mean), as in
        # generation: an imputed value, inferred from the map, would leak the map into p(z | m).
        out["prior_mu"], out["prior_logvar"] = self.prior(meta)
        # The adversary reads the residual: year information that the metadata explains is allowed in z.
        eps = (z - out["prior_mu"]) * torch.exp(-0.5 * out["prior_logvar"])
        out["year_logits"] = self.year_head(self.grl(eps))
        if self.config.aleatoric:
            out["x_hat"], out["x_logvar"] = self._predict(z, out["m"])
        else:
            out["x_hat"] = self.decoder(z, out["m"])
        return out

    # ---- objective -----------------------------------------------------------------------------

    def loss_weights(self, training: TrainingParams) -> dict[str, float]:
        """``beta`` and the weights of the imputation NLL and the adversarial year cross-entropy."""
        return {
            "beta": training.beta,
            "imputation_weight": training.imputation_weight,
            "year_weight": training.year_weight,
        }

    def loss(
        self,
        out: Mapping[str, Tensor],
        batch: Mapping[str, Any],
        weights: Mapping[str, float],
        *,
        mask: Tensor | None = None,
        dataset_size: int | None = None,
    ) -> dict[str, Tensor]:
        """Conditional beta-VAE objective, per study.

        ``loss = recon + beta * (KL + KL_imputed) + w_imp * NLL_observed(sparse) + w_year * CE(year_logits, year_bin)``

        - ``recon``: the decoder's negative log-likelihood. ``likelihood="learned"``: a Gaussian
          with one noise scale per channel at its batch optimum
          (:func:`~sematlas.models.losses.optimal_sigma_nll`, Rybkin et al. 2021);
          ``"fixed"``: :func:`~sematlas.models.losses.masked_mse_sum` (variance 1/2); an
          aleatoric decoder (``out`` holds ``x_logvar``): the per-voxel Gaussian NLL
          :func:`~sematlas.models.losses.gaussian_nll_sum`.
        - ``KL = KL(q(z | x, m) || p(z | m))``, the conditional prior's (Sohn et al. 2015;
          ``N(0, I)`` with ``prior="standard"``).
        - ``KL_imputed = sum over missing sparse entries of KL(N(mu_imp, s_imp^2) || N(0, 1))``:
          a missing field is a latent variable with the standardised population
          prior N(0, 1), as in VAEs for incomplete data (Nazabal et al. 2020). The
          imputed sample reaches the decoder (through FiLM) and is trained by the
          reconstruction; without this term it would be a second, unregularised
          channel from encoder to decoder around the KL bottleneck.
        - ``NLL_observed``: Gaussian NLL of the observed entries
          (:func:`~sematlas.models.losses.gaussian_nll_observed`).
        - The year head reads ``eps = (z - mu(m)) / sigma(m)`` behind a gradient reversal
          layer, so minimising ``CE`` trains the head to predict the year while the encoder
          is pushed to remove from ``z`` the year information the metadata does not explain
          (Ganin et al. 2016). The encoder can also hide the year by inflating the posterior
          variance; ``beta > 0`` is what prices that, so keep ``beta`` positive when the GRL is on.

        Parameters
        ----------
        out : mapping
            :meth:`forward`'s output: ``x_hat``, ``mu``, ``logvar``, ``imputed_mu``,
            ``imputed_logvar`` (absent without the imputation head: both imputation
            terms are then 0), ``year_logits``, and ``x_logvar`` for an aleatoric decoder.
        batch : mapping
            ``image`` (B, C, d, h, w) and ``meta`` with ``sparse``, ``sparse_mask``
            (B, n_sparse) and ``year_bin`` (B,).
        weights : mapping
            ``beta``, ``imputation_weight``, ``year_weight`` (:meth:`loss_weights`).
        mask, dataset_size
            As in :meth:`VolumetricVAE.loss` (``dataset_size`` is not used).

        Returns
        -------
        dict of scalar float32 Tensors
            ``loss``, ``recon``, ``kl``, ``imputation_kl``, ``imputation_nll``, ``year_ce``,
            ``recon_se`` (detached squared error, comparable across likelihoods and with the
            other variants' ``recon``); the learned likelihood adds ``noise_sigma_<c>``, each
            channel's noise scale.

        Raises
        ------
        ValueError
            If a term is not finite.
        """
        x, meta = batch["image"], batch["meta"]
        with no_autocast(x.device):
            # recon = (1 / B) sum_{i, c, v in mask} NLL (aleatoric: learned variance, Kendall & Gal 2017)
            #         or squared error (fixed variance 1/2)
            noise: dict[str, Tensor] = {}
            if "x_logvar" in out:
                recon = gaussian_nll_sum(x, out["x_hat"], out["x_logvar"], mask)
            elif self.config.likelihood == "learned":
                recon, sigma = optimal_sigma_nll(out["x_hat"], x, mask)
                noise = {f"noise_sigma_{c}": value for c, value in enumerate(sigma)}
            else:
                recon = masked_mse_sum(out["x_hat"], x, mask)
            # KL = (1 / B) sum_i KL(N(mu_i, s_i^2) || N(mu(m_i), sigma(m_i)^2))   (Sohn et al. 2015)
            kl = gaussian_kl_between_per_dim(out["mu"], out["logvar"], out["prior_mu"], out["prior_logvar"])
            kl = kl.sum(1).mean()
            if "imputed_mu" in out:
                # KL_imputed = (1 / B) sum_{i, f missing} KL(N(mu_if, s_if^2) || N(0, 1))   (Nazabal et al. 2020)
                missing = ~meta["sparse_mask"].bool()
                kl_imputed_entries = gaussian_kl_per_dim(out["imputed_mu"], out["imputed_logvar"])
                imputation_kl = torch.where(missing, kl_imputed_entries, 0.0).sum() / max(x.shape[0], 1)
                nll = gaussian_nll_observed(
                    meta["sparse"], out["imputed_mu"], out["imputed_logvar"], meta["sparse_mask"]
                )
            else:
                # A model without the imputation head (CBVAEConfig.imputation off) has neither term.
                imputation_kl = nll = kl.new_zeros(())
            # CE of the year head, which sits behind the gradient reversal layer (Ganin et al. 2016)
            year_ce = F.cross_entropy(out["year_logits"].float(), meta["year_bin"].long())
            loss = (
                recon
                + weights["beta"] * (kl + imputation_kl)
                + weights["imputation_weight"] * nll
                + weights["year_weight"] * year_ce
            )
            terms = {
                "loss": loss,
                "recon": recon,
                "kl": kl,
                "imputation_kl": imputation_kl,
                "imputation_nll": nll,
                "year_ce": year_ce,
                "recon_se": masked_mse_sum(out["x_hat"], x, mask).detach(),
                **noise,
            }
        check_finite(terms)
        return terms

    def logged_scalars(self) -> dict[str, float]:
        """The gradient-reversal factor ``grl_lambda`` (ramped by a callback)."""
        return {"grl_lambda": self.grl.lambda_}


@runtime_checkable
class _HasConvPath(Protocol):
    """An encoder whose convolutional path can be listed (:class:`ResNetEncoder`, :class:`DenseEncoder`)."""

    def conv_path(self) -> list[nn.Conv3d]: ...


def receptive_field_mm(model_or_config: nn.Module | ModelConfig, voxel_size: float) -> float:
    """Theoretical receptive field of an encoder's convolutional path, in millimetres.

    Standard recurrence over the convolutions in order (Araujo et al. 2019):
    ``r += (k - 1) * d * jump; jump *= s`` from ``r = jump = 1``. The linear
    head after the convolutions sees the whole grid; this is the field of a
    single feature at the last convolutional layer.

    Parameters
    ----------
    model_or_config : nn.Module or ModelConfig
        A model (or encoder) with ``conv_path()``, or a config whose encoder is
        built (the DenseNet of a :class:`CBVAEConfig`, else the ResNet encoder).
    voxel_size : float
        Voxel size in millimetres (4 or 2).

    Returns
    -------
    float
        Receptive field side in millimetres.
    """
    if isinstance(model_or_config, ModelConfig):
        encoder: _HasConvPath = (
            DenseEncoder(model_or_config)
            if isinstance(model_or_config, CBVAEConfig)
            else ResNetEncoder(model_or_config)
        )
    else:
        candidate = getattr(model_or_config, "encoder", model_or_config)
        if not isinstance(candidate, _HasConvPath):
            raise TypeError(f"{type(model_or_config).__name__} has no conv_path() (nor an encoder with one)")
        encoder = candidate
    field, jump = 1, 1
    for conv in encoder.conv_path():
        field += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return float(field * voxel_size)


__all__ = [
    "ConditionalBetaVAE",
    "GradientReversal",
    "PriorNetwork",
    "grad_reverse",
    "receptive_field_mm",
]
