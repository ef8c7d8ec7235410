"""Settings declared once: coercion, validation, flags, YAML keys and help all come from the field."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from orchestrator.spec import SweepSpec, build_spec
from tilesweep import fields
from tilesweep.errors import UsageError
from tilesweep.fields import setting
from workers.config import MeasureConfig, Timing


@dataclass(kw_only=True, frozen=True, slots=True)
class Extended(SweepSpec):
    """A spec with one more setting, declared the way every setting is."""

    tag: str | None = setting(None, metavar="TAG", group="cluster", help="a label for the run")
    budget_s: float = setting(60.0, minimum=1, flag="--budget", group="timing", measurement=True,
                              help="seconds a config may take")


def parser_for(cls: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    fields.add_flags(parser, cls)
    return parser


def test_a_new_setting_is_one_declaration():
    """Flag, YAML key (by name or by flag), coercion, limits, help and the measurement set follow the field."""
    parser = parser_for(Extended)
    args = parser.parse_args(["--tag", "night", "--budget", "90", "--repeats", "5"])
    assert fields.given(args, Extended) == {"tag": "night", "budget_s": "90", "repeats": "5"}
    built, problems = fields.build(Extended, fields.given(args, Extended))
    assert problems == [] and (built.tag, built.budget_s, built.repeats) == ("night", 90.0, 5)
    # YAML may use the setting's name or its flag's.
    assert fields.build(Extended, {"budget": 30})[0].budget_s == 30.0
    assert fields.build(Extended, {"budget_s": "2e1"})[0].budget_s == 20.0
    assert fields.build(Extended, {"budget": 0})[1] == ["budget_s: must be >= 1, got 0.0"]
    assert "budget_s" in fields.measurement_fields(Extended) and "tag" not in fields.measurement_fields(Extended)
    text = parser.format_help()
    assert "--budget BUDGET" in text and "seconds a config may take (default 60)" in text


def test_the_timing_settings_are_shared_by_the_spec_and_a_config():
    timing = [f.name for f, _ in fields.settings(Timing)]
    assert timing == ["warmup", "repeats", "min_duration_s", "precision_pct", "max_repeats", "max_duration_s",
                      "decode_tokens", "block_spans", "energy_s", "seed"]
    spec, config = SweepSpec(), MeasureConfig(tiling_rows=1, tiling_cols=1)
    for name in timing:  # one default, whichever record carries it
        assert getattr(spec, name) == getattr(config, name) == getattr(Timing(), name)
    # Every timing setting but the energy window (read after the timings) defines the measurement.
    assert set(timing) - {"energy_s"} <= set(fields.measurement_fields(SweepSpec))


def test_coercion_names_the_value_and_what_is_allowed():
    assert fields.coerce(SweepSpec, "repeats", "4") == 4
    assert fields.coerce(SweepSpec, "config_timeout_s", 60) == 60.0
    assert fields.coerce(SweepSpec, "workers", None) is None  # optional
    for name, value, needle in [
        ("repeats", "four", "repeats: must be an integer, got 'four'"),
        ("repeats", 2.5, "repeats: must be an integer, got 2.5"),
        ("repeats", True, "repeats: must be a number, got True"),
        ("block_spans", "yes", "block_spans: must be true or false, got 'yes'"),
        ("dtype", "float8", "dtype: 'float8' is not one of float32, float16, bfloat16"),
        ("gpus_per_worker", -1, "gpus_per_worker: must be >= 0, got -1.0"),
        ("model", None, "model: must be set (a string)"),
        ("model", 7, "model: must be a string, got 7 (int)"),
    ]:
        with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            fields.coerce(SweepSpec, name, value)


def test_unknown_keys_suggest_the_nearest_setting():
    _, problems = fields.build(SweepSpec, {"repaets": 3})
    assert problems == [f"unknown key 'repaets' (did you mean 'repeats'?); allowed keys: "
                        f"{', '.join(f.name for f, _ in fields.settings(SweepSpec))}"]
    with pytest.raises(UsageError, match="unknown key 'famly' \\(did you mean 'families'\\?\\)"):
        build_spec(None, {"famly": "1xk"})


def test_a_record_built_in_python_is_checked_by_the_same_rules():
    with pytest.raises(UsageError, match="MeasureConfig.repeats: must be >= 1, got 0"):
        MeasureConfig(tiling_rows=1, tiling_cols=2, repeats=0)
    with pytest.raises(UsageError, match="MeasureConfig.warmup: must be an integer, got '2'"):
        MeasureConfig(tiling_rows=1, tiling_cols=2, warmup="2")
    with pytest.raises(UsageError, match="MeasureConfig.tiling_cols: must be >= 1, got 0"):
        MeasureConfig(tiling_rows=1, tiling_cols=0)
    with pytest.raises(UsageError, match="SweepSpec.max_attempts: must be >= 1, got 0"):
        SweepSpec(max_attempts=0)
    assert dataclasses.replace(SweepSpec(), repeats=9).repeats == 9


def test_every_spec_setting_has_a_flag_and_help():
    parser = argparse.ArgumentParser()
    from orchestrator import spec as specs

    specs.add_flags(parser)
    dests = {a.dest: a for a in parser._actions}
    for field, meta in fields.settings(SweepSpec):
        assert field.name in dests, f"{field.name} has no flag"
        assert dests[field.name].default is None  # absent flags never override a spec file or a resumed run
        assert meta.help and meta.help in dests[field.name].help
