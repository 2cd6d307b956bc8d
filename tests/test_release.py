"""The release (stage 10): NIfTI placement, ONNX parity, tables and their dictionary, checksums, examples."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import CATEGORIES, tiny_atlas

from sematlas.core.grid import Grid
from sematlas.data.render import PeakRenderer
from sematlas.inference.atlas import AtlasModel
from sematlas.inference.ensemble import AtlasEnsemble
from sematlas.release.archive import archive, copy_tree_files, verify_checksums, write_checksums, write_release_readme
from sematlas.release.onnx import export_ensemble_onnx, export_model_onnx, metadata_encoder_spec, metadata_vector
from sematlas.release.tables import data_dictionary, describe_column, export_tables, release_tables

ROOT = Path(__file__).resolve().parents[1]

# ---- NIfTI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("xyz", [(40.0, -20.0, 50.0), (-30.0, 12.0, -8.0)])
def test_a_rendered_peak_round_trips_to_its_mni_coordinate(tmp_path: Path, xyz) -> None:
    grid = Grid(4)
    renderer = PeakRenderer(grid, fwhms=(6.0,))
    volume = renderer.render(grid.mm_to_voxel(np.array([xyz])), np.array([0]), 1)[0, 0].numpy()
    path = tmp_path / "peak.nii.gz"
    grid.to_nifti(volume, "one peak").to_filename(path)

    image = nib.load(path)
    assert image.header.get_sform(coded=True)[1] == 4 and image.header.get_qform(coded=True)[1] == 4
    assert image.header.get_xyzt_units()[0] == "mm" and image.get_data_dtype() == np.float32
    peak_ijk = np.unravel_index(np.argmax(image.get_fdata()), image.shape)
    peak_mm = nib.affines.apply_affine(image.affine, peak_ijk)
    # The peak lands in the voxel whose centre is nearest to it: within half a voxel diagonal.
    assert np.linalg.norm(peak_mm - np.array(xyz)) <= grid.voxel_size * np.sqrt(3) / 2


def test_grid_nifti_takes_series_and_names_the_expected_shape() -> None:
    grid = Grid(4)
    assert grid.to_nifti(np.zeros((*grid.shape, 5))).shape == (*grid.shape, 5)
    with pytest.raises(ValueError, match=r"\(46, 55, 46\) grid"):
        grid.to_nifti(np.zeros((46, 55, 45)))


# ---- ONNX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["cbvae", "tcvae_sbd"])
@pytest.mark.slow
def test_onnx_encoder_and_decoder_match_pytorch(tmp_path: Path, variant: str) -> None:
    import onnxruntime

    atlas = tiny_atlas(variant, seed=3)
    exported = export_model_onnx(atlas, tmp_path, variant)
    assert exported["encoder"]["max_abs_difference"] < 1e-4
    assert exported["decoder"]["max_abs_difference"] < 1e-4
    expected_inputs = ["z", "m"] if atlas.is_conditional else ["z"]
    assert exported["decoder"]["inputs"] == expected_inputs

    # The decoder graph is AtlasModel.decode: run it on a batch of 4 (the export traced 2).
    session = onnxruntime.InferenceSession(str(tmp_path / f"{variant}_decoder.onnx"))
    requests = [{"task": task, "year": 2003 + k} for k, task in enumerate(CATEGORIES)]
    z = torch.randn(4, atlas.z_dim)
    feeds = {"z": z.numpy()}
    if atlas.is_conditional:
        feeds["m"] = metadata_vector(atlas, requests).numpy()
    (onnx_maps,) = session.run(None, feeds)
    torch_maps = atlas.decode(z, requests if atlas.is_conditional else None).numpy()
    assert onnx_maps.shape == (4, 2, 46, 55, 46)
    np.testing.assert_allclose(onnx_maps, torch_maps, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_onnx_ensemble_decoder_gives_the_ensembles_moments(tmp_path: Path) -> None:
    members = [tiny_atlas("cbvae", seed=k, aleatoric=True) for k in (1, 2)]
    exported = export_ensemble_onnx(AtlasEnsemble(members), tmp_path, "ensemble")
    assert exported["outputs"] == ["mean", "aleatoric", "epistemic"]
    assert exported["max_abs_difference"] < 1e-4


def test_metadata_encoder_spec_rebuilds_the_metadata_vector() -> None:
    atlas = tiny_atlas("cbvae", seed=0)
    spec = json.loads(json.dumps(metadata_encoder_spec(atlas)))  # what a non-Python program reads
    s, corpus, std = spec["stats"], np.array(spec["corpus_profile"]), np.array(spec["topic_std"])
    assert spec["inputs"] == "topics"
    n_topics = len(corpus)

    def by_hand(profile: np.ndarray) -> np.ndarray:
        vector = np.zeros(spec["meta_dim"], dtype=np.float32)
        vector[:n_topics] = (profile - corpus) / std
        vector[n_topics] = (2009 - s["year_mean"]) / s["year_std"]
        vector[n_topics + 2 + spec["spaces"].index("MNI")] = 1
        return vector

    pain = np.array(spec["category_profiles"]["pain"])
    np.testing.assert_allclose(
        metadata_vector(atlas, {"task": "pain", "year": 2009})[0].numpy(), by_hand(pain), atol=1e-6
    )
    query = spec["query_blend"] * np.eye(n_topics)[1] + (1 - spec["query_blend"]) * corpus
    np.testing.assert_allclose(
        metadata_vector(atlas, {"topics": {1: 2.0}, "year": 2009})[0].numpy(), by_hand(query), atol=1e-6
    )
    assert spec["grid_shape"] == [46, 55, 46] and np.allclose(spec["affine"], Grid(4).affine)


# ---- tables -----------------------------------------------------------------------------------


def test_columns_are_described_by_name_or_by_family() -> None:
    assert describe_column("latents", "z_07") == ("latent sd", "posterior mean of latent unit 07")
    unit, meaning = describe_column("per_study", "reconstruction_nearest_training_study_chamfer_mm")
    assert unit == "mm" and meaning.startswith("reconstruction by nearest training study: Chamfer")
    with pytest.raises(KeyError, match="'latents'.*'mystery'"):
        describe_column("latents", "mystery")
    frames = {"a": pd.DataFrame({"id": ["1"], "mystery": [1]}), "b": pd.DataFrame({"riddle": [2]})}
    with pytest.raises(KeyError, match=r"a\.mystery, b\.riddle"):
        data_dictionary(frames)


def test_tables_are_written_as_csv_and_parquet_with_a_dictionary(tmp_path: Path) -> None:
    latents = pd.DataFrame({"id": ["10", "11"], "split": ["test", "train"], "z_00": [0.5, -1.25]})
    clusters = pd.DataFrame({"cluster": [0, 1], "top_topics": [["pain", "heat"], ["faces"]]})
    dictionary = export_tables({"latents": latents, "clusters": clusters}, tmp_path)

    assert list(dictionary["column"]) == ["id", "split", "z_00", "cluster", "top_topics"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "latents.parquet"), latents)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "latents.csv", dtype={"id": str}), latents)
    assert pd.read_csv(tmp_path / "clusters.csv")["top_topics"].tolist() == ["pain; heat", "faces"]
    assert pd.read_csv(tmp_path / "data_dictionary.csv").shape == (5, 5)


# ---- checksums, README, archive ---------------------------------------------------------------


def make_release(folder: Path) -> Path:
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "m.onnx").write_bytes(b"\x08\x01graph")
    (folder / "notes.json").write_text('{"r": 0.5}')
    return folder


def test_checksums_verify_with_sha256sum_and_catch_a_changed_file(tmp_path: Path) -> None:
    release = make_release(tmp_path / "quick")
    write_checksums(release)
    assert verify_checksums(release) == []
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=release, check=True)
    (release / "notes.json").write_text('{"r": 0.9}')
    assert verify_checksums(release) == ["notes.json"]


def test_archive_is_reproducible_and_holds_the_checksums(tmp_path: Path) -> None:
    release = make_release(tmp_path / "quick")
    write_release_readme(release, {"onnx": "graphs", "notes.json": "results"}, "# test release")
    write_checksums(release)
    first = archive(release, tmp_path / "a.tar.gz").read_bytes()
    (release / "notes.json").touch()  # a new mtime must not change the archive
    second = archive(release, tmp_path / "b.tar.gz").read_bytes()
    assert first == second
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = tar.getnames()
    assert names == ["quick/README.md", "quick/notes.json", "quick/onnx/m.onnx", "quick/SHA256SUMS"]
    readme = (release / "README.md").read_text()
    assert "| `onnx/m.onnx` | 7 | graphs |" in readme and gzip.decompress(first)


def test_readme_refuses_a_file_without_a_description(tmp_path: Path) -> None:
    release = make_release(tmp_path / "quick")
    with pytest.raises(KeyError, match="notes.json"):
        write_release_readme(release, {"onnx": "graphs"}, "# test")


# ---- the examples outside Python ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AtlasModel]:
    """A release folder holding what the examples read: the cbvae decoder, the metadata spec, tables, a map."""
    release = tmp_path_factory.mktemp("release")
    atlas = tiny_atlas("cbvae", seed=5)
    with torch.no_grad():  # a prior that moves with the metadata, as a trained one does
        for parameter in atlas.network.prior_net.parameters():
            parameter.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(5))
    exported = export_model_onnx(atlas, release / "onnx", "cbvae")
    assert list(exported) == ["encoder", "decoder", "prior"]
    assert exported["prior"]["outputs"] == ["mu", "logvar"] and exported["prior"]["max_abs_difference"] < 1e-5
    (release / "metadata_encoder.json").write_text(json.dumps(metadata_encoder_spec(atlas)))
    assignments = pd.DataFrame(
        {
            "id": ["1", "2", "3", "4", "5"],
            "cluster": [0, 0, 1, -1, 1],
            "probability": [1.0, 0.9, 0.8, 0.0, 1.0],
            "year": [2004, 2004, 2010, 2012, 2010],
            "task_category": ["pain", "pain", "working_memory", "emotion", "working_memory"],
        }
    )
    export_tables({"clustering_assignments": assignments}, release / "tables")
    (release / "nifti" / "examples").mkdir(parents=True)
    atlas.to_nifti(atlas.decode(torch.zeros(1, 4), {"task": "working_memory"})[0]).to_filename(
        release / "nifti" / "examples" / "working_memory.nii.gz"
    )
    write_checksums(release)
    return release, atlas


@pytest.mark.slow
def test_shell_example_reads_the_csv_and_nifti_files(small_release) -> None:
    release, _ = small_release
    script = ROOT / "examples" / "shell" / "query_release.sh"
    out = subprocess.run(["bash", str(script), str(release)], capture_output=True, text=True, check=True).stdout
    assert "all " in out and "files match SHA256SUMS" in out
    assert "cluster 0: 2 studies, most often pain (2)" in out
    assert "cluster -1: 1 studies, most often emotion (1)" in out
    assert "2010: 2 studies in cluster 1" in out
    assert "grid 46 x 55 x 46 voxels of 4 mm" in out


@pytest.mark.slow
def test_node_example_generates_the_map_pytorch_generates(small_release, tmp_path: Path) -> None:
    node_dir = ROOT / "examples" / "node"
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (node_dir / "node_modules" / "onnxruntime-node").is_dir():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed")
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir, capture_output=True, text=True
        )
        if installed.returncode != 0:  # e.g. no npm registry reachable: say so rather than fail the suite
            pytest.skip(f"npm ci could not install onnxruntime-node: {installed.stderr.strip()[-300:]}")
    release, atlas = small_release
    output = tmp_path / "pain_2009.nii"
    subprocess.run(
        ["node", "generate.mjs", str(release), "pain", "2009", str(output)], cwd=node_dir, check=True, timeout=120
    )
    image = nib.load(output)
    # The prior mean mu(m), decoded: what AtlasModel.generate gives.
    expected = atlas.generate({"task": "pain", "year": 2009})[0, -1].numpy()
    np.testing.assert_allclose(image.get_fdata(), expected, atol=1e-5, rtol=0)
    assert np.allclose(image.affine, Grid(4).affine) and image.header.get_sform(coded=True)[1] == 4
    subprocess.run(
        ["node", "generate.mjs", str(release), "topics:1=2", "2009", str(output)], cwd=node_dir, check=True, timeout=120
    )
    expected = atlas.generate({"topics": {1: 2.0}, "year": 2009})[0, -1].numpy()
    np.testing.assert_allclose(nib.load(output).get_fdata(), expected, atol=1e-5, rtol=0)
    bad = subprocess.run(
        ["node", "generate.mjs", str(release), "juggling", "2009", str(output)], cwd=node_dir, capture_output=True
    )
    assert bad.returncode != 0 and "unknown task" in bad.stderr.decode()


def test_release_tables_and_stage_files_are_gathered_by_stage_folder(tmp_path: Path) -> None:
    processed, results = tmp_path / "processed", tmp_path / "results"
    (results / "cca").mkdir(parents=True)
    processed.mkdir()
    pd.DataFrame({"id": ["1"]}).to_parquet(processed / "studies.parquet")
    pd.DataFrame({"r": [0.5]}).to_parquet(results / "cca" / "shared_dimensions.parquet")
    (results / "cca" / "results.json").write_text("{}")
    (results / "cca" / "variate_1.nii.gz").write_bytes(b"x")
    tables = release_tables(processed, results)
    assert list(tables) == ["studies", "cca_shared_dimensions"] and tables["cca_shared_dimensions"]["r"].item() == 0.5
    copied = copy_tree_files(results, tmp_path / "release" / "nifti", "*.nii.gz")
    assert copied == [tmp_path / "release" / "nifti" / "cca" / "variate_1.nii.gz"] and copied[0].read_bytes() == b"x"
