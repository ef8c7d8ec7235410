"""Tiling families and their enumeration."""

from __future__ import annotations

import pytest

from tilings import FAMILIES, PROFILES, Tiling, enumerate_tilings, parse_families


def tilings_of(pairs):
    return [t for t, _ in pairs]


def test_family_names():
    # The grid families first; FAMILIES is every family some registered scheme knows.
    assert FAMILIES[:4] == ("1xk", "2xk", "kx1", "all")
    assert PROFILES["molmo2"].families == PROFILES["molmo-v1"].families == ("1xk", "2xk", "kx1", "all")
    assert set(FAMILIES) == {f for s in PROFILES.values() for f in s.families}


def test_each_family_alone_molmo_v1():
    v1 = PROFILES["molmo-v1"]
    assert tilings_of(enumerate_tilings(v1, ["1xk"])) == [(1, k) for k in range(1, 13)]
    assert tilings_of(enumerate_tilings(v1, ["2xk"])) == [(2, k) for k in range(1, 7)]
    assert tilings_of(enumerate_tilings(v1, ["kx1"])) == [(k, 1) for k in range(1, 13)]
    everything = tilings_of(enumerate_tilings(v1, ["all"]))
    assert sorted(everything) == sorted((r, c) for r in range(1, 13) for c in range(1, 13) if r * c <= 12)
    assert len(everything) == 35


def test_molmo2_limits_the_families():
    m2 = PROFILES["molmo2"]
    assert tilings_of(enumerate_tilings(m2, ["2xk"])) == [(2, 1), (2, 2), (2, 3), (2, 4)]
    assert len(enumerate_tilings(m2, ["all"])) == 20
    assert max(t.rows * t.cols for t in tilings_of(enumerate_tilings(m2, m2.families))) == 8


def test_shared_tilings_appear_once_under_the_first_family():
    pairs = enumerate_tilings("molmo-v1", ["1xk", "2xk", "kx1"])
    tilings = tilings_of(pairs)
    assert len(tilings) == len(set(tilings)) == 12 + 6 + 12 - 2  # 1x1 and 2x1 are shared
    labels = dict(pairs)
    assert labels[(1, 1)] == "1xk" and labels[(2, 1)] == "2xk" and labels[(3, 1)] == "kx1"
    # Order of the families given decides the label.
    assert dict(enumerate_tilings("molmo-v1", ["kx1", "2xk"]))[(2, 1)] == "kx1"
    assert all(isinstance(t, Tiling) for t in tilings)


def test_all_after_named_families_adds_only_the_rest():
    pairs = enumerate_tilings("molmo-v1", ["1xk", "all"])
    labels = dict(pairs)
    assert labels[(1, 5)] == "1xk" and labels[(3, 4)] == "all" and labels[(2, 1)] == "all"
    assert len(pairs) == 35


def test_families_from_a_string_and_repeats():
    assert parse_families("1xk, kx1,1xk") == ["1xk", "kx1"]
    assert enumerate_tilings("molmo2", "2xk") == enumerate_tilings("molmo2", ["2xk"])


@pytest.mark.parametrize("bad", [["3xk"], "1xk,kx2", ["ALL"]])
def test_unknown_family_is_refused(bad):
    with pytest.raises(ValueError, match=r"unknown tiling family '\w+'; known families: 1xk, 2xk, kx1, all"):
        enumerate_tilings("molmo2", bad)


def test_no_family_is_refused():
    with pytest.raises(ValueError, match="no tiling family"):
        enumerate_tilings("molmo2", [])


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        enumerate_tilings("llava", ["1xk"])
