"""Every model family end to end through Ray: its tiny model, its scheme's exact sizes, the processor's own output.

One small sweep per tiny model on the session's cluster (in make test, one model per scheme; the second model
of a scheme in make test-all): every config ok, the
processor produced exactly the crops and image tokens the scheme predicts, the
hooked stages nest inside the forward and cover at least 85% of it (in a config's least disturbed repeat), the run holds
its invariant; the report reads it (for the schemes in NOTES); and `fill --tokens` on the Qwen2.5-VL run adds
every token grid of that count.
"""

from __future__ import annotations

import polars as pl
import pytest

from orchestrator import cli
from store.invariant import check
from store.scan import scan
from tilings import Tiling, get_profile, tilings_for_tokens
from tilings.overrides import configured, parse_overrides, processor_overrides
from workers.summary import FORWARD_STAGES as STAGES

pytestmark = pytest.mark.ray

FAST = ["--warmup", "0", "--repeats", "2", "--workers", "2"]
# Small targets each scheme reaches (budget schemes: grids of merged tokens).
SWEEPS = {
    # the tiny Qwen towers take ~2 ms of fixed glue: from a few hundred tokens on it is under 10%
    "tiny-qwen2.5-vl": ("qwen2.5-vl", "16x24,24x32,32x32"),
    "tiny-qwen3-vl": ("qwen3-vl", "16x24,24x24"),
    "tiny-internvl3": ("internvl3", "1x2,2x2,2x3"),  # at 1x1 the fixed glue is over 10% of the tiny forward
    "tiny-llava-onevision": ("llava-onevision", "1x1,1x2,2x1"),
    # ~2 ms of fixed glue, 7-14 ms at a load of 7 on 2 cores: from 1,024 tokens (Pixtral) or 1,024 patches
    # (Mistral 3, 2x2 per token) on the stages still cover over 90% of the tiny forward
    "tiny-pixtral": ("pixtral", "32x32,32x40"),
    "tiny-mistral3": ("mistral3", "16x16,16x20"),
    # the constant-compute control: every tiling pads to 4 tiles, so two are as good as eight here
    "tiny-mllama": ("mllama-tiny", "1x1,2x2"),
    # 4096 patches a view (the released geometry): ~0.1 s a view; at 1x1 the masks the text model builds before
    # its first block are up to 15% of the tiny forward, from 3 views on under 10%
    "tiny-gemma3": ("gemma3", "1x3,3x1"),
    # 1,024 patches a crop (the released 448/14): the vision stage dominates; 1x1 and 1x2 are 2 and 3 crops
    "tiny-phi4-mm": ("phi4-mm", "1x1,1x2"),
    # each tiling needs its own longest edge (a processor override, 728 for both): the rows check it reached the
    # processor; the zero-crop check and the pixel copy in get_image_features are ~10% of the tiny forward
    "tiny-idefics3": ("idefics3", "1x2,2x1"),
    "tiny-smolvlm": ("smolvlm", "1x2,2x1"),
    # at 1x1 (one tile, 147 tokens) the fixed glue is ~16% of the tiny Llama 4 forward; from 3 tiles on under 10%
    "tiny-llama4": ("llama4", "1x2,2x2"),
    "tiny-cohere2-vision": ("cohere2-vision", "1x1,1x2"),  # 1,024 patches a crop: vision dominates from 1x1
}
# What the report says about separating crop cost from token cost, per scheme. The schemes whose two-target
# sweep leaves the latency model unfitted (Gemma 3, Idefics3, SmolVLM, Phi-4, Llama 4, Cohere2, Pixtral,
# Mistral 3: the same "latency model not fitted" as qwen3-vl) are not rendered here, to keep the suite's time.
NOTES = {
    "qwen2.5-vl": "vision is fitted against encoder patches",
    "qwen3-vl": "latency model not fitted",  # two token counts: too few for the quadratic LLM term
    "internvl3": "the image tokens are a fixed linear function of the crops",
    "llava-onevision": "Separability of crops and tokens in this sweep",
    "mllama-tiny": "constant-compute control: mllama-tiny pads every image to max_image_tiles = 4 tiles",
}


# make test sweeps one model of each scheme; the second model of a scheme (the same kernel, its own worker
# module, tested in-process in tests/workers) runs in make test-all.
SAME_SCHEME = {"tiny-qwen3-vl", "tiny-mistral3", "tiny-smolvlm", "tiny-cohere2-vision"}


def sweep_and_check(tmp_path, model: str):
    """`run` of the model's SWEEPS targets, then every check that holds for any scheme; the results directory."""
    profile, tilings = SWEEPS[model]
    results = tmp_path / "results"
    assert cli.main(["run", "--model", model, "--tilings", tilings, "--results", str(results), "--run-id", "r",
                     *FAST]) == 0
    report = check(results, "r")
    assert report.ok, report.problems
    rows = scan(results).collect()
    wanted = {tuple(int(v) for v in t.split("x")) for t in tilings.split(",")}
    assert set(zip(rows["tiling_rows"], rows["tiling_cols"])) == wanted
    assert set(rows["status"]) == {"ok"}, rows["error"].drop_nulls().to_list()
    assert set(rows["profile"]) == {profile}
    scheme = get_profile(profile)
    for r in rows.iter_rows(named=True):
        # the processor overrides the target needs (idefics3's longest edge; none for most schemes) were planned,
        # recorded and applied: the processor configured with them produced the prediction
        overrides = parse_overrides(r["processor_overrides"])
        assert overrides == processor_overrides(scheme, Tiling(r["tiling_rows"], r["tiling_cols"]))
        predicted = configured(scheme, overrides).geometry(r["height"], r["width"])
        assert (r["crops"], r["image_tokens"], r["sequence_tokens"], r["encoder_patches"]) == (
            predicted.crops, predicted.image_tokens, predicted.sequence_tokens, predicted.encoder_patches)
        # what the processor really produced, counted by the input builder
        assert (r["crops_actual"], r["image_tokens_actual"]) == (predicted.crops, predicted.image_tokens)
        assert all(r[s] > 0 for s in STAGES), {s: r[s] for s in STAGES}
        assert sum(r[s] for s in STAGES) <= r["t_total_ms"]  # the stages nest inside the forward
    # ...and cover at least 85% of it in a config's least disturbed repeat: other work on the machine only adds
    # time, and when it lands in the untimed glue (LLaVA-OneVision's Python feature packing, Gemma 3's masks) one
    # repeat's glue doubles; the fastest-glue repeat is the model's own share
    coverage = (rows.with_columns((pl.sum_horizontal(STAGES) / pl.col("t_total_ms")).alias("c"))
                .group_by("config_id").agg(pl.col("c").max())["c"])
    assert coverage.min() >= 0.85, f"{model}: stages cover {coverage.sort().to_list()}"
    # the report reads the scheme, and says when the scheme itself keeps crops and tokens apart
    if profile in NOTES:
        assert cli.main(["report", str(results), "-o", str(tmp_path / "report")]) == 0
        html = (tmp_path / "report" / "report.html").read_text()
        assert NOTES[profile] in html, NOTES[profile]
    return results


@pytest.mark.parametrize("model", [
    pytest.param(m, marks=pytest.mark.extended) if m in SAME_SCHEME else m
    for m in SWEEPS if m != "tiny-qwen2.5-vl"])  # Qwen2.5-VL: the fill test below sweeps it
def test_a_tiny_model_sweeps_end_to_end(ray_cluster, tmp_path, model):
    sweep_and_check(tmp_path, model)


def test_fill_tokens_adds_every_token_grid_of_a_budget_run(ray_cluster, tmp_path):
    """Qwen2.5-VL end to end (as every scheme above), then `fill --tokens` adds every grid of 16 merged tokens."""
    results = sweep_and_check(tmp_path, "tiny-qwen2.5-vl")
    assert cli.main(["fill", "--tokens", "16", "--results", str(results), *FAST]) == 0
    rows = scan(results).collect()
    grids = set(zip(rows["tiling_rows"], rows["tiling_cols"]))
    sixteen = {tuple(t) for t in tilings_for_tokens(16, "qwen2.5-vl")}
    assert grids == {(16, 24), (24, 32), (32, 32)} | sixteen and len(sixteen) >= 3  # 4x4, 2x8, 8x2, ...
    assert rows.filter(pl.col("tiling_rows") * pl.col("tiling_cols") == 16)["image_tokens"].unique().to_list() == [16]
    assert check(results, "r").ok
