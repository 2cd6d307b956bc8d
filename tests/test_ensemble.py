"""Deep-ensemble uncertainty: Gaussian NLL, aleatoric head, ensemble moments, calibration, OOD, AtlasEnsemble."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from sematlas.core.errors import CheckpointError
from sematlas.core.io import read_json, sha256_file
from sematlas.core.params import load_params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.evaluation.uncertainty import (
    CALIBRATION_LEVELS,
    TemperatureScaling,
    evaluate_ensemble,
    expected_calibration_error,
    interval_coverage,
    ood_auroc,
    ood_peak_lists,
    ood_scores,
    render_peak_lists,
    shift_to_white_matter,
    split_peak_lists,
    uniform_brain_peaks,
)
from sematlas.inference.atlas import AtlasModel
from sematlas.inference.ensemble import AtlasEnsemble, combine
from sematlas.models import ModelConfig, build_model, config_from_dict
from sematlas.models.blocks import LOGVAR_MAX, LOGVAR_MIN
from sematlas.models.losses import gaussian_nll_sum, masked_mse_sum
from sematlas.models.registry import MAIN_VARIANT
from sematlas.training import ensemble as ensemble_training
from sematlas.training.ensemble import (
    InitialWeights,
    ensemble_params,
    initial_weights,
    main_checkpoint,
    train_snapshot_ensemble,
)
from sematlas.training.run import TrainedRun, build_module, make_datamodule, train_variant

COND_DIM = 5


def tiny_cbvae(**overrides) -> ModelConfig:
    values = dict(variant="cbvae", base_channels=4, z_dim=8, cond_dim=COND_DIM, growth_rate=4, hidden_dim=16)
    return config_from_dict(values | overrides)


def random_batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    meta = {
        "cond": torch.randn(n, COND_DIM, generator=g),
        "sparse": torch.randn(n, 1, generator=g),
        "sparse_mask": torch.arange(n)[:, None] % 2 == 0,
        "year_bin": torch.randint(0, 10, (n,), generator=g),
    }
    return torch.rand(n, 2, 48, 48, 48, generator=g), meta


# ---- Gaussian NLL and the aleatoric head ---------------------------------------------------------


def test_gaussian_nll_matches_torch_and_the_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    x, mean = torch.rand(3, 2, 6, 5, 4, generator=g), torch.rand(3, 2, 6, 5, 4, generator=g)
    logvar = torch.randn(3, 2, 6, 5, 4, generator=g)
    mask = torch.rand(6, 5, 4, generator=g) > 0.4
    expected = F.gaussian_nll_loss(mean, x, logvar.exp(), full=True, reduction="sum") / 3
    torch.testing.assert_close(gaussian_nll_sum(x, mean, logvar), expected)
    inside = (slice(None), slice(None), mask)
    expected_masked = F.gaussian_nll_loss(mean[inside], x[inside], logvar.exp()[inside], full=True, reduction="sum") / 3
    torch.testing.assert_close(gaussian_nll_sum(x, mean, logvar, mask), expected_masked)
    # Closed form with unit variance: 0.5 * (SE + log 2 pi * n_voxels) per study.
    closed = 0.5 * (masked_mse_sum(mean, x, mask) + math.log(2 * math.pi) * 2 * int(mask.sum()))
    torch.testing.assert_close(gaussian_nll_sum(x, mean, torch.zeros_like(logvar), mask), closed)


def test_aleatoric_head_shapes_bounds_and_objective() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cbvae(aleatoric=True)).eval()
    image, meta = random_batch()
    with torch.no_grad():
        out = model(image, meta)
    assert out["x_logvar"].shape == out["x_hat"].shape == image.shape
    assert float(out["x_logvar"].min()) > LOGVAR_MIN and float(out["x_logvar"].max()) < LOGVAR_MAX
    mean, logvar = model.decode_distribution(out["z"], out["m"])
    torch.testing.assert_close(mean, model.decode(out["z"], out["m"]), rtol=0, atol=0)
    torch.testing.assert_close(logvar, out["x_logvar"], rtol=0, atol=0)
    terms = model.loss(out, {"image": image, "meta": meta}, {"beta": 1.0, "imputation_weight": 1.0, "year_weight": 1.0})
    torch.testing.assert_close(terms["recon"], gaussian_nll_sum(image, out["x_hat"], out["x_logvar"]))
    torch.testing.assert_close(terms["recon_se"], masked_mse_sum(out["x_hat"], image))

    plain = build_model(tiny_cbvae()).eval()
    assert "x_logvar" not in plain(image, meta) and plain.decoder.out_logvar is None
    with pytest.raises(ValueError, match="no aleatoric head"):
        plain.decode_distribution(out["z"], out["m"])
    with pytest.raises(ValueError, match=r"unknown model config keys \['aleatoric'\] for 'baseline'"):
        config_from_dict({"variant": "baseline", "aleatoric": True})


# ---- ensemble moments ----------------------------------------------------------------------------


def test_epistemic_is_zero_for_identical_members_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    mean, variance = torch.rand(1, 2, 3, 4, 5, 6, generator=g), torch.rand(1, 2, 3, 4, 5, 6, generator=g)
    same = combine(mean.expand(4, *mean.shape[1:]), variance.expand(4, *variance.shape[1:]))
    assert torch.equal(same.epistemic, torch.zeros_like(same.epistemic))
    torch.testing.assert_close(same.mean, mean[0])
    torch.testing.assert_close(same.variance, variance[0])
    differing = combine(torch.rand(4, 2, 3, 4, 5, 6, generator=g), variance.expand(4, *variance.shape[1:]))
    assert bool((differing.epistemic > 0).all())


# ---- calibration ---------------------------------------------------------------------------------


def test_ece_of_calibrated_and_overconfident_gaussians_and_temperature_scaling() -> None:
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 1, 200_000)
    sd = rng.uniform(0.05, 0.3, mean.shape)
    target = mean + sd * rng.standard_normal(mean.shape)
    assert expected_calibration_error(target, mean, sd) < 0.01
    np.testing.assert_allclose(interval_coverage(target, mean, sd), CALIBRATION_LEVELS, atol=0.01)
    overconfident = sd / 3
    before = expected_calibration_error(target, mean, overconfident)
    assert before > 0.25
    scaling = TemperatureScaling().fit(target, mean, overconfident)
    assert scaling.temperature_ == pytest.approx(3.0, rel=0.03)
    assert expected_calibration_error(target, mean, scaling.transform(overconfident)) < 0.01


def test_coverage_counts_the_residuals_inside_each_interval_exactly() -> None:
    rng = np.random.default_rng(1)
    target, mean, sd = rng.uniform(0, 1, (3, 40, 50))
    sd[0, :5] = 0.0  # a zero sd covers a zero residual only
    target[0, :3] = mean[0, :3]
    levels = np.array([0.9, 0.1, 0.5, 0.95])  # any order
    residuals = np.abs(target - mean) / np.where(sd > 0, sd, np.inf)
    residuals[(sd == 0) & (target != mean)] = np.inf
    half_widths = norm.ppf((1 + levels) / 2)
    expected = [(residuals <= width).mean() for width in half_widths]
    np.testing.assert_array_equal(interval_coverage(target, mean, sd, levels), expected)


def test_auroc_on_a_separable_toy() -> None:
    inside, outside = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.9])
    assert ood_auroc(inside, outside) == 1.0
    assert ood_auroc(outside, inside) == 0.0
    assert ood_auroc(np.array([0.1, 0.5]), np.array([0.1, 0.5])) == 0.5


# ---- a tiny trained snapshot ensemble ------------------------------------------------------------


class _WeightsAtStart(pl.Callback):
    """Records the module's tensors when fitting starts (after the callbacks before it) and at the first batch."""

    def __init__(self) -> None:
        self.at_fit_start: dict[str, torch.Tensor] = {}
        self.at_first_batch: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.at_fit_start = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            self.at_first_batch = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _train_snapshots_watched(params, paths, datamodule) -> tuple[TrainedRun, _WeightsAtStart]:
    """:func:`train_snapshot_ensemble` with a :class:`_WeightsAtStart` after its own callbacks."""
    watcher = _WeightsAtStart()

    def watched_train_variant(*args, extra_callbacks, **kwargs):
        return train_variant(*args, extra_callbacks=[*extra_callbacks, watcher], **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ensemble_training, "train_variant", watched_train_variant)
        return train_snapshot_ensemble(params, paths, datamodule), watcher


@pytest.fixture(scope="module")
def snapshots(processed: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny main cbvae (one epoch), then three 1-epoch cosine cycles of the aleatoric member from its weights."""
    params = override_params(
        load_params("ci"),
        {
            "model": {"z_dim": 4, "base_channels": 4, "growth_rate": 4, "hidden_dim": 16},
            "training": {"batch_size": 8},
            "ensemble": {"n_members": 3, "cycle_epochs": 1, "mc_samples": 3},
        },
    )
    paths = ProfilePaths("ci", tmp_path_factory.mktemp("project"))
    shutil.copytree(processed, paths.processed)
    datamodule = make_datamodule(params, paths)
    train_variant(override_params(params, {"training": {"max_epochs": 1}}), MAIN_VARIANT, paths, datamodule=datamodule)
    run, watcher = _train_snapshots_watched(params, paths, datamodule)
    return run, datamodule, params, watcher


@pytest.mark.slow
def test_the_snapshot_run_starts_from_the_main_model(snapshots) -> None:
    run, _, _, watcher = snapshots
    main = torch.load(main_checkpoint(_paths_of(run)), weights_only=False)["state_dict"]
    new = ["model.decoder.out_logvar.bias", "model.decoder.out_logvar.weight"]
    # Before its first step the member holds the main model's every tensor, and only the variance head besides.
    assert sorted(set(watcher.at_first_batch) - set(main)) == new
    for name, value in main.items():
        torch.testing.assert_close(watcher.at_first_batch[name], value, rtol=0, atol=0, msg=name)
    account = initial_weights(run)
    assert account is not None and account["new"] == new and sorted(account["loaded"]) == sorted(main)
    assert account["sha256"] == sha256_file(main_checkpoint(_paths_of(run)))
    log = (run.run_dir / "train.log").read_text()
    assert "InitialWeights: starting from" in log and "from scratch" not in log
    assert f"(starting from the weights of {main_checkpoint(_paths_of(run))})" in log
    # Training moved the inherited weights: the last snapshot is not the main model.
    last = torch.load(run.run_dir / "snapshots" / "snapshot_03.ckpt", weights_only=False)["state_dict"]
    assert any(not torch.equal(last[name], value) for name, value in main.items())


@pytest.mark.slow
def test_a_retrained_main_model_retrains_the_snapshots(snapshots, tmp_path: Path) -> None:
    run, _, params, _ = snapshots
    # A copy of the project, so that the other tests keep their snapshots.
    paths = ProfilePaths("ci", tmp_path / "project")
    shutil.copytree(_paths_of(run).root, paths.root)
    datamodule = make_datamodule(params, paths)
    stamp = paths.models / "ensemble" / "snapshot" / "fingerprint.json"
    before = read_json(stamp)["fingerprint"]

    again, watcher = _train_snapshots_watched(params, paths, datamodule)
    assert again.resumed and read_json(stamp)["fingerprint"] == before  # same main model: reused
    last = torch.load(again.last_checkpoint, weights_only=False)["state_dict"]
    for name, value in last.items():  # a resumed run keeps its own weights, not the main model's
        torch.testing.assert_close(watcher.at_fit_start[name], value, rtol=0, atol=0, msg=name)

    checkpoint = torch.load(main_checkpoint(paths), weights_only=False)
    checkpoint["state_dict"]["model.decoder.out.bias"] += 0.5
    torch.save(checkpoint, main_checkpoint(paths))
    retrained, watcher = _train_snapshots_watched(params, paths, datamodule)
    assert not retrained.resumed and read_json(stamp)["fingerprint"] != before
    torch.testing.assert_close(
        watcher.at_first_batch["model.decoder.out.bias"], checkpoint["state_dict"]["model.decoder.out.bias"]
    )
    assert initial_weights(retrained)["sha256"] == sha256_file(main_checkpoint(paths))


def test_the_snapshot_run_needs_the_main_model_and_a_fitting_one(processed: Path, tmp_path: Path) -> None:
    params = load_params("ci")
    paths = ProfilePaths("ci", tmp_path / "project")
    shutil.copytree(processed, paths.processed)
    datamodule = make_datamodule(params, paths)
    with pytest.raises(CheckpointError, match=r"from the trained cbvae, and there is no .*best\.ckpt: run stage 02"):
        train_snapshot_ensemble(params, paths, datamodule)

    module = build_module(ensemble_params(params, 1), MAIN_VARIANT, datamodule)
    other = build_module(override_params(params, {"model": {"z_dim": 3}}), MAIN_VARIANT, datamodule)
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict()}, foreign)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(CheckpointError, match=r"other\.ckpt does not fit the model being trained: .*of another shape"):
        InitialWeights(foreign, tmp_path / "record.json").on_fit_start(trainer, module)
    assert not (tmp_path / "record.json").exists()


def _paths_of(run: TrainedRun) -> ProfilePaths:
    """The project of a run folder ``<root>/data/models/ci/ensemble/snapshot``."""
    return ProfilePaths("ci", run.run_dir.parents[4])


@pytest.mark.slow
def test_cosine_restart_run_writes_one_loadable_snapshot_per_cycle(snapshots) -> None:
    run, _, params, _ = snapshots
    files = sorted((run.run_dir / "snapshots").glob("*.ckpt"))
    assert [f.name for f in files] == ["snapshot_01.ckpt", "snapshot_02.ckpt", "snapshot_03.ckpt"]
    assert not list((run.run_dir / "snapshots").glob(".*partial"))
    epochs = [torch.load(f, weights_only=False)["epoch"] for f in files]
    assert epochs == [0, 1, 2]
    atlas = AtlasModel.load(files[0])  # each snapshot loads alone: it carries the payload
    assert atlas.is_aleatoric and atlas.hparams["lr_schedule"] == "cosine_restarts"
    # The logged learning rate restarts at its maximum at the start of every cycle, then anneals.
    steps = pd.read_csv(run.run_dir / "logs" / "version_0" / "metrics.csv").dropna(subset=["lr"])
    by_epoch = steps.groupby("epoch")["lr"]
    assert list(by_epoch.first()) == pytest.approx([params["training"]["lr"]] * 3)
    assert bool((by_epoch.last() < by_epoch.first()).all())


@pytest.mark.slow
def test_atlas_ensemble_predicts_mean_aleatoric_and_epistemic(snapshots) -> None:
    run, datamodule, _, _ = snapshots
    ensemble = AtlasEnsemble.load(run.run_dir)  # a run folder: its snapshots/
    assert len(ensemble.members) == 3 and ensemble.n_passes == 3
    batch = datamodule.render_rows("test", [0, 1])
    shape = (2, 2, 46, 55, 46)
    recon = ensemble.reconstruct(batch["image"], batch["meta"])
    brain = torch.from_numpy(ensemble.grid.mask())
    for field in ("mean", "aleatoric", "epistemic"):
        assert getattr(recon, field).shape == shape, field
    assert bool((recon.aleatoric[:, :, brain] > 0).all()) and float(recon.epistemic[:, :, brain].mean()) > 0
    assert ensemble.encode(batch["image"], batch["meta"]).shape == (3, 2, 4)
    generated = ensemble.generate([{"task": "pain"}, {"task": "emotion", "year": 2010}])
    assert generated.mean.shape == shape and generated.epistemic.shape == shape
    image = ensemble.to_nifti(generated.epistemic[0])
    assert image.shape == (46, 55, 46) and np.allclose(image.affine, ensemble.members[0].grid.affine)

    # Identical members disagree nowhere; MC dropout passes do.
    last = run.run_dir / "snapshots" / "snapshot_03.ckpt"
    twins = AtlasEnsemble.load([last, last]).reconstruct(batch["image"], batch["meta"])
    assert torch.equal(twins.epistemic, torch.zeros(shape))
    dropout = AtlasEnsemble.load(last, mc_samples=3, seed=1)
    first, again = (dropout.reconstruct(batch["image"], batch["meta"]) for _ in range(2))
    assert float(first.epistemic[:, :, brain].mean()) > 0 and dropout.n_passes == 3
    torch.testing.assert_close(first.mean, again.mean, rtol=0, atol=0)  # seeded passes


@pytest.mark.slow
def test_atlas_ensemble_refuses_members_that_do_not_fit(snapshots, tmp_path: Path) -> None:
    run, _, _, _ = snapshots
    last = run.run_dir / "snapshots" / "snapshot_03.ckpt"
    state = torch.load(last, weights_only=False)
    state["sematlas"]["voxel_size"] = 2
    other = tmp_path / "other_grid.ckpt"
    torch.save(state, other)
    with pytest.raises(
        CheckpointError, match=r"member 2 does not match member 1: grid \(voxel size, mm\) 2 instead of 4"
    ):
        AtlasEnsemble.load([last, other])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints"):
        AtlasEnsemble.load(tmp_path / "empty")
    state = torch.load(last, weights_only=False)
    state["hyper_parameters"]["config"]["dropout"] = 0.0
    torch.save(state, other)
    with pytest.raises(ValueError, match="MC dropout needs members trained with dropout"):
        AtlasEnsemble.load(other, mc_samples=2)


@pytest.mark.slow
def test_ood_maps_and_the_evaluation_of_a_method(snapshots) -> None:
    run, datamodule, params, _ = snapshots
    grid = datamodule.grid
    test_peaks = split_peak_lists(datamodule, "test", 3)
    counts = [len(p) for p in test_peaks]
    uniform = uniform_brain_peaks(grid, counts, seed=0)
    assert [len(p) for p in uniform] == counts and all(grid.mask()[tuple(p.T)].all() for p in uniform)
    shifted = shift_to_white_matter(grid, test_peaks)
    assert [len(p) for p in shifted] == counts
    ood = ood_peak_lists(datamodule, 3, n_true_foci=2, seed=0)
    assert all(len(ood[kind]) == 3 for kind in ("uniform", "white_matter", "nimare_synthetic"))
    assert all(0 < len(p) <= k for p, k in zip(ood["nimare_synthetic"], counts, strict=True))
    images = {kind: render_peak_lists(datamodule, peaks) for kind, peaks in ood.items()}
    assert images["uniform"].shape == (3, 2, 48, 48, 48) and float(images["uniform"].amax()) == pytest.approx(1.0)

    ensemble = AtlasEnsemble.load(run.run_dir)
    single = AtlasEnsemble(ensemble.members[-1:])
    results, details = evaluate_ensemble(ensemble, single, datamodule, images, temperature_threshold=0.0)
    assert results["temperature_applied"] and results["temperature"] > 0
    assert results["ece_test_after"] == pytest.approx(
        float(np.mean(np.abs(details["coverage_after"] - CALIBRATION_LEVELS)))
    )
    assert set(results["ood_auroc"]) == set(images) and all(0 <= v <= 1 for v in results["ood_auroc"].values())
    assert set(results["ood_auroc_predictive_nll"]) == set(images)
    assert set(details["scores"]) == {"disagreement", "predictive_nll"}
    for by_kind in details["scores"].values():
        assert len(by_kind["test"]) == results["n_test"] == len(datamodule.tables["test"])
        assert set(by_kind) == {"test", *images}
    assert np.isfinite(results["recon_median_r_ensemble"])


@pytest.mark.slow
def test_stage_04_renders_the_evaluated_studies_once_for_every_method(snapshots, rendered) -> None:
    run, datamodule, _, _ = snapshots
    maps = RenderedSplits(datamodule)
    snapshot_files = sorted((run.run_dir / "snapshots").glob("*.ckpt"))
    last = AtlasEnsemble.load(snapshot_files[-1])
    methods = {"snapshot": AtlasEnsemble.load(snapshot_files), "mc_dropout": AtlasEnsemble.load(snapshot_files[-1], 3)}
    ood = {"uniform": render_peak_lists(datamodule, uniform_brain_peaks(datamodule.grid, [4, 6], seed=0))}
    maps.batch(datamodule, "test", [0])  # the notebook's example figure
    summaries = {
        m: evaluate_ensemble(e, last, datamodule, ood, 0.1, n_eval=2, maps=maps)[0] for m, e in methods.items()
    }
    assert rendered == rendered.once_each(datamodule, ["val", "test"], n=2)
    # The same numbers as an evaluation that renders its own maps.
    alone, _ = evaluate_ensemble(methods["snapshot"], last, datamodule, ood, 0.1, n_eval=2)
    assert alone == summaries["snapshot"] and summaries["mc_dropout"]["n_val"] == 2


def test_ensemble_params_set_the_members_decoder_and_seed() -> None:
    params = load_params("ci")
    member = ensemble_params(params, max_epochs=7, seed=11)
    assert member["model"]["aleatoric"] is True and member["model"]["dropout"] == params["ensemble"]["dropout"]
    assert member["training"]["max_epochs"] == 7 and member["seed"] == 11
    assert params["model"]["aleatoric"] is False and params["training"]["max_epochs"] != 7  # a copy


def test_ood_scores_are_the_disagreement_and_the_predictive_gaussian_nll() -> None:
    target = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    mean = torch.tensor([[0.0, 0.0], [0.5, 0.5]])
    aleatoric = torch.tensor([[0.5, 0.5], [0.1, 0.3]])
    epistemic = torch.tensor([[0.5, 0.5], [0.0, 0.1]])
    scores = ood_scores({"target": target, "mean": mean, "aleatoric": aleatoric, "epistemic": epistemic})
    np.testing.assert_allclose(scores["disagreement"], [0.5, 0.05])
    # The mean over voxels of -log N(x; mu, aleatoric + epistemic).
    expected = [
        -np.mean([torch.distributions.Normal(m, math.sqrt(v)).log_prob(x).item() for x, m, v in zip(t, mu, a + e)])
        for t, mu, a, e in zip(target, mean, aleatoric, epistemic, strict=True)
    ]
    np.testing.assert_allclose(scores["predictive_nll"], expected, rtol=1e-6)
    # A map far from its reconstruction scores higher even where the members agree.
    far = ood_scores({"target": target + 3, "mean": mean, "aleatoric": aleatoric, "epistemic": epistemic})
    assert np.all(far["predictive_nll"] > scores["predictive_nll"])
