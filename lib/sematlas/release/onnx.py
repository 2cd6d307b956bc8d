"""ONNX graphs of the trained models, for programs outside Python (stage 10).

The encoder and decoder of each volumetric model, a conditional model's prior
``p(z | m)``, and the ensemble's decoder, are exported with ``torch.onnx.export``
(the dynamo exporter, opset :data:`OPSET`, dynamic batch size); each file's parity with
PyTorch is measured with onnxruntime on a batch of another size before it is kept.
:func:`metadata_encoder_spec` says how a request (a task category or a topic profile,
year, ...) becomes the metadata vector ``m`` the conditional graphs take, so a program in
any language can build it, draw ``z`` from the prior graph and decode it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sematlas.core.io import atomic_path
from sematlas.inference.atlas import AtlasModel
from sematlas.inference.ensemble import AtlasEnsemble, combine

#: ONNX opset of every exported graph.
OPSET = 18


def metadata_vector(atlas: AtlasModel, metadata: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Tensor:
    """The metadata vector ``m`` of requests, as the exported conditional decoders take it.

    Parameters
    ----------
    atlas : AtlasModel
        A conditional model (``cbvae``).
    metadata : dict or list of dicts
        Requests such as ``{"task": "pain", "year": 2012}`` (see :meth:`AtlasModel.decode`).

    Returns
    -------
    Tensor, shape (n, meta_dim)
        ``cond ++ sparse`` with 0 (the training mean) for an unknown sample size.
    """
    return atlas.network.meta_vector(atlas.encode_metadata(metadata))


class DecoderGraph(nn.Module):
    """A model's decoder as an ONNX-exportable graph: latents (and metadata) to native-grid maps.

    Parameters
    ----------
    atlas : AtlasModel

    Notes
    -----
    ``forward(z, m)`` for conditional models, ``forward(z)`` otherwise; both return
    maps of shape ``(batch, C, D, H, W)``, cropped to the native grid and zero
    outside the brain: exactly :meth:`AtlasModel.decode`.
    """

    def __init__(self, atlas: AtlasModel) -> None:
        super().__init__()
        self.atlas = atlas
        self.network = atlas.network

    def forward(self, z: Tensor, m: Tensor | None = None) -> Tensor:
        return self.atlas.to_native(self.network.decode(z, m))


class PriorGraph(nn.Module):
    """A conditional model's prior as an ONNX-exportable graph: metadata vectors to ``(mu, logvar)`` of ``p(z | m)``.

    Parameters
    ----------
    atlas : AtlasModel

    Notes
    -----
    ``forward(m)`` with ``m`` ``(batch, meta_dim)`` (:func:`metadata_vector`) returns ``mu`` and
    ``logvar`` ``(batch, z_dim)``; ``z = mu`` is the map the atlas generates for ``m``
    (:meth:`AtlasModel.generate`), ``mu + exp(logvar / 2) * eps`` a sample.
    """

    def __init__(self, atlas: AtlasModel) -> None:
        super().__init__()
        self.network = atlas.network

    def forward(self, m: Tensor) -> tuple[Tensor, Tensor]:
        return self.network.prior(m)


class EncoderGraph(nn.Module):
    """A model's encoder as an ONNX-exportable graph: native-grid maps (and metadata) to posterior means.

    Parameters
    ----------
    atlas : AtlasModel

    Notes
    -----
    ``forward(maps, m, known)`` for conditional models, where ``m`` is the metadata
    vector (see :func:`metadata_vector`) and ``known`` ``(batch, n_sparse)`` is 1
    where a sparse field (the sample size) is observed; ``forward(maps)`` otherwise.
    ``maps`` ``(batch, C, D, H, W)``; returns ``mu`` ``(batch, z_dim)``.
    """

    def __init__(self, atlas: AtlasModel) -> None:
        super().__init__()
        self.atlas = atlas
        self.network = atlas.network

    def forward(self, maps: Tensor, m: Tensor | None = None, known: Tensor | None = None) -> Tensor:
        image = self.atlas.grid.to_network(maps)
        meta = None
        if m is not None and known is not None:
            cond_dim = m.shape[1] - known.shape[1]
            meta = {"cond": m[:, :cond_dim], "sparse": m[:, cond_dim:], "sparse_mask": known > 0.5}
        mu, _ = self.network.encode(image, meta)
        return mu


class EnsembleDecoderGraph(nn.Module):
    """An ensemble's members' decoders as one graph: predictive mean, aleatoric and epistemic variance.

    Parameters
    ----------
    ensemble : AtlasEnsemble
        Members decoded deterministically (MC dropout passes are not exported).

    Notes
    -----
    ``forward(z, m)`` returns three maps ``(batch, C, D, H, W)``: the mixture mean,
    the mean predicted (aleatoric) variance and the variance of the members' means
    (epistemic), as :func:`sematlas.inference.ensemble.combine`.
    """

    def __init__(self, ensemble: AtlasEnsemble) -> None:
        super().__init__()
        self.members = nn.ModuleList(DecoderGraph(member) for member in ensemble.members)
        self.atlases = list(ensemble.members)

    def forward(self, z: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        means, variances = [], []
        for atlas in self.atlases:
            mean, logvar = atlas.network.decode_distribution(z, m)
            means.append(atlas.to_native(mean))
            variances.append(atlas.to_native(logvar.exp()))
        prediction = combine(torch.stack(means), torch.stack(variances))
        return prediction.mean, prediction.aleatoric, prediction.epistemic


def export_onnx(
    graph: nn.Module,
    inputs: Mapping[str, Tensor],
    output_names: Sequence[str],
    target: str | os.PathLike[str],
) -> Path:
    """Export a graph with a dynamic batch dimension, atomically.

    Parameters
    ----------
    graph : nn.Module
        In eval mode; called as ``graph(*inputs.values())``.
    inputs : mapping
        Input name -> an example tensor, batch first.
    output_names : sequence of str
    target : path

    Returns
    -------
    Path
    """
    graph = graph.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic_shapes = tuple({0: batch} for _ in inputs)
    target = Path(target)
    with atomic_path(target) as tmp, torch.no_grad():
        program = torch.onnx.export(
            graph,
            tuple(inputs.values()),
            input_names=list(inputs),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        if program is None:
            raise RuntimeError(f"torch.onnx.export returned no program for {target.name}")
        program.save(str(tmp))
    return target


def onnx_max_abs_difference(path: str | os.PathLike[str], graph: nn.Module, inputs: Mapping[str, Tensor]) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on ``inputs``.

    Parameters
    ----------
    path : path
        The exported graph.
    graph : nn.Module
        The PyTorch graph it was exported from.
    inputs : mapping
        Input name -> tensor (any batch size: the batch dimension is dynamic).

    Returns
    -------
    float
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, {name: value.numpy() for name, value in inputs.items()})
    with torch.no_grad():
        torch_outputs = graph.eval()(*inputs.values())
    if isinstance(torch_outputs, Tensor):
        torch_outputs = (torch_outputs,)
    return max(float(np.abs(o - t.numpy()).max()) for o, t in zip(onnx_outputs, torch_outputs, strict=True))


def example_inputs(atlas: AtlasModel, batch: int = 2, seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """Seeded example inputs of a model's encoder and decoder graphs.

    Returns
    -------
    dict
        ``encoder`` -> {``maps`` (batch, C, D, H, W)[, ``m``, ``known``]},
        ``decoder`` -> {``z`` (batch, z_dim)[, ``m``]} and, for conditional models,
        ``prior`` -> {``m``}; conditional models get the metadata of real requests (the
        first task categories, years 2005 and 2015).
    """
    generator = torch.Generator().manual_seed(seed)
    n_channels = atlas.config.in_channels
    maps = torch.rand((batch, n_channels, *atlas.grid.shape), generator=generator)
    z = torch.randn((batch, atlas.z_dim), generator=generator)
    encoder: dict[str, Tensor] = {"maps": maps}
    decoder: dict[str, Tensor] = {"z": z}
    if atlas.is_conditional:
        categories = atlas.encoder.categories
        requests = [{"task": categories[k % len(categories)], "year": 2005 + 10 * (k % 2)} for k in range(batch)]
        m = metadata_vector(atlas, requests)
        known = torch.zeros((batch, m.shape[1] - atlas.encoder.cond_dim))
        encoder.update(m=m, known=known)
        decoder["m"] = m
        return {"encoder": encoder, "decoder": decoder, "prior": {"m": m}}
    return {"encoder": encoder, "decoder": decoder}


def export_model_onnx(atlas: AtlasModel, folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Export a model's encoder, decoder and (if conditional) prior to ``<folder>/<name>_<part>.onnx``; check parity.

    Returns
    -------
    dict
        Per graph: file name, inputs, outputs, and ``max_abs_difference`` against PyTorch
        on a held-back batch of another size than the export's.
    """
    folder = Path(folder)
    exported: dict[str, Any] = {}
    export_batch, check_batch = example_inputs(atlas, 2, seed=0), example_inputs(atlas, 3, seed=1)
    graphs: list[tuple[str, nn.Module, list[str]]] = [
        ("encoder", EncoderGraph(atlas), ["mu"]),
        ("decoder", DecoderGraph(atlas), ["map"]),
    ]
    if atlas.is_conditional:
        graphs.append(("prior", PriorGraph(atlas), ["mu", "logvar"]))
    for part, graph, outputs in graphs:
        path = export_onnx(graph, export_batch[part], outputs, folder / f"{name}_{part}.onnx")
        exported[part] = {
            "file": path.name,
            "inputs": list(export_batch[part]),
            "outputs": outputs,
            "max_abs_difference": onnx_max_abs_difference(path, graph, check_batch[part]),
        }
    return exported


def export_ensemble_onnx(ensemble: AtlasEnsemble, folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Export an ensemble's decoder (mean, aleatoric, epistemic) to ``<folder>/<name>_decoder.onnx``.

    Returns
    -------
    dict
        File name, inputs, outputs and ``max_abs_difference`` against PyTorch.
    """
    graph = EnsembleDecoderGraph(ensemble)
    export_batch = example_inputs(ensemble.members[0], 2, seed=0)["decoder"]
    check_batch = example_inputs(ensemble.members[0], 3, seed=1)["decoder"]
    outputs = ["mean", "aleatoric", "epistemic"]
    path = export_onnx(graph, export_batch, outputs, Path(folder) / f"{name}_decoder.onnx")
    return {
        "file": path.name,
        "inputs": list(export_batch),
        "outputs": outputs,
        "max_abs_difference": onnx_max_abs_difference(path, graph, check_batch),
    }


def metadata_encoder_spec(atlas: AtlasModel) -> dict[str, Any]:
    """How a request becomes the metadata vector ``m``, for programs outside Python.

    Returns
    -------
    dict
        ``inputs`` (``topics`` or ``category``: what the vector starts with), ``layout``
        (the vector's fields in order), ``categories``, ``spaces``, the standardisation
        ``stats``; for ``topics`` also ``topic_names``, ``corpus_profile``, ``topic_std``,
        ``category_profiles`` (a category's mean topic profile, what a request for the
        category reads) and ``query_blend``; the grid (``shape``, ``affine``) and ``z_dim``.
    """
    from sematlas.core.metadata import QUERY_BLEND, SPACES, YEAR_RANGE

    encoder = atlas.encoder
    rest = [
        "(year - year_mean) / year_std",
        "(log(n_peaks) - log_peaks_mean) / log_peaks_std; n_peaks defaults to exp(log_peaks_mean)",
        "one-hot space (spaces order); MNI by default",
        "(log(sample_size) - log_sample_size_mean) / log_sample_size_std; 0 when unknown",
    ]
    spec: dict[str, Any] = {"inputs": encoder.inputs}
    if encoder.inputs == "topics":
        spec["layout"] = [
            "topic weights standardised, (w_k - corpus_profile[k]) / topic_std[k], k in topic order; a task "
            "category's request reads its category_profiles entry, a topic query the normalised weights blended "
            "with the corpus profile: query_blend * w + (1 - query_blend) * corpus_profile",
            *rest,
        ]
        spec |= {
            "topic_names": encoder.topic_names,
            "corpus_profile": list(encoder.corpus_profile),
            "topic_std": list(encoder.topic_std),
            "category_profiles": {name: list(profile) for name, profile in encoder.category_profiles.items()},
            "query_blend": QUERY_BLEND,
        }
    else:
        spec["layout"] = ["one-hot task category (categories order)", *rest]
    return spec | {
        "categories": list(encoder.categories),
        "spaces": list(SPACES),
        "year_range": list(YEAR_RANGE),
        "stats": dict(encoder.stats),
        "meta_dim": int(metadata_vector(atlas, {"task": encoder.categories[0]}).shape[1]),
        "z_dim": atlas.z_dim,
        "channels_fwhm_mm": list(atlas.payload.get("fwhms", [])),
        "grid_shape": list(atlas.grid.shape),
        "affine": atlas.grid.affine.tolist(),
    }
