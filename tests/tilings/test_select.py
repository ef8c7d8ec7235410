"""select_tiling: the processor's choice reproduced exactly (float32, tie order, tiny images)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from tilings import PROFILES, Tiling, candidate_tilings, geometry, select_tiling
from tilings.profiles import PRESETS as MOLMO_PRESETS
from tilings.select import select_tiling_raw

# The Molmo scheme's presets (other schemes have their own tests).
MOLMO = list(MOLMO_PRESETS)

np = pytest.importorskip("numpy")

# Image sizes (height, width) found by search where float32 and exact arithmetic pick
# different tilings: two candidates' scales differ by less than float32's precision,
# so they tie and the first in candidate order wins. Only multi-megapixel sides do this.
FLOAT32_SIZES = {
    "molmo-v1": [(30317256, 30317255), (8972143, 71776361), (46152193, 23076151)],
    "molmo2": [(58972887, 58972890), (7366546, 36832284), (14327631, 57310187)],
}


def exact_selection(height: int, width: int, window: int, max_crops: int) -> Tiling:
    """The same rule in exact rational arithmetic: what the processor would do without float32."""
    candidates = candidate_tilings(max_crops)
    scales = [min(Fraction(t.rows * window, height), Fraction(t.cols * window, width)) for t in candidates]
    if all(s < 1 for s in scales):
        return candidates[scales.index(max(scales))]
    scales = [Fraction(10**10) if s < 1 else s for s in scales]
    return candidates[scales.index(min(scales))]


@pytest.fixture(scope="module")
def reference():
    """transformers' own select_tiling (torch float32), on the size with the margin removed."""
    module = pytest.importorskip("transformers.models.molmo2.image_processing_molmo2")
    return module.select_tiling


def test_candidate_order_is_crops_then_rows():
    c = candidate_tilings(12)
    assert len(c) == sum(12 // r for r in range(1, 13)) == 35
    assert c[:5] == ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1))
    assert [t.rows * t.cols for t in c] == sorted(t.rows * t.cols for t in c)
    assert len(set(c)) == len(c) and all(isinstance(t, Tiling) for t in c)


@pytest.mark.parametrize("name", MOLMO)
def test_raw_selection_matches_the_processor_including_empty_and_negative_sizes(name, reference):
    """Below the margin the processor divides by zero (+inf) or by a negative size; so must we."""
    p = PROFILES[name]
    sizes = [(h, w) for h in range(-40, 41, 4) for w in (-300, -1, 0, 1, 7, 223, 224, 225, 1000)]
    sizes += [(0, 0), (-1, -1), (0, 5000), (5000, 0), (-5000, 3), (1, 1)]
    for h, w in sizes:
        want = tuple(int(v) for v in reference(h, w, p.window_size, p.max_crops))
        assert select_tiling_raw(h, w, p.window_size, p.max_crops) == want, (name, h, w)


@pytest.mark.parametrize("name", MOLMO)
@pytest.mark.parametrize("size", [(1, 1), (5, 300), (300, 5), (112, 112), (113, 113), (112, 5000), (14, 14)])
def test_tiny_images(name, size, processors, processor_counts, predicted_counts):
    assert predicted_counts(geometry(*size, PROFILES[name])) == processor_counts(processors[name], *size), size


@pytest.mark.parametrize("name", MOLMO)
def test_float32_ties_follow_the_processor_not_exact_arithmetic(name, processors, processor_counts, predicted_counts):
    p = PROFILES[name]
    for h, w in FLOAT32_SIZES[name]:
        got = select_tiling(h, w, p)
        assert predicted_counts(geometry(h, w, p)) == processor_counts(processors[name], h, w), (h, w)
        # The case is only a test of float32 if exact arithmetic would choose otherwise.
        assert exact_selection(h - p.margin_size, w - p.margin_size, p.window_size, p.max_crops) != got, (h, w)


@pytest.mark.parametrize("name", MOLMO)
def test_exact_rule_agrees_away_from_float32_ties(name):
    """On ordinary sizes the float32 emulation equals the exact rule: the emulation adds nothing else."""
    p = PROFILES[name]
    rng = random.Random(7)
    for _ in range(300):
        h, w = rng.randint(1, 6000), rng.randint(1, 6000)
        assert select_tiling(h, w, p) == exact_selection(h - p.margin_size, w - p.margin_size, p.window_size,
                                                         p.max_crops), (h, w)


def test_ties_go_to_fewer_crops_then_fewer_rows():
    v1 = PROFILES["molmo-v1"]
    # Exactly one window: every tiling covering it needs scale 1; 1x1 is first.
    assert select_tiling(336, 336, v1) == (1, 1)
    # Far larger than any tiling: the least down-scaling is shared by 3x3 and 3x4/4x3; 3x3 has fewer crops.
    assert select_tiling(100_000, 100_000, v1) == (3, 3)
    # Twice as wide as high and huge: 2x4 ties with 2x5, 2x6 and 3x4 (all limited by 2 rows or 4 columns)
    # and has the fewest crops; a last-index argmax would pick another.
    assert select_tiling(20_000 + 112, 40_000 + 112, v1) == (2, 4)


def test_up_and_down_scaling_branches():
    v1 = PROFILES["molmo-v1"]
    # A little wider than 1x2's window: up-scaling to 1x3 needs less than going to 2x2.
    assert select_tiling(336, 561, v1) == (1, 3)
    # Too long for 1x12: everything down-scales, 1x12 down-scales the least.
    assert select_tiling(336, 50_000, v1) == (1, 12)


def test_accepts_numpy_integers_and_profile_names():
    assert select_tiling(np.int64(560), np.int32(1008), "molmo-v1") == (2, 4)


@pytest.mark.parametrize("bad", [0, -1, 1.5, 336.0, "336", True, None])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError, match=r"height must be a positive integer, got " + repr(bad).replace(".", r"\.")):
        select_tiling(bad, 336, "molmo2")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        select_tiling(336, bad, "molmo2")


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown profile 'molmo-v2'"):
        select_tiling(336, 336, "molmo-v2")


@pytest.mark.parametrize("name", MOLMO)
def test_giant_sizes_match_the_processor(name, processors, processor_counts, predicted_counts):
    """Sizes past float32's integers (2**24) and a double's (2**53) are rounded as the processor rounds them."""
    for h, w in [(2**62, 5), (2**60 + 12345, 2**61), (2**40, 3), (2**24 + 1, 2**25 + 3)]:
        assert predicted_counts(geometry(h, w, name)) == processor_counts(processors[name], h, w), (h, w)


def test_sizes_beyond_int64_are_refused():
    with pytest.raises(ValueError, match=r"height must be a positive integer below 9223372036854775808"):
        select_tiling(2**63, 4, "molmo2")
