"""Planning: config ids, tiling selection, cost order and resume by set difference."""

from __future__ import annotations

import dataclasses
import re

import pytest

from orchestrator.plan import config_id, cost, pending, plan, select_points
from orchestrator.spec import SweepSpec, build_spec
from tilesweep.errors import UsageError
from tilings import PROFILES, Tiling, enumerate_tilings, resolution_for, tiling_geometry, tilings_for_crops

MOLMO2 = PROFILES["molmo2"]
V1 = PROFILES["molmo-v1"]


def test_default_families_give_every_1xk_2xk_kx1_tiling_once():
    configs = plan(SweepSpec(), MOLMO2)
    tilings = {c.tiling for c in configs}
    expected = {Tiling(1, k) for k in range(1, 9)} | {Tiling(2, k) for k in range(1, 5)} | {Tiling(k, 1) for k in range(1, 9)}
    assert tilings == expected and len(configs) == len(expected) == 18
    assert len({c.config_id for c in configs}) == 18


def test_configs_carry_the_exact_geometry():
    for c in plan(SweepSpec(), MOLMO2):
        assert (c.height, c.width) == resolution_for(c.tiling, MOLMO2)
        geo = tiling_geometry(c.tiling, MOLMO2)
        assert (c.crops, c.image_tokens, c.sequence_tokens) == (geo.crops, geo.image_tokens, geo.sequence_tokens)


def test_config_id_is_stable_and_depends_only_on_the_measurement():
    spec = SweepSpec(repeats=3)
    base = config_id(spec, MOLMO2, Tiling(2, 3), 1000, 1400)
    assert base == config_id(spec, MOLMO2, Tiling(2, 3), 1000, 1400)
    assert len(base) == 16 and int(base, 16) >= 0
    # Where, how and under which name it runs does not change the id ...
    same = dataclasses.replace(spec, results="elsewhere", run_id="x", workers=7, address="auto", max_attempts=9,
                               families=("all",), config_timeout_s=5.0)
    assert config_id(same, MOLMO2, Tiling(2, 3), 1000, 1400) == base
    # ... every measurement setting, the tiling, the size and the profile's numbers do.
    changed = [
        config_id(dataclasses.replace(spec, repeats=4), MOLMO2, Tiling(2, 3), 1000, 1400),
        config_id(dataclasses.replace(spec, warmup=0), MOLMO2, Tiling(2, 3), 1000, 1400),
        config_id(dataclasses.replace(spec, model="tiny-molmo-v1"), MOLMO2, Tiling(2, 3), 1000, 1400),
        config_id(dataclasses.replace(spec, dtype="bfloat16"), MOLMO2, Tiling(2, 3), 1000, 1400),
        config_id(dataclasses.replace(spec, decode_tokens=8), MOLMO2, Tiling(2, 3), 1000, 1400),
        config_id(dataclasses.replace(spec, seed=1), MOLMO2, Tiling(2, 3), 1000, 1400),
        config_id(spec, MOLMO2, Tiling(3, 2), 1000, 1400),
        config_id(spec, MOLMO2, Tiling(2, 3), 1001, 1400),
        config_id(spec, dataclasses.replace(MOLMO2, max_crops=9), Tiling(2, 3), 1000, 1400),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


# sha256 of the sorted config ids of each scheme's default plan (SweepSpec(model="x", profile=name)), and one id,
# as computed before processor overrides existed (commit 56e8c29): a scheme without overrides keeps its ids.
IDS_BEFORE_OVERRIDES = {
    "molmo-v1": (28, "9aeefb47e24fe938"), "molmo2": (18, "31146c979bf9390b"), "qwen2-vl": (31, "b51d01bc763b697d"),
    "qwen2.5-vl": (31, "7901e0f91598573f"), "qwen3-vl": (21, "885f409b7b638092"),
    "internvl3": (28, "5aecf91709616943"), "llava-onevision": (16, "0b497626dd27dcb0"),
}


def test_config_ids_of_schemes_without_processor_overrides_are_unchanged():
    import hashlib

    assert config_id(SweepSpec(repeats=3), MOLMO2, Tiling(2, 3), 1000, 1400) == "418222c2208a1610"
    for name, (count, digest) in IDS_BEFORE_OVERRIDES.items():
        configs = plan(SweepSpec(model="x", profile=name), PROFILES[name])
        ids = sorted(c.config_id for c in configs)
        assert (len(ids), hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]) == (count, digest), name
        assert {c.processor_overrides for c in configs} == {None}
        assert all("processor_overrides" not in c.as_dict() for c in configs)


def test_processor_overrides_are_planned_per_target_and_enter_the_config_id():
    scheme = PROFILES["idefics3"]
    configs = {c.tiling: c for c in plan(SweepSpec(model="tiny-idefics3", profile="idefics3"), scheme)}
    assert configs[Tiling(1, 2)].processor_overrides == '{"size":{"longest_edge":728}}'
    assert configs[Tiling(2, 3)].processor_overrides == '{"size":{"longest_edge":1092}}'
    # the plan's crops are the processor's with the override, not at the default edge (which gives 2x4 there)
    assert (configs[Tiling(1, 2)].crops, scheme.geometry(364, 728).crops) == (3, 9)
    assert configs[Tiling(1, 2)].as_dict()["processor_overrides"] == '{"size":{"longest_edge":728}}'
    spec = SweepSpec(model="tiny-idefics3", profile="idefics3")
    with_it = config_id(spec, scheme, Tiling(1, 2), 364, 728, '{"size":{"longest_edge":728}}')
    assert configs[Tiling(1, 2)].config_id == with_it
    assert with_it != config_id(spec, scheme, Tiling(1, 2), 364, 728)
    assert with_it != config_id(spec, scheme, Tiling(1, 2), 364, 728, '{"size":{"longest_edge":1092}}')
    assert config_id(spec, scheme, Tiling(1, 2), 364, 728, "") == config_id(spec, scheme, Tiling(1, 2), 364, 728)


def test_profile_given_by_name_or_taken_from_the_model_gives_the_same_ids():
    by_default = plan(SweepSpec(), MOLMO2)
    by_name = plan(SweepSpec(profile="molmo2"), MOLMO2)
    assert [c.config_id for c in by_default] == [c.config_id for c in by_name]


def test_family_is_a_label_not_part_of_the_id():
    from_families = {c.tiling: c.config_id for c in plan(SweepSpec(families=("2xk",)), MOLMO2)}
    from_tilings = {c.tiling: c.config_id for c in plan(SweepSpec(tilings=((2, 1), (2, 3))), MOLMO2)}
    assert from_tilings[Tiling(2, 1)] == from_families[Tiling(2, 1)]
    assert from_tilings[Tiling(2, 3)] == from_families[Tiling(2, 3)]


def test_longest_first_by_cost():
    configs = plan(SweepSpec(families=("all",)), V1)
    costs = [c.cost for c in configs]
    assert costs == sorted(costs, reverse=True)
    # More crops and more tokens cost more; the first config has the most crops.
    assert configs[0].crops == V1.max_crops + 1 and configs[-1].tiling == Tiling(1, 1)
    assert cost(V1, 9, 1000) > cost(V1, 9, 900) and cost(V1, 10, 900) > cost(V1, 9, 900)


def test_crops_without_families_select_every_tiling_giving_them():
    spec = dataclasses.replace(build_spec(None, {"crops": "3,6,9,12"}), families=("all",))  # as `fill` plans
    chosen = [p.tiling for p in select_points(spec, V1)]
    expected = [t for n in (3, 6, 9, 12) for t in tilings_for_crops(n, V1)]
    assert sorted(chosen) == sorted(expected)
    assert {(1, 11), (11, 1), (2, 4), (4, 2), (1, 8), (8, 1)} <= set(chosen)
    family_of = dict(enumerate_tilings(V1, ("1xk", "2xk", "kx1", "all")))
    assert all(p.family == family_of[p.tiling] for p in select_points(spec, V1))


def test_crops_with_families_keep_the_families_tilings_or_take_all_of_a_missing_count():
    # 7 crops: the default families give 1x6, 2x3, 6x1 (not 3x2); 2xk does not reach 4 crops (2x1.5).
    chosen = [p.tiling for p in select_points(build_spec(None, {"crops": "7"}), MOLMO2)]
    assert sorted(chosen) == [(1, 6), (2, 3), (6, 1)]
    chosen = [p.tiling for p in select_points(build_spec(None, {"crops": "4,7", "families": "2xk"}), MOLMO2)]
    assert sorted(chosen) == sorted([*tilings_for_crops(4, MOLMO2), (2, 3)])
    assert sorted(chosen) == [(1, 3), (2, 3), (3, 1)]


def test_tilings_and_crops_together_are_a_union_without_repeats():
    spec = build_spec(None, {"tilings": "1x2,3x2", "crops": "3"})
    assert [p.tiling for p in select_points(spec, MOLMO2)] == [(1, 2), (3, 2), (2, 1)]


@pytest.mark.parametrize("overrides, needle", [
    ({"crops": "12"}, "crop count 12 is unreachable with profile 'molmo2'"),
    # Crops count the global view, as `--crops` does: 3x3 is 10 crops for molmo2, not 9.
    ({"tilings": "3x3"}, re.escape("tiling 3x3 has 10 crops (9 tiles + 1 global view), over the 9 that profile "
                                   "'molmo2' allows (8 tiles + 1)")),
])
def test_impossible_selection_is_a_usage_error(overrides, needle):
    with pytest.raises(UsageError, match=needle):
        plan(build_spec(None, overrides), MOLMO2)


def test_pending_subtracts_done_and_keeps_the_order():
    configs = plan(SweepSpec(), MOLMO2)
    done = {configs[0].config_id, configs[5].config_id}
    left = pending(configs, done)
    assert [c.config_id for c in left] == [c.config_id for i, c in enumerate(configs) if i not in (0, 5)]


def test_family_all_keeps_the_family_each_tiling_belongs_to():
    labels = {c.label(): c.family for c in plan(SweepSpec(families=("all",)), MOLMO2)}
    assert (labels["1x3"], labels["2x2"], labels["3x1"], labels["1x1"]) == ("1xk", "2xk", "kx1", "1xk")
    assert labels["3x2"] == "all" and labels["2x3"] == "2xk"  # only 3x2 belongs to no row or column family
    assert len(labels) == len(MOLMO2.targets())


def test_no_families_named_means_the_profiles_own():
    assert {c.tiling for c in plan(SweepSpec(), MOLMO2)} == {c.tiling for c in plan(
        SweepSpec(families=("1xk", "2xk", "kx1")), MOLMO2)}
    assert SweepSpec().families == () and MOLMO2.default_families == ("1xk", "2xk", "kx1")
