"""Stage 03: the point-cloud conditional VAE of Neurosynth peak sets.

- :mod:`~sematlas.pointcloud.cache`: every study's peaks as a fixed-size, scaled point set (HDF5);
- :mod:`~sematlas.pointcloud.pointnet`: PointNet++ encoder with random Fourier features, in plain torch;
- :mod:`~sematlas.pointcloud.model`: the conditional VAE and the :class:`PointCloudModel` inference API (mm);
- :mod:`~sematlas.pointcloud.module`: DataModule, LightningModule and :func:`train_pointcloud`;
- :mod:`~sematlas.pointcloud.evaluation`: held-out metrics in mm against resampling and retrieval baselines.

The objectives (Chamfer, Sinkhorn, KL) live in :mod:`sematlas.losses` with the other models'.
"""

from __future__ import annotations

from sematlas.pointcloud.model import CheckpointError, PointCloudConfig, PointCloudModel, PointCloudVAE
from sematlas.pointcloud.module import PointCloudDataModule, PointCloudModule, make_datamodule, train_pointcloud

__all__ = [
    "CheckpointError",
    "PointCloudConfig",
    "PointCloudDataModule",
    "PointCloudModel",
    "PointCloudModule",
    "PointCloudVAE",
    "make_datamodule",
    "train_pointcloud",
]
