"""Which attempt readers keep: one rule (`kept`), applied alike to rows by the scan and to files by the invariant."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from store.parts import Outcome, kept
from store.scan import dedupe


def test_the_rule():
    ok, failed = "ok", "failed"
    assert kept([Outcome(failed, 1), Outcome(ok, 2)]) == Outcome(ok, 2)  # retried after a failure
    assert kept([Outcome(ok, 1), Outcome(failed, 2)]) == Outcome(ok, 1)  # a later failure does not hide a result
    assert kept([Outcome(failed, 1), Outcome(failed, 3)]) == Outcome(failed, 3)
    assert kept([Outcome(ok, 2), Outcome(ok, 1)]) == Outcome(ok, 2)
    assert kept([]) is None


attempts = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 6), st.sampled_from(["ok", "failed"]),
                              st.integers(1, 3)), max_size=14)


@settings(max_examples=200, deadline=None)
@given(attempts)
def test_the_scan_keeps_what_the_rule_keeps(drawn):
    """Per config, the attempt whose rows `dedupe` returns is the one `kept` names."""
    parts = {(cid, attempt): (status, n) for cid, attempt, status, n in drawn}  # one part per attempt
    rows = [{"run_id": "r", "config_id": cid, "attempt": attempt, "status": status}
            for (cid, attempt), (status, n) in parts.items() for _ in range(n)]
    frame = pl.LazyFrame(rows, schema={"run_id": pl.String, "config_id": pl.String, "attempt": pl.Int64,
                                       "status": pl.String})
    seen = dedupe(frame).collect()
    by_config = {cid: sorted(set(g["attempt"])) for (cid,), g in seen.group_by("config_id")}
    for cid in {c for c, _ in parts}:
        want = kept(Outcome(status, attempt) for (c, attempt), (status, _) in parts.items() if c == cid)
        assert by_config[cid] == [want.attempt]
        assert seen.filter(pl.col("config_id") == cid).height == parts[(cid, want.attempt)][1]
