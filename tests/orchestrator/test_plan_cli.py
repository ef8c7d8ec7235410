"""`tilesweep plan`: rows, formats, --crops, --image-tokens, coverage and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import build_parser, main
from tilings import PROFILES, enumerate_tilings, geometry, select_tiling

TABLE_HEADER = ["tiling", "family", "resolution", "crops", "image_tokens", "sequence_tokens"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def csv_rows(capsys, *argv: str) -> list[dict[str, str]]:
    code, out, _ = run(capsys, *argv, "--format", "csv")
    assert code == 0
    return list(csv.DictReader(io.StringIO(out)))


def test_flags_are_pinned():
    """The subcommand's surface, so it does not sprawl unnoticed."""
    plan = build_parser()._subparsers._group_actions[0].choices["plan"]
    flags = sorted(s for a in plan._actions for s in a.option_strings)
    # -v/--verbose: every subcommand takes it after its name too (orchestrator.cli), not only before.
    assert flags == ["--crops", "--family", "--format", "--help", "--image-tokens", "--profile", "--verbose", "-h",
                     "-v"]


def test_default_table_molmo2(capsys):
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == TABLE_HEADER
    body = [line.split() for line in lines[1:] if line and not line.startswith("crop counts")]
    assert len(body) == len(enumerate_tilings("molmo2", ["1xk", "2xk", "kx1"])) == 18
    for tiling, family, resolution, crops, image_tokens, sequence_tokens in body:
        h, w = (int(v) for v in resolution.split("x"))
        g = geometry(h, w, "molmo2")
        assert str(g.tiling) == tiling and family in {"1xk", "2xk", "kx1"}
        assert (int(crops), int(image_tokens), int(sequence_tokens)) == (g.crops, g.image_tokens, g.sequence_tokens)
    # Aligned: numbers right-aligned under their headers, so every table line ends at the same column
    # and each resolution ends where its header does.
    table = lines[: len(body) + 1]
    assert len({len(line) for line in table}) == 1
    end = lines[0].index("resolution") + len("resolution")
    assert all(line[:end].endswith(resolution) for line, (_, _, resolution, *_) in zip(table[1:], body))
    assert lines[-1] == "crop counts covered by 1xk,2xk,kx1 (profile molmo2): 2-9; not reachable with these families: none"


def test_table_is_sorted_by_crops_then_tokens(capsys):
    rows = csv_rows(capsys, "--profile", "molmo-v1", "--family", "all")
    keys = [(int(r["crops"]), int(r["image_tokens"])) for r in rows]
    assert keys == sorted(keys) and len(rows) == 35


def test_csv_rows_are_exact_resolutions(capsys):
    rows = csv_rows(capsys, "--profile", "molmo-v1")
    assert list(rows[0]) == ["tiling", "rows", "cols", "family", "height", "width", "crops", "image_tokens",
                             "sequence_tokens"]
    for r in rows:
        tiling = (int(r["rows"]), int(r["cols"]))
        assert select_tiling(int(r["height"]), int(r["width"]), "molmo-v1") == tiling
        assert r["tiling"] == f"{tiling[0]}x{tiling[1]}"
    by_tiling = {r["tiling"]: r for r in rows}
    assert (by_tiling["1x8"]["width"], by_tiling["1x8"]["image_tokens"]) == ("1904", "960")
    assert (by_tiling["2x4"]["crops"], by_tiling["2x4"]["image_tokens"]) == ("9", "864")


def test_json_document_with_coverage(capsys):
    code, out, _ = run(capsys, "--profile", "molmo-v1", "--family", "2xk", "--format", "json")
    doc = json.loads(out)
    assert code == 0
    assert doc["families"] == ["2xk"] and doc["profile"]["max_crops"] == 12
    assert doc["coverage"] == {"covered": [3, 5, 7, 9, 11, 13], "unreachable": [2, 4, 6, 8, 10, 12]}
    assert [r["tiling"] for r in doc["rows"]] == [f"2x{k}" for k in range(1, 7)]


def test_coverage_line_names_unreachable_counts(capsys):
    _, out, _ = run(capsys, "--profile", "molmo-v1", "--family", "2xk")
    assert out.splitlines()[-1] == ("crop counts covered by 2xk (profile molmo-v1): 3,5,7,9,11,13; "
                                    "not reachable with these families: 2,4,6,8,10,12")
    _, _, err = run(capsys, "--family", "kx1,2xk", "--format", "csv")
    assert err.strip().endswith("2-9; not reachable with these families: none")


def test_crops_restricts_to_those_counts(capsys):
    rows = csv_rows(capsys, "--profile", "molmo-v1", "--crops", "3,6,9,12")
    assert {int(r["crops"]) for r in rows} == {3, 6, 9, 12}
    assert sorted(r["tiling"] for r in rows if r["crops"] == "9") == ["1x8", "2x4", "8x1"]


def test_crops_adds_counts_the_families_miss(capsys):
    rows = csv_rows(capsys, "--profile", "molmo-v1", "--family", "2xk", "--crops", "5,6")
    got = {(r["tiling"], r["family"]) for r in rows}
    # 5 crops is in 2xk (2x2); 6 crops is not, so every 6-crop tiling comes in under its own family.
    assert got == {("2x2", "2xk"), ("1x5", "1xk"), ("5x1", "kx1")}


def test_image_tokens_picks_the_nearest_tilings(capsys):
    rows = csv_rows(capsys, "--profile", "molmo-v1", "--family", "all", "--image-tokens", "870")
    assert {r["tiling"] for r in rows} == {"1x7", "7x1", "2x4", "4x2"}  # all at 864, 6 away
    every = csv_rows(capsys, "--profile", "molmo-v1", "--family", "all")
    best = min(abs(int(r["image_tokens"]) - 870) for r in every)
    assert {r["tiling"] for r in every if abs(int(r["image_tokens"]) - 870) == best} == {r["tiling"] for r in rows}


def test_image_tokens_and_crops_combine(capsys):
    rows = csv_rows(capsys, "--profile", "molmo-v1", "--crops", "9", "--image-tokens", "1000")
    assert [r["tiling"] for r in rows] == ["1x8", "8x1"]


def test_profile_from_a_preprocessor_config_file(capsys, tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"size": {"height": 378, "width": 378}, "max_crops": 4, "patch_size": 14,
                                "pooling_size": [2, 2], "overlap_margins": [4, 4]}))
    rows = csv_rows(capsys, "--profile", str(path), "--family", "all")
    assert max(int(r["crops"]) for r in rows) == 5 and len(rows) == 8


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--profile", "molmo-v1", "--crops", "3,14"], "--crops: crop count 14 is unreachable with profile 'molmo-v1'; crop counts (global crop included) run from 2 to 13"),
        (["--crops", "1"], "--crops: crop count 1 is unreachable"),
        (["--crops", "3,six"], "--crops: must be an integer, got 'six'"),
        (["--family", "1xk,3xk"], "unknown tiling family '3xk'; known families: 1xk, 2xk, kx1, all"),
        (["--profile", "molmo3"], "unknown profile 'molmo3'; known profiles: molmo-v1, molmo2"),
        (["--image-tokens", "0"], "--image-tokens must be a positive number of image tokens, got 0"),
        (["--profile", "nowhere/preprocessor_config.json"], "cannot read preprocessor config"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("tilesweep plan: error: ") and needle in err


def test_bad_format_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--format", "xml"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_installed_command_in_a_subprocess():
    exe = Path(sys.executable).with_name("tilesweep")
    if not exe.exists():
        pytest.skip(f"no tilesweep script beside {sys.executable}")
    bad = subprocess.run([str(exe), "plan", "--profile", "molmo-v1", "--crops", "14"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "tilesweep plan: error: --crops: crop count 14 is unreachable with profile 'molmo-v1'; "
        "crop counts (global crop included) run from 2 to 13"]
    good = subprocess.run([str(exe), "plan", "--profile", "molmo-v1", "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0
    assert len(json.loads(good.stdout)["rows"]) == len(enumerate_tilings(PROFILES["molmo-v1"], ["1xk", "2xk", "kx1"]))
