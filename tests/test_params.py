"""Parameter loading: layering and validation errors that name the key and the file."""

from __future__ import annotations

import pytest
import yaml

from sematlas.core.params import PROFILES, ParameterError, load_params


def _write(project, name, payload):
    (project / "params" / name).write_text(yaml.safe_dump(payload))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads_and_differs_only_in_numbers(profile):
    params = load_params(profile)
    common = load_params("quick")
    assert params["profile"] == profile
    assert set(params) == set(common)
    for section in ("data", "curation", "render"):
        assert set(params[section]) == set(common[section])


def test_profile_overrides_common(project):
    _write(project, "ci.yaml", {"curation": {"subset_size": 7}})
    params = load_params("ci", project)
    assert params["curation"]["subset_size"] == 7
    assert params["curation"]["min_peaks"] == 3  # from common.yaml


def test_unknown_key_names_key_and_file(project):
    _write(project, "ci.yaml", {"curation": {"subset_sise": 7}})
    with pytest.raises(ParameterError, match=r"ci\.yaml: unknown parameter 'curation\.subset_sise'"):
        load_params("ci", project)


def test_unknown_top_level_key_in_common(project):
    common = yaml.safe_load((project / "params" / "common.yaml").read_text())
    common["learning_rate"] = 0.1
    _write(project, "common.yaml", common)
    with pytest.raises(ParameterError, match=r"common\.yaml: unknown parameter 'learning_rate'"):
        load_params("ci", project)


def test_missing_key_names_key_and_files(project):
    common = yaml.safe_load((project / "params" / "common.yaml").read_text())
    del common["curation"]["min_peaks"]
    _write(project, "common.yaml", common)
    with pytest.raises(
        ParameterError, match=r"missing parameter 'curation\.min_peaks' \(set it in common\.yaml or ci\.yaml\)"
    ):
        load_params("ci", project)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"curation": {"min_peaks": "three"}}, r"'curation\.min_peaks' must be int, got 'three'"),
        ({"curation": {"min_peaks": True}}, r"'curation\.min_peaks' must be int, got True"),
        ({"curation": {"split_fractions": [0.5, 0.5, 0.5]}}, r"split_fractions' must be three positive numbers"),
        ({"render": {"voxel_size": 3}}, r"'render\.voxel_size' must be 2 or 4"),
        ({"render": {"kernel_choice": "both"}}, r"kernel_choice' must be 'all' or 'random'"),
        ({"curation": 5}, r"ci\.yaml: 'curation' must be a mapping"),
    ],
)
def test_bad_values(project, override, message):
    _write(project, "ci.yaml", override)
    with pytest.raises(ParameterError, match=message):
        load_params("ci", project)


def test_unknown_profile_and_missing_file(project):
    with pytest.raises(ParameterError, match="unknown profile 'fast'"):
        load_params("fast", project)
    (project / "params" / "gpu.yaml").unlink()
    with pytest.raises(ParameterError, match=r"parameter file not found: .*gpu\.yaml"):
        load_params("gpu", project)
