"""The typed manifest: round trips, the previous layout, newer versions and malformed fields."""

from __future__ import annotations

import json

import pytest

from store.invariant import check
from store.manifest import VERSION, Counts, Invocation, Manifest, PlannedEntry, read
from store.runs import RunStore
from tilesweep.errors import ResultsError

# A manifest as tilesweep wrote it before `Manifest` existed (no version, no planned ids per invocation).
PREVIOUS = {
    "run_id": "r1", "created_at": "2026-11-26T07:28:30+00:00", "updated_at": "2026-11-26T07:28:51+00:00",
    "measurement": {"model": "tiny-molmo2", "warmup": 1, "repeats": 2},
    "profile": {"name": "molmo2", "max_crops": 8},
    "spec": {"model": "tiny-molmo2", "families": ["1xk"], "repeats": 2},
    "planned": {
        "00aa": {"config_id": "00aa", "tiling": "1x2", "family": "1xk", "height": 378, "width": 652, "crops": 3,
                 "image_tokens": 223, "sequence_tokens": 229},
        "00bb": {"config_id": "00bb", "tiling": "1x1", "family": "1xk", "height": 378, "width": 378, "crops": 2,
                 "image_tokens": 172, "sequence_tokens": 175},
    },
    "hosts": {"a1": {"node_id": "n1", "pid": 7, "describe": {"device": "cpu"}}},
    "invocations": [{"command": "run", "started_at": "2026-11-26T07:28:30+00:00", "spec": {"repeats": 2},
                     "finished_at": "2026-11-26T07:28:51+00:00", "measured": 2, "ok": 2, "failed": 0,
                     "retries": 0, "interrupted": False, "remaining": 0, "elapsed_s": 20.5}],
    "environment": {"python": "3.11.7", "argv": ["tilesweep", "run"]},
    "counts": {"planned": 2, "ok": 2, "failed": 0, "missing": 0},
}


def test_the_previous_layout_reads_into_the_record():
    m = Manifest.from_json(PREVIOUS)
    assert m.version == VERSION and m.run_id == "r1" and m.profile_name == "molmo2"
    assert m.planned["00aa"] == PlannedEntry(config_id="00aa", tiling="1x2", family="1xk", height=378, width=652,
                                             crops=3, image_tokens=223, sequence_tokens=229)
    [inv] = m.invocations
    assert (inv.command, inv.planned, inv.ok, inv.interrupted, inv.elapsed_s) == ("run", None, 2, False, 20.5)
    assert m.counts == Counts(planned=2, ok=2, failed=0, missing=0)
    assert m.hosts["a1"]["pid"] == 7 and m.environment["argv"] == ["tilesweep", "run"]


def test_a_hand_made_manifest_with_few_keys_reads_with_defaults():
    m = Manifest.from_json({"spec": {"model": "x"}, "planned": {"cfg-1x2": {"tiling": "1x2", "crops": 3}}})
    assert m.run_id is None and m.invocations == () and m.counts is None
    assert m.planned["cfg-1x2"].config_id == "cfg-1x2" and m.planned["cfg-1x2"].height is None


def test_round_trip_writes_the_current_version(tmp_path):
    m = Manifest.from_json(PREVIOUS)
    m = Manifest(**{**{f: getattr(m, f) for f in m.__dataclass_fields__},
                    "invocations": (Invocation(command="fill", started_at="t", planned=("00aa",)),)})
    RunStore(tmp_path, "r1").write_manifest(m)
    on_disk = json.loads((tmp_path / "r1" / "manifest.json").read_text())
    assert on_disk["version"] == VERSION and on_disk["invocations"][0]["planned"] == ["00aa"]
    assert read(tmp_path / "r1" / "manifest.json") == m


@pytest.mark.parametrize("data, needle", [
    ([1, 2], "holds a JSON list, not an object"),
    ({**PREVIOUS, "version": VERSION + 1}, f"has manifest version {VERSION + 1}, newer than this tilesweep reads"),
    ({**PREVIOUS, "version": "2"}, "version '2' is not a manifest version"),
    ({**PREVIOUS, "planned": ["00aa"]}, "planned is a list, not an object"),
    ({**PREVIOUS, "planned": {"00aa": {"crops": "three"}}}, "crops 'three' is not an integer"),
    ({**PREVIOUS, "invocations": [{"planned": "00aa"}]}, "an invocation's planned is not a list of config ids"),
    ({**PREVIOUS, "counts": {"ok": 1}}, "lack one of planned, ok, failed, missing"),
])
def test_a_malformed_manifest_is_one_line_naming_the_field(tmp_path, data, needle):
    path = tmp_path / "r1" / "manifest.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError) as info:
        read(path)
    assert needle in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_invariant_holds_on_a_run_with_a_previous_layout_manifest(tmp_path, make_records):
    store = RunStore(tmp_path, "r1")
    store.write_part(make_records("r1", "00aa", 1, tiling=(1, 2)))
    store.write_part(make_records("r1", "00bb", 1, tiling=(1, 1)))
    (tmp_path / "r1" / "manifest.json").write_text(json.dumps(PREVIOUS))
    report = check(tmp_path, "r1")
    assert report.ok, report.problems
    assert (report.counts["planned"], report.counts["ok"]) == (2, 2)
    # Its counts still have to match the parts.
    (tmp_path / "r1" / "manifest.json").write_text(json.dumps({**PREVIOUS, "counts": {**PREVIOUS["counts"], "ok": 1}}))
    assert any("counts {'planned': 2, 'ok': 1" in p for p in check(tmp_path, "r1").problems)


def test_the_invariant_compares_planned_with_what_the_invocations_planned(tmp_path, make_records):
    store = RunStore(tmp_path, "r1")
    store.write_part(make_records("r1", "00aa", 1, tiling=(1, 2)))
    store.write_part(make_records("r1", "00bb", 1, tiling=(1, 1)))
    current = {**PREVIOUS, "version": VERSION,
               "invocations": [{**PREVIOUS["invocations"][0], "planned": ["00aa"]}]}
    (tmp_path / "r1" / "manifest.json").write_text(json.dumps(current))
    assert check(tmp_path, "r1").problems == [
        "manifest.json: 1 planned config(s) that no invocation's spec plans, e.g. 00bb"]
    current["invocations"].append({**PREVIOUS["invocations"][0], "command": "fill", "planned": ["00bb", "00cc"]})
    (tmp_path / "r1" / "manifest.json").write_text(json.dumps(current))
    assert check(tmp_path, "r1").problems == [
        "manifest.json: 1 config(s) the invocations' specs plan are missing from `planned`, e.g. 00cc"]
