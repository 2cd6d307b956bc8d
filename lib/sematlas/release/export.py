"""The interoperable release of a profile (stage 10): ONNX models, NIfTI maps, tables, checksums.

Everything a user outside Python needs lands in ``data/release/<profile>/``:

- ``onnx/``: encoder and decoder of each volumetric model, and the ensemble's
  decoder, exported with ``torch.onnx.export`` (the dynamo exporter, opset 18,
  dynamic batch size); each file's parity with PyTorch is measured with
  onnxruntime before it is kept;
- ``nifti/``: maps in MNI152 space (the model grid's affine, qform/sform code 4);
- ``tables/``: every table as both CSV and Parquet, with ``data_dictionary.csv``
  (table, column, type, unit, meaning);
- ``metadata_encoder.json``: how a request (task, year, ...) becomes the metadata
  vector ``m`` the ONNX decoders take, so a program in any language can build it;
- ``README.md`` (what each file is), ``SHA256SUMS`` (``sha256sum -c`` format);
  and beside the folder a reproducible ``.tar.gz`` of it, ready to upload to
  Zenodo or NeuroVault (the upload needs the network and is documented, not automated).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from sematlas.analysis.ablation import METRICS as ABLATION_METRICS
from sematlas.core.grid import pad_to
from sematlas.core.io import atomic_path, sha256_file, write_parquet
from sematlas.inference.atlas import AtlasModel
from sematlas.training.ensemble import AtlasEnsemble, combine

#: ONNX opset of every exported graph.
OPSET = 18

# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------


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
        image = pad_to(maps, self.atlas.grid.padded_shape)
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
    (epistemic), as :func:`sematlas.training.ensemble.combine`.
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
        ``encoder`` -> {``maps`` (batch, C, D, H, W)[, ``m``, ``known``]} and
        ``decoder`` -> {``z`` (batch, z_dim)[, ``m``]}; conditional models get the
        metadata of real requests (the first task categories, years 2005 and 2015).
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
    return {"encoder": encoder, "decoder": decoder}


def export_model_onnx(atlas: AtlasModel, folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Export a model's encoder and decoder to ``<folder>/<name>_{encoder,decoder}.onnx`` and check parity.

    Returns
    -------
    dict
        Per graph: file name, inputs, outputs, and ``max_abs_difference`` against PyTorch
        on a held-back batch of another size than the export's.
    """
    folder = Path(folder)
    exported: dict[str, Any] = {}
    export_batch, check_batch = example_inputs(atlas, 2, seed=0), example_inputs(atlas, 3, seed=1)
    for part, graph, outputs in (
        ("encoder", EncoderGraph(atlas), ["mu"]),
        ("decoder", DecoderGraph(atlas), ["map"]),
    ):
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
        ``layout`` (the vector's fields in order), ``categories``, ``spaces``, the
        standardisation ``stats``, the grid (``shape``, ``affine``) and ``z_dim``.
    """
    from sematlas.core.metadata import SPACES, YEAR_RANGE

    return {
        "layout": [
            "one-hot task category (categories order)",
            "(year - year_mean) / year_std",
            "(log(n_peaks) - log_peaks_mean) / log_peaks_std; n_peaks defaults to exp(log_peaks_mean)",
            "one-hot space (spaces order); MNI by default",
            "(log(sample_size) - log_sample_size_mean) / log_sample_size_std; 0 when unknown",
        ],
        "categories": list(atlas.encoder.categories),
        "spaces": list(SPACES),
        "year_range": list(YEAR_RANGE),
        "stats": dict(atlas.encoder.stats),
        "meta_dim": int(metadata_vector(atlas, {"task": atlas.encoder.categories[0]}).shape[1]),
        "z_dim": atlas.z_dim,
        "channels_fwhm_mm": list(atlas.payload.get("fwhms", [])),
        "grid_shape": list(atlas.grid.shape),
        "affine": atlas.grid.affine.tolist(),
    }


# ---------------------------------------------------------------------------------------------
# Tables and their data dictionary
# ---------------------------------------------------------------------------------------------

#: Column -> (unit, meaning) of every column a release table may have.
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("", "Neurosynth study id (PMID-based)"),
    "title": ("", "article title"),
    "journal": ("", "journal"),
    "year": ("year", "publication year"),
    "doi": ("", "digital object identifier"),
    "space": ("", "reported stereotactic space (MNI, TAL, UNKNOWN)"),
    "split": ("", "train/val/test split over all studies"),
    "subset_split": ("", "train/val/test split of the stratified development subset (empty outside it)"),
    "in_subset": ("", "whether the study is in the development subset"),
    "n_peaks": ("count", "peaks kept after curation"),
    "n_tables": ("count", "tables (contrasts) the peaks come from"),
    "task_category": ("", "task category from the LDA-50 topics (params curation.task_categories)"),
    "sample_size": ("participants", "sample size from NeuroStore, missing when unknown"),
    "logvar_mean": ("log variance", "mean posterior log-variance over latent units (per-study uncertainty)"),
    "variant": ("", "model variant"),
    "pearson_r": ("", "Pearson correlation between the held-out map and its reconstruction"),
    "ssim": ("", "structural similarity between the held-out map and its reconstruction"),
    "cluster": ("", "HDBSCAN cluster (-1 = noise)"),
    "probability": ("", "HDBSCAN membership strength"),
    "name": ("", "cluster name from its top topics and task"),
    "size": ("count", "studies in the cluster"),
    "top_topics": ("", "the cluster's LDA topics of highest lift"),
    "top_tasks": ("", "the cluster's most frequent task categories with their shares"),
    "sample_size_source": ("", "where the sample size comes from (NeuroStore match), empty when unknown"),
    "duplicate_group": ("", "id of the group of near-duplicate studies the study belongs to"),
    "year_bin": ("", "publication-year bin used to stratify the splits"),
    "peak_count_bin": ("", "peak-count bin used to stratify the splits"),
    "nearest_training_id": ("", "id of the training study nearest by Chamfer distance (retrieval baseline)"),
    "neurostore_study_id": ("", "NeuroStore study id of a probe analysis"),
    "comparison_task": ("", "the analysis's task in the n-back vs flanker studyset"),
    "label": ("", "probe label: 1 = n-back, 0 = flanker"),
    "in_neurosynth": ("", "whether the analysis's study is also in Neurosynth v7 (PMID, title or DOI)"),
    "in_training": ("", "whether that study is in the models' training split"),
    "method": ("", "model or baseline"),
    "precision": ("", "improved precision (Kynkaanniemi et al., 2019): generated maps inside the real manifold"),
    "recall": ("", "improved recall: real maps inside the generated manifold"),
    "frechet_distance": ("", "Frechet distance between Gaussian fits of the two sets of features"),
    "n": ("count", "number of items the row summarises"),
    "top_topic_columns": ("", "study-table columns of the cluster's top topics"),
    "top_topic_lifts": ("ratio", "mean topic weight in the cluster over the corpus mean, per top topic"),
    "top_task_shares": ("fraction", "share of the cluster's studies in each top task category"),
    "decode_task": ("", "task category the centroid map was decoded with"),
    "decode_year": ("year", "publication year the centroid map was decoded with"),
    "component": ("", "canonical variate (1 = largest canonical correlation)"),
    "r": ("", "canonical correlation of the component on the held-out studies"),
    "p": ("", "permutation p-value of the component (stepwise shuffled pairing)"),
    "p_fwe": ("", "family-wise p-value: running maximum of p over components"),
    "view": ("", "latent space: volumetric or pointcloud"),
    "rank": ("", "rank of the unit among the component's top-loading units"),
    "unit": ("", "latent unit (z_<k>)"),
    "structure": ("", "structure coefficient: correlation of the unit with the canonical variate"),
    "weight": ("", "canonical weight of the standardised unit"),
    "step_sd": ("canonical sd", "position along the canonical variate the point set was decoded at"),
    "point": ("", "index of the point in the decoded set"),
    "x": ("mm", "MNI x coordinate"),
    "y": ("mm", "MNI y coordinate"),
    "z": ("mm", "MNI z coordinate"),
    "frechet": ("", "Frechet distance between forecast and observed latent distributions of the year"),
    "mean_term": ("", "the part of the Frechet distance due to the means: squared distance between them"),
    "group": ("", "all studies, or one task category"),
    "observed": ("", "whether the year has enough studies to be used"),
    "shrinkage": ("", "Ledoit-Wolf shrinkage intensity of the year's covariance"),
    "cov": ("latent sd squared", "the year's shrinkage covariance of the latents, row by row"),
    "ablation": ("", "the ablation: params/ablations/<name>.yaml"),
    "change": ("", "the one parameter the ablation changes, 'key: locked -> ablated'"),
    "hypothesis": ("", "what the ablation tests, declared before the run"),
    "criterion": ("", "the success criterion, declared before the run"),
    "locked": ("", "the criterion's metric for the locked model, retrained under the protocol's budget"),
    "ablated": ("", "the criterion's metric for the ablation"),
    "delta": ("", "ablated - locked, on the criterion's metric"),
    "threshold": ("", "the criterion's boundary on delta"),
    "verdict": ("", "PASS when the criterion holds, else FAIL"),
    "train_seconds": ("s", "wall-clock training time of the run"),
    **{name: (unit, meaning) for name, (unit, meaning, _) in ABLATION_METRICS.items()},
}

_METRICS = {
    "pearson_r": ("", "Pearson correlation with the held-out map"),
    "ssim": ("", "structural similarity with the held-out map"),
    "chamfer_mm": ("mm", "Chamfer distance to the held-out peaks"),
    "emd_mm": ("mm", "earth mover's (Sinkhorn) distance to the held-out peaks"),
}

#: Column-name patterns of families of columns -> (unit, meaning template over the named groups).
COLUMN_PATTERNS: tuple[tuple[str, tuple[str, str]], ...] = (
    (r"z_(?P<k>\d+)", ("latent sd", "posterior mean of latent unit {k}")),
    (r"topic_(?P<k>\d+)", ("weight", "weight of LDA-50 topic {k} in the abstract (Neurosynth v7)")),
    (
        r"(?P<task>reconstruction|conditional_generation)_(?P<method>.+)_(?P<metric>" + "|".join(_METRICS) + ")",
        ("{unit}", "{task} by {method}: {meaning}"),
    ),
    (r"prediction_(?P<method>.+)", ("", "zero-shot probe's cross-validated prediction from {method} features")),
    (r"mean_(?P<k>\d+)", ("latent sd", "the year's mean of latent unit {k}")),
    (r"var_(?P<k>\d+)", ("latent sd squared", "the year's variance of latent unit {k}")),
    (
        r"(?P<ablation_metric>" + "|".join(ABLATION_METRICS) + ")_delta",
        ("", "ablated - locked, on {ablation_metric}"),
    ),
)


def describe_column(table: str, column: str) -> tuple[str, str]:
    """Unit and meaning of a release column.

    Raises
    ------
    KeyError
        Naming the table and the column when it is not described in
        :data:`COLUMNS` or :data:`COLUMN_PATTERNS`.
    """
    if column in COLUMNS:
        return COLUMNS[column]
    for pattern, (unit, meaning) in COLUMN_PATTERNS:
        match = re.fullmatch(pattern, column)
        if match:
            groups = {key: value.replace("_", " ") for key, value in match.groupdict().items()}
            if "metric" in groups:
                groups["unit"], groups["meaning"] = _METRICS[match["metric"]]
            return unit.format(**groups), meaning.format(**groups)
    raise KeyError(f"release table {table!r}: column {column!r} has no entry in sematlas.release.export.COLUMNS")


def data_dictionary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (table, column): storage type, unit and meaning.

    Parameters
    ----------
    tables : mapping
        Table name -> frame.

    Returns
    -------
    DataFrame
        ``table``, ``column``, ``type``, ``unit``, ``meaning``.

    Raises
    ------
    KeyError
        Listing every (table, column) that :data:`COLUMNS` and :data:`COLUMN_PATTERNS` do not describe.
    """
    rows, undescribed = [], []
    for table, frame in tables.items():
        for column, dtype in frame.dtypes.items():
            try:
                unit, meaning = describe_column(table, str(column))
            except KeyError:
                undescribed.append(f"{table}.{column}")
                continue
            rows.append({"table": table, "column": str(column), "type": str(dtype), "unit": unit, "meaning": meaning})
    if undescribed:
        raise KeyError(f"release columns without an entry in sematlas.release.export.COLUMNS: {', '.join(undescribed)}")
    return pd.DataFrame(rows, columns=["table", "column", "type", "unit", "meaning"])


def release_tables(processed: str | os.PathLike[str], results: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """The curated study table and every table the stages wrote, by release name.

    Parameters
    ----------
    processed, results : path
        The profile's ``data/processed/<profile>`` and ``data/results/<profile>``.

    Returns
    -------
    dict
        ``studies``, then ``<stage folder>_<table>`` for each ``results/**/*.parquet``, sorted.
    """
    tables = {"studies": pd.read_parquet(Path(processed) / "studies.parquet")}
    for source in sorted(Path(results).rglob("*.parquet")):
        tables["_".join(source.relative_to(results).with_suffix("").parts)] = pd.read_parquet(source)
    return tables


def copy_tree_files(source: str | os.PathLike[str], target: str | os.PathLike[str], pattern: str) -> list[Path]:
    """Copy the files of ``source`` matching ``pattern`` (e.g. ``*.nii.gz``) to ``target``, keeping sub-folders."""
    source, target = Path(source), Path(target)
    copied = []
    for path in sorted(source.rglob(pattern)):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copy2(path, destination)))
    return copied


def write_csv(frame: pd.DataFrame, target: str | os.PathLike[str]) -> Path:
    """Write a frame as CSV (no index), atomically."""
    target = Path(target)
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return target


def export_tables(tables: Mapping[str, pd.DataFrame], folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Write every table as ``<name>.csv`` and ``<name>.parquet``, and the data dictionary as both.

    Parameters
    ----------
    tables : mapping
        Table name -> frame (list-valued cells are joined with ``"; "`` in the CSV).
    folder : path

    Returns
    -------
    DataFrame
        The data dictionary (see :func:`data_dictionary`), itself written as ``data_dictionary.*``.
    """
    folder = Path(folder)
    dictionary = data_dictionary(tables)
    for name, frame in {**tables, "data_dictionary": dictionary}.items():
        write_parquet(frame.reset_index(drop=True), folder / f"{name}.parquet")
        flat = frame.apply(lambda col: col.map(_flatten_cell) if col.dtype == object else col)
        write_csv(flat, folder / f"{name}.csv")
    return dictionary


def _flatten_cell(value: Any) -> Any:
    if isinstance(value, list | tuple | np.ndarray):
        return "; ".join(str(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------
# Checksums, README, archive
# ---------------------------------------------------------------------------------------------


def release_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every file under ``folder`` except ``SHA256SUMS``, as sorted relative paths."""
    folder = Path(folder)
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS")


def write_checksums(folder: str | os.PathLike[str]) -> Path:
    """Write ``SHA256SUMS`` (``sha256sum -c`` format) over every file of the folder.

    Returns
    -------
    Path
    """
    folder = Path(folder)
    lines = [f"{sha256_file(folder / rel)}  {rel.as_posix()}\n" for rel in release_files(folder)]
    target = folder / "SHA256SUMS"
    with atomic_path(target) as tmp:
        tmp.write_text("".join(lines))
    return target


def verify_checksums(folder: str | os.PathLike[str]) -> list[str]:
    """Files of ``SHA256SUMS`` that are missing or whose content changed (empty when all match)."""
    folder = Path(folder)
    bad = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(rel)
    return bad


def write_release_readme(folder: str | os.PathLike[str], descriptions: Mapping[str, str], header: str) -> Path:
    """Write ``README.md``: the header, then every file with its size and what it is.

    Parameters
    ----------
    folder : path
    descriptions : mapping
        Path prefix (a file or a folder, relative, POSIX) -> description; a file takes
        the description of its longest matching prefix.
    header : str
        Markdown above the file table (provenance, how to cite, how to verify).

    Raises
    ------
    KeyError
        A file that no description covers, by name.
    """
    folder = Path(folder)
    rows = []
    for rel in release_files(folder):
        if rel.name == "README.md" and rel.parent == Path("."):
            continue
        posix = rel.as_posix()
        matches = [p for p in descriptions if posix == p or posix.startswith(p.rstrip("/") + "/")]
        if not matches:
            raise KeyError(f"release file {posix!r} has no description")
        size = (folder / rel).stat().st_size
        rows.append(f"| `{posix}` | {size:,} | {descriptions[max(matches, key=len)]} |")
    text = header.rstrip() + "\n\n| file | bytes | what it is |\n|---|---:|---|\n" + "\n".join(rows) + "\n"
    target = folder / "README.md"
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target


def archive(folder: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """A reproducible ``.tar.gz`` of the folder: sorted members, fixed times and owners.

    The same release files give the same archive bytes, so its SHA-256 identifies the release.

    Returns
    -------
    Path
    """
    folder, target = Path(folder), Path(target)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel in [*release_files(folder), Path("SHA256SUMS")]:
            info = tar.gettarinfo(str(folder / rel), arcname=f"{folder.name}/{rel.as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with open(folder / rel, "rb") as handle:
                tar.addfile(info, handle)
    # No file name and no time in the gzip header either: only the content shapes the bytes.
    with atomic_path(target) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
            compressed.write(buffer.getvalue())
    return target
