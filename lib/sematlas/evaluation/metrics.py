"""The metric definitions everyone uses to compare brain maps and labels.

- Reconstruction: voxel-wise Pearson r (:func:`masked_pearson`) and 3-D SSIM
  (:func:`ssim3d`) between a map and its prediction inside the brain mask, plus MSE
  and PSNR (:func:`map_metrics`); per study, then summarised by median and mean
  (:func:`summarise`).
- Classification: balanced accuracy (:func:`balanced_accuracy`), the mean recall over
  classes, so chance is ``1 / n_classes`` whatever the class sizes. Defined in
  :mod:`sematlas.core.stats`, because the training logs count it the same way.

Maps are compared on one channel, the widest kernel (12 mm FWHM by default): that
is the channel of the reference figures in the design card. Functions take maps
flattened to the brain mask, ``(n_studies, n_voxels)``, except SSIM, which needs
the volume.
"""

from __future__ import annotations

import pandas as pd
import torch

from sematlas.core.grid import mask_box
from sematlas.core.stats import balanced_accuracy


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


def _band(size: int, window: torch.Tensor) -> torch.Tensor:
    """The ``(size, size)`` matrix of a zero-padded 1-D convolution with ``window``: ``out = band @ x``."""
    pad = len(window) // 2
    index = torch.arange(size)
    offset = index[None, :] - index[:, None] + pad
    inside = (offset >= 0) & (offset < len(window))
    return torch.where(inside, window[offset.clamp(0, len(window) - 1)], torch.zeros((), dtype=window.dtype))


def _blur(volume: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``(n, 1, D, H, W)`` with zero padding.

    Each axis is a product with a banded matrix (:func:`_band`): the same sums as a
    ``conv3d`` with a 1-D kernel, several times faster on a CPU, whose convolution
    kernels vectorise one-channel, one-dimensional filters badly.
    """
    v = volume[:, 0]
    d, h, w = v.shape[1:]
    v = torch.einsum("ndhw,ed->nehw", v, _band(d, window))
    v = torch.einsum("ndhw,eh->ndew", v, _band(h, window))
    v = torch.einsum("ndhw,ew->ndhe", v, _band(w, window))
    return v.unsqueeze(1)


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
    # Only the mask's bounding box: the blur zero-pads, so where the maps are zero outside the mask (as
    # unmask leaves them) the SSIM inside is the same, for about half the voxels of the native grid.
    box = mask_box(mask)
    prediction, target, mask = prediction[(..., *box)], target[(..., *box)], mask[box]
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


__all__ = ["balanced_accuracy", "map_metrics", "masked_pearson", "ssim3d", "summarise", "unmask"]
