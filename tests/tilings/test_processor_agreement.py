"""Agreement with the real processor: transformers' Molmo2ImageProcessor configured to each profile.

Counts (crops, pooled grids, pooled token count) are compared on every enumerated
tiling and on thousands of seeded resolutions; the processor itself runs on real
images at every tiling's exact canvas and one pixel either side. A disagreement
fails with the resolutions that disagree.
"""

from __future__ import annotations

import random

import pytest

from tilings import PROFILES, Profile, enumerate_tilings, geometry, resolution_for
from tilings.profiles import PRESETS as MOLMO_PRESETS

# The Molmo scheme's presets (other schemes have their own tests).
MOLMO = list(MOLMO_PRESETS)

SEED = 20240924


def sample_resolutions(profile: Profile, seed: int) -> list[tuple[int, int]]:
    """Seeded sizes: ordinary, extreme aspect ratios, tiny, around the margin, huge, and around every canvas."""
    rng = random.Random(seed)
    m = profile.margin_size
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(600)]
    for _ in range(200):  # extreme aspect ratios, both ways
        thin, long = rng.randint(1, 80), rng.randint(800, 60_000)
        sizes += [(thin, long), (long, thin)]
    sizes += [(rng.randint(1, 250), rng.randint(1, 250)) for _ in range(300)]  # very small
    sizes += [(rng.randint(m - 4, m + 4), rng.randint(1, 3000)) for _ in range(100)]  # around the margin
    sizes += [(rng.randint(4000, 200_000), rng.randint(4000, 200_000)) for _ in range(150)]
    for _ in range(150):  # huge sides near rational aspect ratios, where float32 ties live
        h = rng.randint(1, 1 << rng.randint(10, 26))
        w = h * rng.randint(1, profile.max_crops) // rng.randint(1, profile.max_crops) + rng.randint(-3, 3)
        sizes.append((h, max(w, 1)))
    tilings = [t for t, _ in enumerate_tilings(profile, ["all"])]
    for t in tilings:  # every exact canvas and its eight neighbours
        h, w = resolution_for(t, profile)
        sizes += [(h + dh, w + dw) for dh in (-1, 0, 1) for dw in (-1, 0, 1)]
    for _ in range(300):  # a few pixels off random canvases
        h, w = resolution_for(rng.choice(tilings), profile)
        sizes.append((max(1, h + rng.randint(-3, 3)), max(1, w + rng.randint(-3, 3))))
    return sizes


@pytest.mark.parametrize("name", MOLMO)
def test_counts_agree_on_thousands_of_resolutions(name, processors, processor_counts, predicted_counts):
    profile, proc = PROFILES[name], processors[name]
    sizes = sample_resolutions(profile, SEED)
    assert len(sizes) >= 2000
    wrong = []
    for h, w in sizes:
        want = processor_counts(proc, h, w)
        got = predicted_counts(geometry(h, w, profile))
        if got != want:
            wrong.append(f"{h}x{w}: processor {want}, tilings {got}")
    assert not wrong, f"{len(wrong)} of {len(sizes)} resolutions disagree ({name}):\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("name", MOLMO)
def test_processor_run_on_every_tiling_at_its_canvas_and_one_pixel_off(name, processors):
    """The full preprocessing (resize, crops, pooling indices) on a real image, not only its size arithmetic."""
    image_module = pytest.importorskip("PIL.Image")
    profile, proc = PROFILES[name], processors[name]
    wrong = []
    for tiling, _ in enumerate_tilings(profile, ["all"]):
        h0, w0 = resolution_for(tiling, profile)
        for h, w in ((h0, w0), (h0 - 1, w0 - 1), (h0 + 1, w0 + 1)):
            out = proc(images=[image_module.new("RGB", (w, h), (120, 60, 30))], return_tensors="pt")
            want = (
                int(out["image_num_crops"][0]),
                tuple(int(v) for v in out["image_grids"][0]),
                int(out["image_token_pooling"].shape[0]),
                int(out["pixel_values"].shape[0]),
            )
            g = geometry(h, w, profile)
            got = (g.crops, (*g.low_res_grid, *g.high_res_grid), g.image_tokens, g.crops)
            if got != want:
                wrong.append(f"{h}x{w} (tiling {tiling}): processor {want}, tilings {got}")
            if (h, w) == (h0, w0) and g.tiling != tiling:
                wrong.append(f"{h}x{w}: exact canvas of {tiling} gave {g.tiling}")
    assert not wrong, f"{name}:\n" + "\n".join(wrong)
