"""Progress in logs: bars redraw at most every 30 s off a terminal, and training's bar is not redrawn per step;
sample grids: a run keeps every grid of its own and none of another run's."""

from __future__ import annotations

import io
import time

import pytest

from anime_avatar.artifacts import reports
from anime_avatar.core import progress
from tests.test_training import fit, tiny


def test_bars_redraw_every_30_s_in_a_log_and_freely_on_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    assert progress.progress_bar(total=3, file=io.StringIO()).mininterval == 30.0
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    assert progress.progress_bar(total=3, file=io.StringIO()).mininterval == 5.0
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    assert progress.progress_bar(total=3, file=io.StringIO()).mininterval == 0.1  # tqdm's own default


def test_the_monitor_thread_does_not_redraw_a_log_bar_before_its_interval(monkeypatch):
    # tqdm's monitor thread redraws bars idle for maxinterval (10 s by default): under a 30 s mininterval that
    # made log bars redraw every 14-17 s. Here the same race in 3 s: maxinterval 0.2 s against mininterval 1.2 s.
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    monkeypatch.setenv("TQDM_MININTERVAL", "1.2")
    monkeypatch.setattr(progress.tqdm, "monitor_interval", 0.05)
    log = io.StringIO()
    bar = progress.progress_bar(total=10_000, file=log, maxinterval=0.2)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        bar.update()
        time.sleep(0.002)
    bar.close()
    redraws = log.getvalue().replace("\r", "\n").count("it/s") + log.getvalue().count("?it/s]")
    assert bar.maxinterval == 1.2
    assert 2 <= redraws <= 5, f"{redraws} redraws in 3 s at most every 1.2 s"


def test_training_prints_its_bar_a_few_times_not_once_per_step(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    state = fit(tiny(steps=12), tmp_path / "ckpt.pt")  # pytest captures stderr: not a terminal
    assert state.step == 12
    redraws = capsys.readouterr().err.replace("\r", "\n").count("train:")
    assert 1 <= redraws <= 3, f"{redraws} progress lines for 12 steps"


def test_sample_grids_keep_this_runs_steps_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert reports.sample_steps(1000, 300) == [300, 600, 900, 1000]
    assert reports.sample_steps(4, 2) == [2, 4]
    reports.SAMPLES_DIR.mkdir(parents=True)
    for step in (2, 3, 4, 6):  # 2 from the process this run resumed, 3 and 6 from another run's schedule
        reports.sample_grid_path(step).write_bytes(b"png")
    (reports.SAMPLES_DIR / "notes.txt").write_text("not a grid")
    kept = reports.prune_sample_grids(reports.sample_steps(4, 2))
    assert kept == {2: reports.sample_grid_path(2), 4: reports.sample_grid_path(4)}
    assert sorted(p.name for p in reports.SAMPLES_DIR.iterdir()) == ["notes.txt", "step-0000002.png",
                                                                     "step-0000004.png"]  # fmt: skip


@pytest.mark.parametrize("value", ["", "0"])
def test_stage_logs_carry_a_time_unless_the_caller_stamps_lines(value, monkeypatch):
    import logging

    from anime_avatar.core.stage import NO_LOG_TIME_ENV, setup_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setenv(NO_LOG_TIME_ENV, value)
    setup_logging()
    assert root.handlers[0].formatter._fmt.startswith("%(asctime)s")
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setenv(NO_LOG_TIME_ENV, "1")
    setup_logging()
    assert root.handlers[0].formatter._fmt == "%(levelname)s %(name)s: %(message)s"
