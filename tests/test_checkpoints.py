"""Every volumetric variant's checkpoint loads into the right model, with its flags, and predicts as trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import tiny_project

from sematlas.core.params import Params
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.models import VARIANTS
from sematlas.training.module import AtlasModule
from sematlas.training.run import make_datamodule, train_variant


@pytest.fixture(scope="module")
def project(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, ProfilePaths]:
    return tiny_project(processed, tmp_path_factory.mktemp("project"), {"hierarchical": {"top_dim": 2}})


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.slow
def test_each_variant_loads_from_its_checkpoint_and_predicts_as_trained(project, variant: str) -> None:
    params, paths = project
    run = train_variant(params, variant, paths)
    state = torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)

    atlas = AtlasModel.load(run.best_checkpoint, voxel_size=params["render"]["voxel_size"])
    assert atlas.variant == variant == atlas.config.variant
    assert atlas.config.to_dict() == state["hyper_parameters"]["config"]
    # Every network weight of the checkpoint, and nothing else, is what the loaded network holds.
    saved = state["state_dict"]
    weights = {key.removeprefix("model."): value for key, value in saved.items() if key.startswith("model.")}
    assert atlas.network.state_dict().keys() == weights.keys()
    for name, tensor in atlas.network.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0, msg=name)

    datamodule = make_datamodule(params, paths)
    batch = datamodule.render_rows("test", [0, 1])
    z = atlas.encode(batch["image"], batch["meta"])
    assert z.shape == (2, params["model"]["z_dim"])
    maps = atlas.decode(z, batch["meta"])
    assert maps.shape == (2, datamodule.n_channels, *atlas.grid.shape)
    # The same network as Lightning's own (strict) loader rebuilds (eval mode: z = mu).
    module = AtlasModule.load_from_checkpoint(run.best_checkpoint)
    assert type(module.model) is type(atlas.network)
    with torch.no_grad():
        mu, _ = module.eval().model.encode(batch["image"], batch["meta"])
    torch.testing.assert_close(z, mu, rtol=0, atol=1e-6)
    # A conditional decoder reads the metadata; the others ignore it.
    swapped = {key: value.flip(0) for key, value in batch["meta"].items()}
    assert (not torch.equal(atlas.decode(z, swapped), maps)) == atlas.is_conditional
