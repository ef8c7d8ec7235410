"""The sweep spec: defaults, YAML, flag overrides and one line per problem."""

from __future__ import annotations

import pytest

from orchestrator.spec import MEASUREMENT_FIELDS, SpecError, SweepSpec, build_spec
from tilesweep.errors import UsageError


def test_defaults_are_the_embedded_sweep():
    spec = build_spec()
    assert spec == SweepSpec()
    # No families named: the profile's own defaults (1xk, 2xk, kx1 for a grid profile; see test_plan).
    assert (spec.model, spec.families, spec.results, spec.run_id) == ("tiny-molmo2", (), "results", None)
    assert spec.tiling_source() == "families"


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("model: tiny-molmo-v1\nrepeats: 7\nfamilies: [kx1]\ntilings: ['1x2', [2, 3]]\n"
                    "config-timeout-s: 60\n")
    spec = build_spec(path, {"repeats": "4", "warmup": None, "crops": "9,3,3"})
    assert spec.model == "tiny-molmo-v1"
    assert spec.repeats == 4  # the flag wins over the file
    assert spec.warmup == SweepSpec().warmup  # None means "not given"
    assert spec.tilings == ((1, 2), (2, 3))
    assert spec.crops == (3, 9)  # sorted, deduplicated
    assert spec.config_timeout_s == 60.0
    assert spec.tiling_source() == "explicit"


def test_every_problem_gets_its_own_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle: x\nrepeats: zero\nwarmup: -1\ntilings: 1x0\nfamilies: [1xk, diagonal]\n")
    with pytest.raises(SpecError) as info:
        build_spec(path)
    problems = info.value.problems
    assert len(problems) == 4  # the family is checked once the values parse
    text = "\n".join(problems)
    assert "unknown key 'modle'" in text and "allowed keys" in text and "model" in text
    assert "repeats: must be an integer, got 'zero'" in text
    assert "warmup: must be >= 0, got -1" in text
    assert "'1x0' is not a tiling" in text
    assert all("\n" not in p and p.startswith(str(path)) for p in problems)
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("overrides, needle", [
    ({"families": "1xk,diagonal"}, "unknown family 'diagonal'; allowed: 1xk, 2xk, kx1, all"),
    ({"profile": "molmo3"}, "unknown profile 'molmo3'; allowed: "),
    ({"dtype": "float8"}, "dtype: 'float8' is not one of float32, float16, bfloat16"),
    ({"run_id": "../escape"}, "run_id: '../escape' must be letters"),
    ({"workers": 0}, "workers: must be >= 1, got 0"),
    ({"max_attempts": True}, "max_attempts: must be a number, got True"),
    ({"repeats": 2.5}, "repeats: must be an integer, got 2.5"),
    ({"block_spans": "yes"}, "block_spans: must be true or false"),
    ({"crops": "3,0"}, "crops: crop counts must be >= 1, got 0"),
    ({"tokens": "256,0"}, "tokens: token counts must be >= 1, got 0"),
])
def test_bad_values_name_the_value_and_the_fix(overrides, needle):
    with pytest.raises(SpecError) as info:
        build_spec(None, overrides)
    assert len(info.value.problems) == 1
    assert needle in info.value.problems[0]


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        build_spec(path)
    with pytest.raises(SpecError, match="cannot read the spec file"):
        build_spec(tmp_path / "absent.yaml")


def test_to_dict_round_trips_through_build_spec():
    spec = build_spec(None, {"tilings": "1x2,2x4", "crops": "3", "repeats": 5, "gpus_per_worker": 0.5,
                             "share_gpus": True, "run_id": "r1", "dtype": "bfloat16"})
    assert build_spec(None, spec.to_dict()) == spec


def test_a_fractional_gpu_share_is_refused_unless_asked_for():
    with pytest.raises(SpecError) as err:
        build_spec(None, {"gpus_per_worker": 0.5})
    assert err.value.problems == [
        "spec: gpus_per_worker: 0.5 puts several actors on one GPU, where each times the others' work too; use 1 "
        "(or 0 for CPU actors), or pass --share-gpus to accept mixed timings"]
    assert build_spec(None, {"gpus_per_worker": 0.5, "share_gpus": True}).gpus_per_worker == 0.5
    for whole in (0, 1, 2):
        assert build_spec(None, {"gpus_per_worker": whole}).gpus_per_worker == whole


def test_measurement_is_what_defines_a_config():
    spec = SweepSpec()
    adaptive = {"precision_pct", "max_repeats", "max_duration_s"}
    # Off, the adaptive rule is not part of a config's identity: ids of earlier runs stay the same.
    assert set(spec.measurement()) == set(MEASUREMENT_FIELDS) - adaptive == {
        "model", "revision", "profile", "dtype", "attn_implementation", "warmup", "repeats", "min_duration_s",
        "decode_tokens", "block_spans", "seed"}
    on = build_spec(None, {"precision_pct": 2, "max_repeats": 30})
    assert {k: on.measurement()[k] for k in adaptive} == {"precision_pct": 2.0, "max_repeats": 30,
                                                          "max_duration_s": 60.0}
    # Where and how a sweep runs is not part of what it measures.
    for name in ("results", "run_id", "workers", "address", "max_attempts", "families", "tilings", "crops",
                 "share_gpus", "energy_s"):
        assert name not in MEASUREMENT_FIELDS
