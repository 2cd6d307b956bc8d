"""Training runs, resume, determinism, the inference API and checkpoint safety."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_project

from sematlas.core.errors import CheckpointError
from sematlas.core.params import Params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.training.run import fingerprint, make_datamodule, train_variant

pytestmark = pytest.mark.slow  # every test here trains a model


@pytest.fixture
def tiny(processed: Path, tmp_path: Path) -> tuple[Params, ProfilePaths]:
    """ci parameters shrunk further, and a project whose processed folder is the NiMARE sample."""
    return tiny_project(processed, tmp_path)


def test_a_run_writes_its_files_and_a_rerun_reuses_it(tiny):
    params, paths = tiny
    run = train_variant(params, "baseline", paths)
    assert run.best_checkpoint.is_file() and run.last_checkpoint.is_file() and not run.resumed
    for name in ("params.yaml", "splits.parquet", "versions.json", "fingerprint.json", "train.log", "timing.json"):
        assert (run.run_dir / name).is_file(), name
    assert "training baseline on profile ci (from scratch)" in (run.run_dir / "train.log").read_text()
    assert list(run.metrics["epoch"]) == [0] and np.isfinite(run.metrics["val/loss"]).all()
    assert run.timing["epochs"] == 1 and run.timing["studies_per_second"] > 0
    # Recon snapshots of the first validation studies after every epoch (ci: every 1, 2 studies).
    recon = sorted((run.run_dir / "recon" / "epoch_000").glob("study_*.png"))
    n_val = len(pd.read_parquet(run.run_dir / "splits.parquet").query("split == 'val'"))
    assert len(recon) == min(params["training"]["num_recon_samples"], n_val) > 0
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in recon)
    again = train_variant(params, "baseline", paths)
    assert again.resumed and again.timing["epochs"] == 1  # nothing left to train


def test_same_seed_same_metrics(tiny, tmp_path):
    params, paths = tiny
    first = train_variant(params, "cbvae", paths).metrics
    other = ProfilePaths("ci", tmp_path / "again")
    shutil.copytree(paths.processed, other.processed)
    second = train_variant(params, "cbvae", other).metrics
    first_val, second_val = first.filter(like="val/").to_numpy(), second.filter(like="val/").to_numpy()
    # Something to compare: every epoch's validation metrics, all finite (so no NaN can match a NaN).
    assert first_val.shape == second_val.shape and first_val.size > 0 and "val/loss" in first
    assert np.isfinite(first_val).all()
    assert np.array_equal(first_val, second_val)


class _KillAfterFirstEpoch(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")


def test_a_killed_run_resumes_from_last_checkpoint(tiny):
    params, paths = tiny
    params = override_params(params, {"training": {"max_epochs": 2}})
    with pytest.raises(RuntimeError, match="killed"):
        train_variant(params, "tcvae_sbd", paths, extra_callbacks=[_KillAfterFirstEpoch()])
    assert (paths.models / "tcvae_sbd" / "checkpoints" / "last.ckpt").is_file()
    run = train_variant(params, "tcvae_sbd", paths)
    assert run.resumed and list(run.metrics["epoch"]) == [0, 1]


def test_changed_parameters_start_afresh(tiny):
    params, paths = tiny
    train_variant(params, "baseline", paths)
    changed = override_params(params, {"training": {"lr": 0.01}})
    assert fingerprint(changed, "baseline") != fingerprint(params, "baseline")
    assert not train_variant(changed, "baseline", paths).resumed


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tiny):
    params, paths = tiny
    # lr = 0 and a constant beta: the validation loss cannot improve after the first epoch.
    params = override_params(params, {"training": {"lr": 0.0, "beta_schedule": "constant", "max_epochs": 2}})
    run = train_variant(params, "baseline", paths)
    assert run.metrics["val/loss"].nunique() == 1
    last = torch.load(run.last_checkpoint, map_location="cpu", weights_only=False)
    best = torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)
    assert (last["epoch"], best["epoch"]) == (1, 0)


def test_more_epochs_continue_the_same_run(tiny):
    params, paths = tiny
    first = train_variant(params, "baseline", paths)
    longer = override_params(params, {"training": {"max_epochs": params.training.max_epochs + 1}})
    assert fingerprint(longer, "baseline") == fingerprint(params, "baseline")
    extended = train_variant(longer, "baseline", paths)
    assert extended.resumed and extended.metrics["epoch"].max() == first.metrics["epoch"].max() + 1


def test_a_variant_s_own_budget_comes_from_variant_epochs(tiny):
    params, paths = tiny
    budget = override_params(params, {"training": {"variant_epochs": {"baseline": params.training.max_epochs + 1}}})
    # A budget is not what the weights depend on: the run continues, it is not a new one.
    assert fingerprint(budget, "baseline") == fingerprint(params, "baseline")
    run = train_variant(budget, "baseline", paths)
    assert run.metrics["epoch"].max() + 1 == params.training.max_epochs + 1
    # A named run (an ensemble member, an ablation) keeps the budget it was given.
    named = train_variant(budget, "baseline", paths, run_name="named/baseline")
    assert named.metrics["epoch"].max() + 1 == params.training.max_epochs


@pytest.fixture
def trained(tiny):
    params, paths = tiny
    return train_variant(params, "cbvae", paths), make_datamodule(params, paths)


def test_inference_api(trained):
    run, datamodule = trained
    atlas = AtlasModel.load(run.best_checkpoint)
    assert atlas.variant == "cbvae" and atlas.is_conditional and atlas.grid.shape == (46, 55, 46)
    batch = datamodule.render_rows("test", [0, 1])
    z = atlas.encode(batch["image"], batch["meta"])
    assert z.shape == (2, 4)
    maps = atlas.decode(z, [{"task": "emotion", "year": 2010}, {"task": "pain"}])
    assert maps.shape == (2, 2, 46, 55, 46)
    assert maps[:, :, ~torch.from_numpy(atlas.grid.mask())].abs().sum() == 0
    emotion = atlas.generate({"task": "emotion", "year": 2010, "sample_size": 20})
    memory = atlas.generate({"task": "working_memory", "year": 2010, "sample_size": 20})
    assert not torch.equal(emotion, memory)  # the conditioning reaches the decoder
    sweep = atlas.traverse(
        z[0], {key: value[:1] for key, value in batch["meta"].items()}, dim=1, values=[-2.0, float(z[0, 1]), 2.0]
    )
    assert sweep.shape == (3, 2, 46, 55, 46)
    assert torch.allclose(sweep[1], atlas.decode(z[:1], {k: v[:1] for k, v in batch["meta"].items()})[0], atol=1e-6)
    assert not torch.allclose(sweep[0], sweep[2])
    image = atlas.to_nifti(maps[0])
    assert image.shape == (46, 55, 46) and np.allclose(image.affine, atlas.grid.affine)


def test_inference_api_rejects_bad_metadata(trained):
    atlas = AtlasModel.load(trained[0].best_checkpoint)
    z = torch.zeros(1, 4)
    with pytest.raises(ValueError, match=r"unknown task category 'dreaming'; allowed: .*working_memory"):
        atlas.decode(z, {"task": "dreaming"})
    with pytest.raises(ValueError, match=r"year 2031 is outside .*1997-2018"):
        atlas.decode(z, {"task": "pain", "year": 2031})
    with pytest.raises(ValueError, match=r"unknown metadata key 'n_subjects'"):
        atlas.decode(z, {"task": "pain", "n_subjects": 12})
    with pytest.raises(ValueError, match="is conditional: pass metadata"):
        atlas.decode(z)


def test_checkpoint_loading_cannot_silently_go_wrong(trained, tmp_path):
    checkpoint = trained[0].best_checkpoint
    with pytest.raises(
        CheckpointError, match=r"trained on the \(46, 55, 46\) grid at 4 mm .* not the \(91, 109, 91\) grid at 2 mm"
    ):
        AtlasModel.load(checkpoint, voxel_size=2)
    state = torch.load(checkpoint, weights_only=False)
    # A network weight renamed: one missing, one unexpected (the training module's own buffers are not the network's).
    removed = next(key for key in state["state_dict"] if key.startswith("model."))
    state["state_dict"]["model.extra.weight"] = state["state_dict"].pop(removed)
    tampered = tmp_path / "tampered.ckpt"
    torch.save(state, tampered)
    with pytest.raises(
        CheckpointError, match=rf"missing keys: \['{removed}'\]; unexpected keys: \['model.extra.weight'\]"
    ):
        AtlasModel.load(tampered)
    del state["sematlas"]
    torch.save(state, tampered)
    with pytest.raises(CheckpointError, match="not written by sematlas.training.run"):
        AtlasModel.load(tampered)
