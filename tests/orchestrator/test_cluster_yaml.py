"""cluster.yaml: valid for Ray's cluster launcher, and it says what the README promises."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_valid_against_rays_schema(config, schema):
    jsonschema.validate(config, schema)


def test_the_schema_check_bites(config, schema):
    broken = {**copy.deepcopy(config), "head_node_typo": "head"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_rays_own_validation_after_filling_defaults(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    assert full["head_node_type"] == "head"


def test_cpu_head_and_autoscaling_gpu_workers(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(gpu) == 1 and gpu[0]["resources"]["GPU"] >= 1
    assert gpu[0]["min_workers"] == 0 < gpu[0]["max_workers"] <= config["max_workers"]


def test_installs_this_project_and_keeps_the_dashboard_private(config):
    (target, source), = config["file_mounts"].items()
    assert source == "."
    assert any(target in cmd and "pip install" in cmd for cmd in config["setup_commands"])
    assert ".venv" in config["rsync_exclude"] and "results" in config["rsync_exclude"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
