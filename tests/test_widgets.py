"""The interactive demos, driven headless: set a control, check the maps, the masks and the files.

The models are untrained but complete (random weights, a fitted metadata encoder), built
in memory in seconds (``tiny_models.tiny_atlas``), with a synthetic study table; the
pipeline's ``ci`` outputs are not needed (``./run_all.sh test`` runs pytest before the pipeline).
"""

from __future__ import annotations

import json
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
from sematlas.inference.pointcloud import PointCloudModel
from sematlas.models.pointcloud import PointCloudConfig, PointCloudVAE
from sematlas.widgets import (
    REDRAW_BUDGET_MS,
    ConfidenceExplorer,
    CounterfactualMachine,
    DiscoveryPlatform,
    LatentSlider,
    StudyCatalogue,
)
from sematlas.widgets.serve import DEMOS, demo_source, write_demo_notebook

ROOT = Path(__file__).resolve().parents[1]
N_STUDIES = 12


def tiny_tables(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic studies (ids ``s00``...) with 3-8 peaks each inside the 4 mm brain mask."""
    rng = np.random.default_rng(seed)
    grid = Grid(4)
    studies = pd.DataFrame(
        {
            "id": [f"s{k:02d}" for k in range(N_STUDIES)],
            "title": [f"Study {k} of {CATEGORIES[k % 4].replace('_', ' ')}" for k in range(N_STUDIES)],
            "year": np.arange(2000, 2000 + N_STUDIES),
            "task_category": [CATEGORIES[k % 4] for k in range(N_STUDIES)],
            "n_peaks": rng.integers(3, 9, N_STUDIES),
            "space": "MNI",
            "sample_size": [np.nan, 20.0, 30.0] * (N_STUDIES // 3),
            "in_subset": True,
            "subset_split": ["train"] * 8 + ["val"] * 2 + ["test"] * 2,
        }
    )
    inside = np.argwhere(grid.mask())
    rows = []
    for study in studies.itertuples():
        ijk = inside[rng.choice(len(inside), study.n_peaks, replace=False)]
        for x, y, z in nib.affines.apply_affine(grid.affine, ijk):
            rows.append({"id": study.id, "table_id": 1, "x": x, "y": y, "z": z})
    return studies, pd.DataFrame(rows)


def tiny_cbvae(seed: int, aleatoric: bool = False) -> AtlasModel:
    """``tiny_atlas("cbvae")`` whose conditioning acts: FiLM layers start as the identity (zero output
    weights), so an untrained model would decode every task alike; give them random weights."""
    atlas = tiny_atlas("cbvae", seed=seed, aleatoric=aleatoric)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in atlas.network.named_parameters():
            if ".film." in f".{name}" or "_film." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return atlas


def tiny_pointcloud(cond_dim: int, encoder, seed: int = 0) -> PointCloudModel:
    torch.manual_seed(seed)
    config = PointCloudConfig(
        n_points=16,
        cond_dim=cond_dim,
        fourier_features=4,
        fourier_sigma=1.0,
        sa_npoint=(8, 4),
        sa_radius=(0.4, 0.8),
        sa_nsample=(4, 4),
        sa_channels=(8, 16),
        global_channels=16,
        decoder_hidden=(16,),
        z_dim=3,
    )
    payload = {"variant": "pointcloud", "centre_mm": [0.0, -18.0, 18.0], "scale_mm": 80.0, "n_points": 16}
    return PointCloudModel(PointCloudVAE(config), encoder, payload)


def write_tiny_profile(root: Path, profile: str = "ci") -> None:
    """A profile's processed tables and a ``cbvae`` checkpoint (random weights) under a scratch project ``root``."""
    studies, peaks = tiny_tables()
    processed = root / "data" / "processed" / profile
    processed.mkdir(parents=True)
    studies.to_parquet(processed / "studies.parquet")
    peaks.to_parquet(processed / "peaks.parquet")
    atlas = tiny_cbvae(seed=0)
    checkpoint = root / "data" / "models" / profile / "cbvae" / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    payload = {**atlas.payload, "profile": profile, "metadata_encoder": atlas.encoder.to_dict()}
    state = {
        "sematlas": payload,
        "hyper_parameters": atlas.hparams,
        "state_dict": {f"model.{name}": tensor for name, tensor in atlas.network.state_dict().items()},
    }
    torch.save(state, checkpoint)


@pytest.fixture(scope="module")
def catalogue() -> StudyCatalogue:
    studies, peaks = tiny_tables()
    return StudyCatalogue(studies, peaks, PeakRenderer(Grid(4), fwhms=(6.0, 12.0)))


@pytest.fixture(scope="module")
def atlas() -> AtlasModel:
    return tiny_cbvae(seed=0)


# ---- catalogue --------------------------------------------------------------------------------


def test_catalogue_searches_titles_ids_and_tasks_and_renders_a_study(catalogue: StudyCatalogue) -> None:
    assert catalogue.search("working memory").index.tolist() == ["s02", "s06", "s10"]
    assert catalogue.search("1", task="pain").index.tolist() == ["s01"]
    assert catalogue.search(task="emotion").index.tolist() == ["s00", "s04", "s08"]
    request = catalogue.request("s00")
    assert request["task"] == "emotion" and request["sample_size"] is None and request["year"] == 2000
    image = catalogue.render("s01")
    assert image.shape == (1, 2, *Grid(4).shape) and float(image.max()) == pytest.approx(1.0)


# ---- Counterfactual Machine --------------------------------------------------------------------


def test_counterfactual_machine_changes_the_map_with_the_task(atlas, catalogue) -> None:
    demo = CounterfactualMachine(atlas, catalogue)
    assert demo.study_id == "s02"  # the first working-memory study
    assert "Counterfactual Machine" in demo.header.value and "built in memory" in demo.header.value
    np.testing.assert_array_equal(demo.counterfactual, demo.original)  # own metadata: nothing changed
    first_image = demo.image.value

    demo.set_task("emotion")
    assert demo.controls.task.value == "emotion"
    assert np.abs(demo.counterfactual - demo.original).max() > 0
    np.testing.assert_array_equal(demo.difference, demo.counterfactual - demo.original)
    assert demo.image.value != first_image and "after task" in demo.status.value
    emotion = demo.counterfactual.copy()
    demo.set_task("working_memory")
    assert np.abs(demo.counterfactual - emotion).max() > 0
    demo.set_year(2017)
    demo.set_sample_size(120)
    request = demo.counterfactual_request
    assert (request["year"], request["sample_size"], request["task"]) == (2017, 120.0, "working_memory")
    assert np.isfinite(demo.counterfactual).all() and np.abs(demo.difference).max() > 0
    assert np.all(demo.counterfactual[:, ~Grid(4).mask()] == 0)  # nothing outside the brain

    demo.reset()
    np.testing.assert_array_equal(demo.counterfactual, demo.original)
    assert demo.controls.request == {"task": "working_memory", "year": 2002, "sample_size": 30.0}


def test_counterfactual_machine_keeps_the_code_of_each_study(atlas, catalogue) -> None:
    demo = CounterfactualMachine(atlas, catalogue, initial_study="s00")
    demo.set_task("other")
    demo.select_study("s05")
    assert demo.picker.study.value == "s05"
    assert demo.controls.request == {"task": "pain", "year": 2005, "sample_size": 30.0}  # the study's own
    expected = atlas.decode(atlas.encode(catalogue.render("s05"), catalogue.request("s05")), catalogue.request("s05"))
    np.testing.assert_allclose(demo.original, expected[0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="conditional"):
        CounterfactualMachine(tiny_atlas("tcvae_sbd", seed=0), catalogue)


def test_counterfactual_export_round_trips_through_nifti(atlas, catalogue, tmp_path: Path) -> None:
    demo = CounterfactualMachine(atlas, catalogue)
    demo.set_task("pain")
    path = demo.export_nifti(tmp_path / "cf.nii.gz")
    image = nib.load(path)
    np.testing.assert_allclose(image.get_fdata(), demo.counterfactual[-1], atol=1e-7)
    np.testing.assert_allclose(image.affine, Grid(4).affine)
    demo.export_button.click()
    assert 'download="counterfactual_s02_pain_2002.nii.gz"' in demo.download.value


def test_redraws_are_cached_and_fast(atlas, catalogue) -> None:
    demo = CounterfactualMachine(atlas, catalogue)
    demo.set_task("pain")
    misses = demo.cache.misses
    demo.set_task("working_memory")
    demo.set_task("pain")
    assert demo.cache.misses == misses  # both conditionings were decoded before
    table = demo.latency(repeats=3)
    assert list(table.index) == ["task", "year", "sample_size"] and (table["n"] == 3).all()
    # Tiny models: far under the budget even on a busy CI machine.
    assert (table["median_ms"] < 5 * REDRAW_BUDGET_MS).all()


# ---- Latent Slider -----------------------------------------------------------------------------


def test_latent_slider_moves_one_dimension_and_resets_exactly(atlas, catalogue, tmp_path: Path) -> None:
    demo = LatentSlider(atlas, catalogue, activity=[0.1, 3.0, 0.5, 2.0], top_k=2, initial_study="s03")
    assert demo.dims == [1, 3] and list(demo.sliders) == [1, 3]
    original = demo.original.copy()
    np.testing.assert_array_equal(demo.decoded, original)
    code = demo.study_code.clone()

    demo.set_latent(3, float(code[3]) + 2.0)
    assert torch.equal(demo.code[[0, 1, 2]], code[[0, 1, 2]]) and float(demo.code[3]) == pytest.approx(code[3] + 2.0)
    assert np.abs(demo.decoded - original).max() > 0
    path = demo.export_nifti(tmp_path / "slider.nii.gz")
    np.testing.assert_allclose(nib.load(path).get_fdata(), demo.decoded[-1], atol=1e-7)

    demo.reset()
    assert torch.equal(demo.code, code)
    np.testing.assert_array_equal(demo.decoded, original)
    with pytest.raises(KeyError, match="no slider"):
        demo.set_latent(0, 1.0)


# ---- Confidence Explorer -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def explorer(catalogue) -> ConfidenceExplorer:
    members = [tiny_cbvae(seed=k, aleatoric=True) for k in (1, 2)]
    ensemble = AtlasEnsemble(members)
    pointcloud = tiny_pointcloud(members[0].encoder.cond_dim, members[0].encoder)
    codes = pd.DataFrame({"id": ["s00", "s01"], "z_00": [0.5, -1.0], "z_01": [0.0, 1.0], "z_02": [1.0, 0.0]})
    return ConfidenceExplorer(ensemble, catalogue, pointcloud, codes, initial_study="s01")


def test_confidence_explorer_threshold_masks_the_expected_voxels(explorer: ConfidenceExplorer) -> None:
    mask = Grid(4).mask()
    explorer.set_layer("epistemic")
    explorer.set_threshold(80)
    sd = explorer.layer_sd()
    expected = (sd > np.percentile(sd[mask], 80)) & mask
    np.testing.assert_array_equal(explorer.uncertainty_mask, expected)
    assert 0.1 < expected.sum() / mask.sum() < 0.25  # about the top fifth of the brain
    explorer.set_threshold(0)
    assert explorer.uncertainty_mask.sum() > expected.sum()
    explorer.set_layer("aleatoric")
    p = explorer.prediction
    np.testing.assert_allclose(explorer.layer_sd(), p.aleatoric[0, -1].sqrt().numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        explorer.layer_sd("total") ** 2, (p.aleatoric + p.epistemic)[0, -1].numpy(), rtol=1e-5, atol=1e-12
    )


def test_confidence_explorer_conditions_both_views(explorer: ConfidenceExplorer) -> None:
    explorer.reset()
    mean, points = explorer.prediction.mean.clone(), explorer.points.copy()
    assert points.shape == (16, 3)
    explorer.set_task("emotion" if explorer.controls.task.value != "emotion" else "pain")
    assert (explorer.prediction.mean - mean).abs().max() > 0
    assert np.abs(explorer.points - points).max() > 0
    explorer.select_study("s05")  # no point-cloud code: decodes the prior mean
    assert explorer.points.shape == (16, 3) and np.isfinite(explorer.points).all()
    explorer.show_3d.value = True
    assert "<iframe" in explorer.view_3d.value
    explorer.show_3d.value = False
    assert explorer.view_3d.value == ""


# ---- Discovery Platform ------------------------------------------------------------------------


def write_tiny_results(folder: Path, grid: Grid) -> None:
    """Outputs of stages 05, 07 and 08 in the layout they write, with small made-up numbers."""
    clustering = folder / "clustering"
    clustering.mkdir(parents=True)
    ids = [f"s{k:02d}" for k in range(N_STUDIES)]
    labels = [0, 0, 1, 1, 1, -1, 0, 1, -1, 0, 1, 1]
    pd.DataFrame(
        {
            "id": ids,
            "cluster": labels,
            "probability": np.linspace(1.0, 0.45, N_STUDIES),
            "year": np.arange(2000, 2000 + N_STUDIES),
            "task_category": [CATEGORIES[k % 4] for k in range(N_STUDIES)],
            "split": "train",
        }
    ).to_parquet(clustering / "assignments.parquet")
    pd.DataFrame(
        {
            "cluster": [0, 1],
            "name": ["C0: pain · heat", "C1: memory · faces"],
            "size": [4, 6],
            "top_topics": [["pain heat", "touch"], ["memory", "faces"]],
            "top_topic_lifts": [[3.0, 2.0], [2.5, 1.5]],
            "top_tasks": [["pain"], ["working_memory", "emotion"]],
            "top_task_shares": [[0.75], [0.5, 0.33]],
        }
    ).to_parquet(clustering / "clusters.parquet")
    for k in (0, 1):
        volume = np.zeros(grid.shape, dtype=np.float32)
        volume[20 + 4 * k, 30, 25] = 1.0
        grid.to_nifti(volume).to_filename(clustering / f"centroid_{k}.nii.gz")
    (folder / "hierarchical").mkdir()
    hierarchy = {
        "top_lower_abs_correlation": [[0.1, 0.5, 0.2], [0.7, 0.0, 0.3]],
        "category_profile": {c: {"top_00": 0.1 * k, "top_01": -0.1 * k} for k, c in enumerate(CATEGORIES)},
    }
    gate = {"result": "PASS", "passed": 4, "criteria": {"a": {}, "b": {}, "c": {}, "d": {}}}
    (folder / "hierarchical" / "results.json").write_text(json.dumps({"hierarchy": hierarchy, "gate": gate}))
    forecasting = folder / "forecasting"
    forecasting.mkdir()
    years = np.arange(2000, 2012)
    pd.DataFrame({"group": "all", "year": years, "n": np.ones(len(years), int)}).to_parquet(
        forecasting / "yearly_series.parquet"
    )
    pd.DataFrame(
        {"year": [2011, 2011], "n": [1, 1], "method": ["gru", "persistence"], "frechet": [0.5, 0.7], "mean_term": 0.1}
    ).to_parquet(forecasting / "frechet_by_year.parquet")
    for year in (2002, 2010):
        volume = np.zeros(grid.shape, dtype=np.float32)
        volume[23, 27, 23] = year - 2000
        grid.to_nifti(volume).to_filename(forecasting / f"drift_working_memory_{year}_mean.nii.gz")


def test_discovery_platform_shows_a_clusters_members_and_the_timeline(tmp_path: Path) -> None:
    grid = Grid(4)
    write_tiny_results(tmp_path / "results", grid)
    studies, _ = tiny_tables()
    demo = DiscoveryPlatform(tmp_path / "results", None, grid, studies)

    demo.select_cluster(1)
    members = demo.members(1)
    assert members["id"].tolist() == ["s02", "s03", "s04", "s07", "s10", "s11"]  # most confident first
    assert members["title"].iloc[0] == "Study 2 of working memory"
    assert "s07" in demo.cluster_members.value and "s00" not in demo.cluster_members.value
    assert "C1: memory · faces" in demo.cluster_info.value and demo.cluster_image.value
    assert 'download="centroid_1.nii.gz"' in demo.cluster_download.value

    demo.set_year(2009)
    assert "nearest modelled year 2010" in demo.year_info.value
    demo.set_year(2011)
    assert "Fréchet" in demo.year_info.value and demo.timeline_image.value
    files = demo.downloadable()
    assert tmp_path / "results" / "clustering" / "centroid_0.nii.gz" in files
    assert f'download="{files[0].name}"' in demo.prepare_download(files[0])


def test_discovery_platform_names_the_stages_that_have_not_run(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    demo = DiscoveryPlatform(tmp_path / "results", None, Grid(4))
    texts = [child.value for child in demo.tabs.children]
    assert "Stage 07 (clustering) has not been run" in texts[0]
    assert "Stage 05" in texts[1] and "Stage 08" in texts[2] and "Stage 10" in texts[3]
    with pytest.raises(FileNotFoundError, match="stage 07"):
        demo.members(0)


# ---- notebooks and serving ---------------------------------------------------------------------


@pytest.mark.parametrize("demo", DEMOS)
def test_demo_notebooks_get_the_profile_injected(demo: str, tmp_path: Path) -> None:
    source = demo_source(demo).read_text()
    assert source.count('tags=["parameters"]') == 1 and 'profile = "quick"' in source
    target = write_demo_notebook(demo, "ci", tmp_path / f"{demo}.ipynb")
    notebook = json.loads(target.read_text())
    tags = [cell["metadata"].get("tags", []) for cell in notebook["cells"]]
    injected = tags.index(["injected-parameters"])
    assert tags[injected - 1] == ["parameters"]
    assert 'profile = "ci"' in "".join(notebook["cells"][injected]["source"])
    assert "jupytext" not in notebook["metadata"]


def test_profile_demo_loads_a_checkpoint_and_names_it(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_profile(project, "ci")
    monkeypatch.setenv("SEMATLAS_ROOT", str(project))
    demo = CounterfactualMachine.from_profile("ci")
    assert "data/models/ci/cbvae/checkpoints/best.ckpt" in demo.header.value
    assert "profile <b>ci</b>" in demo.header.value and len(demo.catalogue.ids) == N_STUDIES
    with pytest.raises(FileNotFoundError, match="train the 'quick' profile first"):
        LatentSlider.from_profile("quick")
