"""Progress: log lines off a terminal, a live display on one."""

from __future__ import annotations

import io
import logging
import os

from orchestrator.progress import STARTING, LogProgress, RichProgress, make_progress


def drive(progress) -> None:
    progress.start(3, 2)
    progress.worker("w0", STARTING)
    progress.worker("w0", "1x4 (crops 5, attempt 1)")
    progress.worker("w1", "2x2 (crops 5, attempt 1)")
    progress.finished("w0", "1x4", "ok", 1.25, 1)
    progress.retry("w1", "2x2", "actor died (ActorDiedError: killed)")
    progress.worker("w1", "2x2 (crops 5, attempt 2)")
    progress.finished("w1", "2x2", "failed", 0.5, 2)


def test_log_lines_count_finished_failed_and_retried(caplog):
    caplog.set_level(logging.INFO, logger="tilesweep.progress")
    progress = LogProgress()
    drive(progress)
    progress.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "measuring 3 config(s) (2 already done)"
    assert messages[1].startswith("[1/3] 1x4 ok in 1.2s on w0 (elapsed 00:0")
    assert any(m == "w1: actor died (ActorDiedError: killed); requeued 2x2" for m in messages)
    assert any(m.startswith("[2/3] 2x2 failed in 0.5s on w1, attempt 2") for m in messages)
    assert messages[-1].startswith("sweep ended: 1 ok, 1 failed, 1 retried, of 3")


def test_live_display_shows_counts_and_each_worker():
    stream = io.StringIO()
    progress = RichProgress(stream)
    progress.console.force_terminal = False
    drive(progress)
    progress.worker("w2", "8x1 (crops 9, attempt 1)")
    progress.worker("w0", None)
    progress.close()
    text = stream.getvalue()
    assert "2/3" in text and "failed 1" in text and "retried 1" in text
    assert "8x1 (crops 9, attempt 1)" in text and "idle" in text
    assert "2x2 failed on w1 (attempt 2)" in text


def test_make_progress_picks_the_view_by_terminal():
    assert isinstance(make_progress(io.StringIO()), LogProgress)
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            assert isinstance(make_progress(tty), RichProgress)
    finally:
        os.close(master)
