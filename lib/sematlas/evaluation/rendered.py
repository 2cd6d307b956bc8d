"""Every split's maps rendered once per stage: the unaugmented evaluation inputs, kept flattened to the brain mask.

A stage evaluates several models (stage 02 each variant, stage 04 each ensemble
method, stage 09 the generation, the probe and the ablation runs) on the same
held-out maps, and each evaluation used to render its splits again.
:class:`RenderedSplits` renders each study of a split once, on first use, and
serves every later evaluation from memory. It keeps the maps flattened to the
brain mask, ``(n_studies, channels, n_mask_voxels)`` float32 (the renderer masks
its output, so nothing is lost): at 4 mm, 2 channels and 28,549 mask voxels that
is about 0.23 MB a study, 0.5 GB for the 2,078 test studies of ``quick``, where
the network-grid volumes would take several times as much.
Batches for a network are scattered back onto the network grid
(:meth:`NeurosynthDataModule.brain_mask`) and equal what
:meth:`~sematlas.data.datamodule.NeurosynthDataModule.render_rows` returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sematlas.core.progress import progress

if TYPE_CHECKING:
    from sematlas.data.datamodule import NeurosynthDataModule


def _render_identity(datamodule: NeurosynthDataModule) -> tuple[Any, ...]:
    """What an unaugmented map of a DataModule depends on: its studies and how they are rendered."""
    return (
        datamodule.processed_dir.resolve(),
        datamodule.use_subset,
        datamodule.voxel_size,
        datamodule.fwhms,
        datamodule.truncate,
        datamodule.kernel_choice,
    )


class RenderedSplits:
    """The unaugmented maps of a DataModule's splits, each study rendered at most once.

    Parameters
    ----------
    datamodule : NeurosynthDataModule
        Set up; it renders the maps. Any DataModule that renders the same studies
        the same way (:meth:`renders_like`) may be served from this cache, e.g. the
        ablation runs that change only the model.

    Notes
    -----
    A split is rendered as a growing prefix of its rows: asking for the first ``n``
    studies renders those alone, asking for more later renders only the rest.
    """

    def __init__(self, datamodule: NeurosynthDataModule) -> None:
        self._datamodule = datamodule
        self._identity = _render_identity(datamodule)
        self._maps: dict[str, torch.Tensor] = {}
        self._rendered: dict[str, int] = {}  # rows of each split's buffer rendered so far (a prefix)
        network_mask = datamodule.brain_mask()
        if int(network_mask.sum()) != int(datamodule.grid.mask().sum()):
            raise ValueError("the network grid must hold every brain-mask voxel of the native grid")
        self._network_mask = network_mask

    @classmethod
    def shared(cls, maps: RenderedSplits | None, datamodule: NeurosynthDataModule) -> RenderedSplits:
        """``maps`` when it serves ``datamodule``; a new cache of ``datamodule`` when ``maps`` is ``None``.

        Raises
        ------
        ValueError
            ``maps`` holds maps rendered otherwise (other studies, kernels or grid).
        """
        if maps is None:
            return cls(datamodule)
        if not maps.renders_like(datamodule):
            raise ValueError("these rendered maps are not the DataModule's: other studies, kernels or grid")
        return maps

    def renders_like(self, datamodule: NeurosynthDataModule) -> bool:
        """Whether ``datamodule``'s unaugmented maps are this cache's (same studies, grid and kernels)."""
        return _render_identity(datamodule) == self._identity

    def images(self, split: str, n: int | None = None) -> torch.Tensor:
        """The first ``n`` studies of ``split`` (default: all), flattened to the brain mask.

        Returns
        -------
        Tensor, shape (n, channels, n_mask_voxels)
            As :meth:`NeurosynthDataModule.all_images`; a view of the cache, not a copy.
        """
        size = len(self._datamodule.tables[split])
        total = size if n is None else min(n, size)
        if split not in self._maps:
            # The whole split's buffer at once, filled as rows are asked for: growing it by concatenation
            # copied the rendered prefix at every batch (quadratic: minutes for a 9,709-study split).
            # Untouched rows of an empty tensor cost no memory until written.
            shape = (size, self._datamodule.n_channels, int(self._network_mask.sum()))
            self._maps[split], self._rendered[split] = torch.empty(shape), 0
        done = self._rendered[split]
        if done < total:
            self._maps[split][done:total] = self._datamodule.all_images(split, rows=range(done, total))
            self._rendered[split] = total
        return self._maps[split][:total]

    def network_images(self, flat: torch.Tensor) -> torch.Tensor:
        """Maps flattened to the brain mask ``(n, C, V)`` back on the network grid, zero outside the mask.

        Returns
        -------
        Tensor, shape (n, C, D, H, W)
            The network grid of :meth:`NeurosynthDataModule.brain_mask`, as a batch's ``image``.
        """
        image = flat.new_zeros((*flat.shape[:2], *self._network_mask.shape))
        # The native grid sits in the network grid by a translation, so both masks list their voxels in one order.
        image[:, :, self._network_mask] = flat
        return image

    def batch(self, datamodule: NeurosynthDataModule, split: str, rows: Sequence[int]) -> dict[str, Any]:
        """Studies ``rows`` of ``split`` as :meth:`NeurosynthDataModule.render_rows` gives them, unaugmented.

        Parameters
        ----------
        datamodule : NeurosynthDataModule
            Gives the metadata and ids; it must render like this cache (:meth:`renders_like`).
        split : str
        rows : sequence of int
            Row indices into the split's table.

        Returns
        -------
        dict
            ``image`` (B, C, D, H, W) on the network grid, ``meta`` (the rows' metadata tensors), ``id``.
        """
        if not self.renders_like(datamodule):
            raise ValueError("these rendered maps are not the DataModule's: other studies, kernels or grid")
        picked = np.asarray(rows, dtype=np.int64)
        cached = self.images(split, int(picked.max()) + 1 if len(picked) else 0)
        index = torch.from_numpy(picked)
        return {
            "image": self.network_images(cached[index]),
            "meta": {key: value[index] for key, value in datamodule.meta[split].items()},
            "id": datamodule.tables[split].studies["id"].iloc[picked].tolist(),
        }

    def batches(
        self, datamodule: NeurosynthDataModule, split: str, n: int | None = None, description: str = ""
    ) -> Iterator[dict[str, Any]]:
        """The first ``n`` studies of ``split`` (default: all) in batches of ``datamodule.batch_size``.

        The batches of ``datamodule.loader(split)``, unshuffled and unaugmented, from the cache;
        with a progress bar (elapsed, time left) labelled ``description`` when given.
        """
        size = len(datamodule.tables[split])
        total = size if n is None else min(n, size)
        starts = range(0, total, datamodule.batch_size)
        for start in progress(starts, description, unit="batch") if description else starts:
            yield self.batch(datamodule, split, range(start, min(start + datamodule.batch_size, total)))


__all__ = ["RenderedSplits"]
