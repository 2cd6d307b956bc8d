"""The metadata encoder: topic or category inputs, fitted profiles, saving, and requests by task, topics or text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sematlas.core.metadata import QUERY_BLEND, SPACES, TOPIC_KEYS_FILE, MetadataEncoder, read_topic_keys

CATEGORIES = ["pain", "working_memory", "other"]
EDGES = [1997, 2005, 2018]
#: Key words of the three topics of the small frame, strongest first.
KEYS = [
    ["pain", "painful", "somatosensory", "heat"],
    ["memory", "working", "load", "pain"],
    ["network", "resting", "state", "memory"],
]
REAL_KEYS = Path(__file__).resolve().parents[2] / "shared" / "data" / "neurosynth" / TOPIC_KEYS_FILE


def _studies() -> pd.DataFrame:
    """Six studies: two per category, three topics (topic_02 constant, to exercise the std floor)."""
    return pd.DataFrame(
        {
            "task_category": ["pain", "pain", "working_memory", "working_memory", "other", "other"],
            "year": [2000, 2004, 2008, 2010, 2012, 2016],
            "n_peaks": [5, 10, 20, 40, 8, 16],
            "space": ["MNI", "TAL", "MNI", "UNKNOWN", "MNI", "elsewhere"],
            "sample_size": [12.0, np.nan, 20.0, 30.0, np.nan, 16.0],
            "topic_00": [0.7, 0.5, 0.1, 0.1, 0.2, 0.2],
            "topic_01": [0.1, 0.3, 0.7, 0.5, 0.2, 0.4],
            "topic_02": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2],
        }
    )


def _encoder(inputs: str = "topics", keys=KEYS) -> MetadataEncoder:
    return MetadataEncoder(CATEGORIES, EDGES, inputs=inputs).fit(_studies(), topic_keys=keys)


def _tail(studies: pd.DataFrame, encoder: MetadataEncoder) -> np.ndarray:
    """Year, log peaks and space one-hot, computed by hand: the fields both inputs share."""
    year = studies["year"].to_numpy(float)
    log_peaks = np.log(studies["n_peaks"].to_numpy(float))
    space = [SPACES.index(s) if s in SPACES else SPACES.index("UNKNOWN") for s in studies["space"]]
    return np.column_stack(
        [
            (year - year.mean()) / year.std(ddof=1),
            (log_peaks - log_peaks.mean()) / log_peaks.std(),
            np.eye(len(SPACES))[space],
        ]
    )


def test_topic_inputs_are_the_standardised_topic_weights():
    studies = _studies()
    encoder = _encoder()
    meta = encoder.transform(studies)
    assert encoder.topic_columns == ["topic_00", "topic_01", "topic_02"] and encoder.n_topics == 3
    assert encoder.cond_dim == 3 + 2 + len(SPACES) and meta["cond"].shape == (6, encoder.cond_dim)
    weights = studies[["topic_00", "topic_01", "topic_02"]].to_numpy()
    mean, std = weights.mean(0), weights.std(0)
    expected_topics = (weights[:, :2] - mean[:2]) / std[:2]
    # The constant topic is standardised by the floor, not by 0: it reads 0 for every training study.
    expected = np.column_stack([expected_topics, np.zeros(6), _tail(studies, encoder)])
    np.testing.assert_allclose(meta["cond"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert meta["task"].tolist() == [0, 0, 1, 1, 2, 2]
    assert meta["sparse_mask"][:, 0].tolist() == [True, False, True, True, False, True]
    np.testing.assert_allclose(encoder.corpus_profile, mean)
    np.testing.assert_allclose(encoder.category_profiles["pain"], [0.6, 0.2, 0.2])
    np.testing.assert_allclose(encoder.category_profiles["working_memory"], [0.1, 0.6, 0.2])
    assert encoder.topic_names == ["pain painful somatosensory", "memory working load", "network resting state"]


def test_category_inputs_are_the_task_one_hot():
    studies = _studies()
    encoder = _encoder("category")
    meta = encoder.transform(studies)
    assert encoder.cond_dim == len(CATEGORIES) + 2 + len(SPACES)
    expected = np.column_stack([np.eye(3)[[0, 0, 1, 1, 2, 2]], _tail(studies, encoder)])
    np.testing.assert_allclose(meta["cond"].numpy(), expected, rtol=1e-5, atol=1e-6)
    # A category encoder needs no topic column.
    assert torch.equal(encoder.transform(studies.drop(columns=encoder.topic_columns))["cond"], meta["cond"])


def test_bad_inputs_and_missing_topics_are_refused():
    with pytest.raises(ValueError, match=r"inputs must be one of topics, category; got 'words'"):
        MetadataEncoder(CATEGORIES, EDGES, inputs="words")
    with pytest.raises(ValueError, match=r"inputs='topics' needs the study table's topic weights"):
        MetadataEncoder(CATEGORIES, EDGES).fit(_studies().drop(columns=["topic_00", "topic_01", "topic_02"]))
    with pytest.raises(RuntimeError, match="call fit"):
        _ = MetadataEncoder(CATEGORIES, EDGES).cond_dim
    with pytest.raises(ValueError, match=r"lacks topic column 'topic_01'"):
        _encoder().transform(_studies().drop(columns="topic_01"))
    with pytest.raises(ValueError, match="topic_keys lists 2 topics, but the study table has 3"):
        _encoder(keys=KEYS[:2])


def test_saved_encoder_is_self_contained_and_old_payloads_read_as_category():
    encoder = _encoder()
    restored = MetadataEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored == encoder
    for request in ({"task": "pain"}, {"text": "working memory"}, {"topics": {1: 1.0}}):
        assert torch.equal(restored.request(request)["cond"], encoder.request(request)["cond"])
    old = {"categories": CATEGORIES, "year_bin_edges": EDGES, "stats": encoder.stats}
    legacy = MetadataEncoder.from_dict(old)
    assert legacy.inputs == "category" and legacy.topic_keys is None
    assert torch.equal(legacy.transform(_studies())["cond"], _encoder("category").transform(_studies())["cond"])


def test_a_task_request_is_the_categorys_mean_topic_profile():
    encoder = _encoder()
    meta = encoder.request({"task": "pain", "year": 2004, "n_peaks": 10, "sample_size": 20})
    profile = np.array(encoder.category_profiles["pain"])
    expected = (profile - np.array(encoder.corpus_profile)) / np.array(encoder.topic_std)
    np.testing.assert_allclose(meta["cond"][0, :3].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert meta["task"].tolist() == [0] and meta["sparse_mask"].tolist() == [[True]]
    # The category encoder gives today's one-hot.
    assert _encoder("category").request({"task": "working_memory"})["cond"][0, :3].tolist() == [0.0, 1.0, 0.0]


def _raw_profile(encoder: MetadataEncoder, meta: dict[str, torch.Tensor]) -> np.ndarray:
    """The raw topic profile a request's cond row stands for."""
    z = meta["cond"][0, : encoder.n_topics].double().numpy()
    return z * np.array(encoder.topic_std) + np.array(encoder.corpus_profile)


def test_topic_requests_by_index_column_or_name_blend_with_the_corpus():
    encoder = _encoder()
    by_index = encoder.request({"topics": {0: 3.0, 1: 1.0}})
    by_column = encoder.request({"topics": {"topic_00": 3.0, "topic_01": 1.0}})
    by_name = encoder.request({"topics": {"pain painful somatosensory": 3.0, "Memory working load": 1.0}})
    assert torch.equal(by_index["cond"], by_column["cond"]) and torch.equal(by_index["cond"], by_name["cond"])
    expected = QUERY_BLEND * np.array([0.75, 0.25, 0.0]) + (1 - QUERY_BLEND) * np.array(encoder.corpus_profile)
    np.testing.assert_allclose(_raw_profile(encoder, by_index), expected, atol=1e-6)
    assert encoder.categories[int(by_index["task"])] == "pain"  # the nearest category profile
    with pytest.raises(ValueError, match=r"'topics': topic index 7 is outside 0..2"):
        encoder.request({"topics": {7: 1.0}})
    with pytest.raises(ValueError, match=r"unknown topic 'pain' \(closest names: pain painful somatosensory\)"):
        encoder.request({"topics": {"pain": 1.0}})
    with pytest.raises(ValueError, match="topic_00 is given twice"):
        encoder.request({"topics": {0: 1.0, "topic_00": 1.0}})
    with pytest.raises(ValueError, match=r"the weight of 1 must be a number >= 0"):
        encoder.request({"topics": {1: -1.0}})
    with pytest.raises(ValueError, match="the weights are all 0"):
        encoder.request({"topics": {1: 0.0}})


def test_text_requests_weight_topics_by_the_rank_of_their_key_words():
    encoder = _encoder()
    meta = encoder.request({"text": "Pain!"})
    # "pain" is topic 0's first key word (1 / 1) and topic 1's fourth (1 / 4).
    query = np.array([1.0, 0.25, 0.0]) / 1.25
    expected = QUERY_BLEND * query + (1 - QUERY_BLEND) * np.array(encoder.corpus_profile)
    np.testing.assert_allclose(_raw_profile(encoder, meta), expected, atol=1e-6)
    assert encoder.categories[int(meta["task"])] == "pain"
    working = _raw_profile(encoder, encoder.request({"text": "the working memory of a pain"}))
    assert working.argmax() == 1


def test_bad_text_requests_are_refused():
    encoder = _encoder()
    with pytest.raises(ValueError, match=r"'text': unknown word 'pian' .*closest key words: pain"):
        encoder.request({"text": "pian"})
    with pytest.raises(ValueError, match="has no word the topics know"):
        encoder.request({"text": "the and of"})
    with pytest.raises(ValueError, match="exactly one of 'task', 'topics' or 'text'; got 'task' and 'text'"):
        encoder.request({"task": "pain", "text": "pain"})
    with pytest.raises(ValueError, match="exactly one of 'task', 'topics' or 'text'; tasks: pain"):
        encoder.request({"year": 2010})
    with pytest.raises(ValueError, match="fitted without topic keys"):
        _encoder(keys=None).request({"text": "pain"})
    with pytest.raises(ValueError, match=r"'text': this encoder reads task categories"):
        _encoder("category").request({"text": "pain"})
    with pytest.raises(ValueError, match=r"'topics': this encoder reads task categories"):
        _encoder("category").request({"topics": {0: 1.0}})


def test_the_existing_request_checks_stay():
    encoder = _encoder()
    with pytest.raises(ValueError, match=r"unknown metadata key 'n_subjects'; allowed: n_peaks, .*text, topics"):
        encoder.request({"task": "pain", "n_subjects": 3})
    with pytest.raises(ValueError, match=r"unknown task category 'dreaming'; allowed: pain, working_memory"):
        encoder.request({"task": "dreaming"})
    with pytest.raises(ValueError, match="year 2020 is outside"):
        encoder.request({"text": "pain", "year": 2020})
    with pytest.raises(ValueError, match="sample_size must be positive"):
        encoder.request({"task": "pain", "sample_size": 0})
    with pytest.raises(ValueError, match="n_peaks must be positive"):
        encoder.request({"task": "pain", "n_peaks": -1})


def test_a_category_without_training_studies_takes_the_corpus_profile(caplog):
    studies = _studies().replace({"task_category": {"other": "pain"}})
    with caplog.at_level("WARNING", logger="sematlas.core.metadata"):
        encoder = MetadataEncoder(CATEGORIES, EDGES).fit(studies)
    assert "without training studies take the corpus mean profile: other" in caplog.text
    assert encoder.category_profiles["other"] == encoder.corpus_profile


@pytest.mark.skipif(not REAL_KEYS.is_file(), reason=f"no Neurosynth v7 keys at {REAL_KEYS}")
def test_pain_text_raises_the_pain_topic_of_the_real_keys():
    keys = read_topic_keys(REAL_KEYS)
    assert len(keys) == 50 and keys[32][:3] == ["pain", "somatosensory", "stimulation"]
    rng = np.random.default_rng(0)
    topics = pd.DataFrame(rng.dirichlet(np.ones(50), 40), columns=[f"topic_{t:02d}" for t in range(50)])
    studies = pd.DataFrame(
        {"task_category": "other", "year": 2010, "n_peaks": 20, "space": "MNI", "sample_size": np.nan}, index=range(40)
    ).join(topics)
    encoder = MetadataEncoder(["pain", "other"], EDGES).fit(studies, topic_keys=keys)
    assert _raw_profile(encoder, encoder.request({"text": "pain"})).argmax() == 32
    assert _raw_profile(encoder, encoder.request({"text": "working memory"})).argmax() == 9
    by_name = encoder.request({"topics": {"pain somatosensory stimulation": 1.0}})
    assert torch.equal(by_name["cond"], encoder.request({"topics": {32: 1.0}})["cond"])


# --------------------------------------------------------------------- DataModules
def test_datamodules_take_the_profiles_metadata_and_the_fetched_keys(processed, tmp_path):
    from sematlas.core.params import load_params, override_params
    from sematlas.core.paths import ProfilePaths
    from sematlas.data.datamodule import NeurosynthDataModule
    from sematlas.data.pointcloud import PointCloudDataModule

    paths = ProfilePaths("ci", tmp_path)
    shutil.copytree(processed, paths.processed)
    (paths.raw / "neurosynth").mkdir(parents=True)
    keys = "".join(f"{t}\t0.1\tword{t} other{t} pain\n" for t in range(50))
    (paths.raw / "neurosynth" / TOPIC_KEYS_FILE).write_text(keys)

    params = load_params("ci")
    assert params["model"]["metadata"] == "topics"
    module = NeurosynthDataModule.from_params(params, paths.processed, batch_size=4, use_subset=True)
    module.setup()
    assert module.encoder.inputs == "topics" and module.encoder.topic_names[7] == "word7 other7 pain"
    assert module.encoder.request({"text": "word7"})["cond"].shape == (1, 55)

    category = override_params(params, {"model": {"metadata": "category"}})
    module = NeurosynthDataModule.from_params(category, paths.processed, batch_size=4, use_subset=True)
    module.setup()
    assert module.encoder.inputs == "category" and module.encoder.cond_dim == len(module.encoder.categories) + 5
    assert PointCloudDataModule.from_params(category, paths).metadata == "category"


def test_a_datamodule_without_keys_fits_without_them(processed, caplog):
    from sematlas.data.datamodule import NeurosynthDataModule

    module = NeurosynthDataModule(processed, batch_size=4)
    with caplog.at_level("WARNING", logger="sematlas.data.studies"):
        module.setup()
    assert f"no {TOPIC_KEYS_FILE}" in caplog.text and module.encoder.topic_keys is None
    with pytest.raises(ValueError, match="fitted without topic keys"):
        module.encoder.request({"text": "pain"})
