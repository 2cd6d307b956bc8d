"""PointNet++ encoder in plain torch (runs on a CPU; no compiled CUDA ops).

Qi, Yi, Su & Guibas, "PointNet++: Deep hierarchical feature learning on point
sets in a metric space" (NeurIPS 2017): a set-abstraction level picks centroids
by farthest-point sampling, groups the points within a ball around each
centroid, runs a shared MLP on every (relative position, feature) pair and
max-pools per ball. Two levels are followed by a global shared MLP and
max-pool. The input features are Gaussian random Fourier features of xyz
(Tancik et al., NeurIPS 2020), which let an MLP resolve millimetre-scale
structure that raw coordinates in [-1, 1] would blur.

A study has only tens of points, so the O(n^2) pairwise distances of the ball
query and the Python loop of farthest-point sampling cost nothing next to the
MLPs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def index_points(points: Tensor, index: Tensor) -> Tensor:
    """Gather points per batch element.

    Parameters
    ----------
    points : Tensor, shape (batch, n, channels)
    index : Tensor of int64, shape (batch, *rest)

    Returns
    -------
    Tensor, shape (batch, *rest, channels)
    """
    batch = torch.arange(points.shape[0], device=points.device).view(-1, *([1] * (index.ndim - 1)))
    return points[batch, index]


@torch.no_grad()
def farthest_point_sample(xyz: Tensor, npoint: int) -> Tensor:
    """Iterative farthest-point sampling (Qi et al. 2017, sec. 3.2).

    Starts from the first point (deterministic, unlike the random start of the
    reference code; the cache already orders points randomly) and then adds,
    ``npoint - 1`` times, the point farthest from all chosen so far. Ties go to
    the lowest index, so copies of a chosen point are picked only once every
    distinct point has been.

    Parameters
    ----------
    xyz : Tensor, shape (batch, n, 3)
    npoint : int
        At most ``n``.

    Returns
    -------
    Tensor of int64, shape (batch, npoint)
    """
    batch, n, _ = xyz.shape
    if not 0 < npoint <= n:
        raise ValueError(f"npoint must be in [1, {n}], got {npoint}")
    chosen = torch.zeros(batch, npoint, dtype=torch.long, device=xyz.device)
    distance = torch.full((batch, n), math.inf, device=xyz.device)
    farthest = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    rows = torch.arange(batch, device=xyz.device)
    for i in range(npoint):
        chosen[:, i] = farthest
        centroid = xyz[rows, farthest][:, None, :]
        distance = torch.minimum(distance, (xyz - centroid).pow(2).sum(dim=-1))
        farthest = distance.argmax(dim=1)
    return chosen


@torch.no_grad()
def ball_query(xyz: Tensor, centroids: Tensor, radius: float, nsample: int) -> Tensor:
    """Up to ``nsample`` points within ``radius`` of each centroid (Qi et al. 2017, sec. 3.2).

    The lowest-index points inside the ball, as the reference CUDA op returns
    them; a ball with fewer is padded with its first point. A centroid that is
    one of ``xyz`` always finds at least itself.

    Parameters
    ----------
    xyz : Tensor, shape (batch, n, 3)
    centroids : Tensor, shape (batch, s, 3)
    radius : float
    nsample : int
        At most ``n``.

    Returns
    -------
    Tensor of int64, shape (batch, s, nsample)
        Indices into ``xyz``.
    """
    n = xyz.shape[1]
    if not 0 < nsample <= n:
        raise ValueError(f"nsample must be in [1, {n}], got {nsample}")
    distance = (centroids[:, :, None, :] - xyz[:, None, :, :]).pow(2).sum(dim=-1)  # (batch, s, n)
    order = torch.arange(n, device=xyz.device).expand_as(distance)
    # Outside the ball -> index n, which sorts last.
    inside = torch.where(distance <= radius**2, order, n).sort(dim=-1).values[..., :nsample]
    return torch.where(inside == n, inside[..., :1], inside)


def shared_mlp(channels: list[int]) -> nn.Sequential:
    """Linear + ReLU layers applied to the last axis, i.e. shared by every point."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Linear(c_in, c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class FourierFeatures(nn.Module):
    """Gaussian random Fourier features ``[cos(2 pi x B), sin(2 pi x B)]`` (Tancik et al. 2020).

    Parameters
    ----------
    n_features : int
        Number of frequencies; the output has ``2 * n_features`` channels.
    sigma : float
        Standard deviation of the frequencies ``B ~ N(0, sigma^2)``, shape (3, n_features),
        in cycles per unit of the input. Drawn once from the global torch RNG and kept as
        a buffer, so a checkpoint restores them.
    """

    frequencies: Tensor

    def __init__(self, n_features: int, sigma: float) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(3, n_features) * sigma)

    def forward(self, xyz: Tensor) -> Tensor:
        """``(..., 3)`` -> ``(..., 2 * n_features)``."""
        phase = 2.0 * math.pi * xyz @ self.frequencies
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class SetAbstraction(nn.Module):
    """One PointNet++ set-abstraction level (single scale grouping).

    Parameters
    ----------
    npoint : int
        Centroids picked by farthest-point sampling.
    radius : float
        Ball radius; relative positions inside a ball are divided by it, so they lie in the unit ball.
    nsample : int
        Points per ball.
    in_channels, out_channels : int
        Feature channels in and out (the shared MLP is ``in + 3 -> out -> out``).
    """

    def __init__(self, npoint: int, radius: float, nsample: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.npoint = npoint
        self.radius = radius
        self.nsample = nsample
        self.mlp = shared_mlp([in_channels + 3, out_channels, out_channels])

    def forward(self, xyz: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """Abstract ``(batch, n, 3)`` points with ``(batch, n, in)`` features.

        Returns
        -------
        centroids : Tensor, shape (batch, npoint, 3)
        features : Tensor, shape (batch, npoint, out)
        """
        centroids = index_points(xyz, farthest_point_sample(xyz, self.npoint))
        group = ball_query(xyz, centroids, self.radius, self.nsample)  # (batch, npoint, nsample)
        relative = (index_points(xyz, group) - centroids[:, :, None, :]) / self.radius
        grouped = torch.cat([relative, index_points(features, group)], dim=-1)
        return centroids, self.mlp(grouped).max(dim=2).values


class PointNetEncoder(nn.Module):
    """Fourier features, two set-abstraction levels, then a global shared MLP and max-pool.

    Parameters
    ----------
    fourier_features : int
    fourier_sigma : float
        See :class:`FourierFeatures`.
    npoint, radius, nsample, channels : pair of int / float / int / int
        Per level, see :class:`SetAbstraction`.
    global_channels : int
        Width of the global feature.
    """

    def __init__(
        self,
        fourier_features: int,
        fourier_sigma: float,
        npoint: tuple[int, int],
        radius: tuple[float, float],
        nsample: tuple[int, int],
        channels: tuple[int, int],
        global_channels: int,
    ) -> None:
        super().__init__()
        self.fourier = FourierFeatures(fourier_features, fourier_sigma)
        self.sa1 = SetAbstraction(npoint[0], radius[0], nsample[0], 2 * fourier_features, channels[0])
        self.sa2 = SetAbstraction(npoint[1], radius[1], nsample[1], channels[0], channels[1])
        self.global_mlp = shared_mlp([channels[1] + 3, global_channels, global_channels])

    def forward(self, xyz: Tensor) -> Tensor:
        """``(batch, n_points, 3)`` points in [-1, 1] -> ``(batch, global_channels)`` global features."""
        centroids, features = self.sa1(xyz, self.fourier(xyz))
        centroids, features = self.sa2(centroids, features)
        return self.global_mlp(torch.cat([centroids, features], dim=-1)).max(dim=1).values
