"""Shared fixtures (NiMARE's 20-study Neurosynth v7 sample, the v7 mirror, tiny projects) and the ``slow`` marker."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # ./run_all.sh test runs everything; `pytest tests -m "not slow"` is the unit run of a minute or so.
    config.addinivalue_line(
        "markers",
        "slow: trains a model, exports ONNX, drives a browser, runs node, npm or papermill, or renders at length",
    )


@pytest.fixture(scope="session")
def nimare_sample() -> dict[str, Path]:
    """NiMARE's shipped 20-study Neurosynth v7 sample (coordinates + metadata)."""
    from nimare.tests.utils import get_test_data_path

    folder = Path(get_test_data_path())
    return {
        "coordinates": folder / "data-neurosynth_version-7_coordinates.tsv.gz",
        "metadata": folder / "data-neurosynth_version-7_metadata.tsv.gz",
    }


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The checksummed Neurosynth v7 mirror (``SEMATLAS_DATA_MIRROR`` or ``../shared``); skip without it."""
    path = Path(os.environ.get("SEMATLAS_DATA_MIRROR", ROOT.parent / "shared" / "data" / "neurosynth"))
    if not (path / "data-neurosynth_version-7_coordinates.tsv.gz").is_file():
        pytest.skip(f"no Neurosynth v7 mirror at {path}")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch project root with the real parameter files."""
    shutil.copytree(ROOT / "params", tmp_path / "params")
    (tmp_path / "lib" / "sematlas").mkdir(parents=True)
    return tmp_path


@pytest.fixture(scope="session")
def sample_params():
    from sematlas.core.params import load_params, override_params

    return override_params(load_params("ci", ROOT), {"curation": {"subset_size": 10, "min_peaks": 1}})


def _sample_topics(metadata: Path, folder: Path, params) -> dict[str, Path]:
    """LDA-50 features and vocabulary files for the NiMARE sample, which ships none.

    Seeded Dirichlet weights on the topics no task category reads; studies 0, 4, 8, ...
    put half their weight on the emotion topic, studies 1, 5, ... on pain and 2, 6, ...
    on working memory, the others stay ``other``. So the curated studies carry
    ``topic_00`` ... ``topic_49`` like the real data and these categories have topic
    profiles of their own (the splits do not depend on categories).
    """
    import numpy as np
    import pandas as pd
    from scipy import sparse

    n_topics = 50
    mapping = params["curation"]["task_categories"]
    read = {int(topic) for topics in mapping.values() for topic in topics}
    free = [topic for topic in range(n_topics) if topic not in read]
    leaning = [mapping[name][0] for name in ("emotion", "pain", "working_memory")]
    n_studies = len(pd.read_table(metadata))
    weights = np.zeros((n_studies, n_topics))
    weights[:, free] = np.random.default_rng(0).dirichlet(np.ones(len(free)), n_studies)
    for study in range(n_studies):
        if study % 4 < len(leaning):
            weights[study] *= 0.5
            weights[study, leaning[study % 4]] = 0.5
    # NiMARE reads the vocabulary, source and value type of features from their file names.
    files = {
        "features": folder / "data-neurosynth_version-7_vocab-LDA50_source-abstract_type-weight_features.npz",
        "vocabulary": folder / "data-neurosynth_version-7_vocab-LDA50_vocabulary.txt",
    }
    sparse.save_npz(files["features"], sparse.csr_matrix(weights))
    files["vocabulary"].write_text("".join(f"{topic}_topic_{topic}\n" for topic in range(n_topics)))
    return files


@pytest.fixture(scope="session")
def processed(nimare_sample, sample_params, tmp_path_factory) -> Path:
    """The NiMARE 20-study sample, with synthetic LDA-50 topic weights, curated into a processed folder
    (every study in the subset)."""
    from sematlas.core.params import override_params
    from sematlas.data.curation import curate, write_outputs

    folder = tmp_path_factory.mktemp("processed")
    params = override_params(sample_params, {"curation": {"subset_size": 100}})
    topics = _sample_topics(nimare_sample["metadata"], tmp_path_factory.mktemp("sample_topics"), params)
    write_outputs(curate({**nimare_sample, **topics}, params), folder, params, {}, {})
    return folder


@pytest.fixture
def untrained_cbvae(processed):
    """A tiny, untrained cbvae network and the set-up DataModule of the NiMARE sample (batches of 4)."""
    from sematlas.data.datamodule import NeurosynthDataModule
    from sematlas.models import CBVAEConfig, build_model

    datamodule = NeurosynthDataModule(processed, batch_size=4)
    datamodule.setup()
    config = CBVAEConfig(
        z_dim=3,
        base_channels=4,
        growth_rate=4,
        hidden_dim=8,
        cond_dim=datamodule.encoder.cond_dim,
        n_year_bins=datamodule.encoder.n_year_bins,
    )
    return build_model(config), datamodule


class RenderCounts(Counter):
    """Studies rendered per ``(split, kernel FWHMs)``."""

    @staticmethod
    def once_each(datamodule, splits=("train", "val", "test"), n: int | None = None) -> Counter:
        """The counts when each split of ``datamodule`` (its first ``n`` studies) is rendered once."""
        sizes = {split: len(datamodule.tables[split]) for split in splits}
        return Counter({(split, datamodule.fwhms): min(size, n or size) for split, size in sizes.items()})


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> RenderCounts:
    """Counts the studies rendered, where every map of a split is rendered (``render_rows``)."""
    from sematlas.data.datamodule import NeurosynthDataModule

    counts = RenderCounts()
    render_rows = NeurosynthDataModule.render_rows

    def counting(self, split, rows, augment=False, generator=None):
        counts[split, self.fwhms] += len(rows)
        return render_rows(self, split, rows, augment, generator)

    monkeypatch.setattr(NeurosynthDataModule, "render_rows", counting)
    return counts
