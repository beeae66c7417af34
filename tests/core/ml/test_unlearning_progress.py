"""The progress object an unlearning run reports to (no model needed)."""

from __future__ import annotations

from core.ml.unlearning import Progress


def test_a_phase_reports_every_step_to_the_callback() -> None:
    seen: list[tuple[str, int, int]] = []
    progress = Progress(lambda phase, done, total: seen.append((phase, done, total)))
    with progress.phase("phase1", 3, label="child phase1") as step_done:
        for step in range(1, 4):
            step_done(step, 0.5)
    assert seen == [("phase1", 1, 3), ("phase1", 2, 3), ("phase1", 3, 3)]


def test_a_progress_can_be_called_like_the_callback_it_wraps() -> None:
    seen: list[tuple[str, int, int]] = []
    progress = Progress(lambda *step: seen.append(step))
    progress("nudge", 1, 2)
    progress.update("nudge", 2, 2)
    assert seen == [("nudge", 1, 2), ("nudge", 2, 2)]


def test_a_bar_is_drawn_only_when_asked(capsys) -> None:
    with Progress().phase("unlearn", 2, label="quiet") as step_done:
        step_done(1, 0.1)
        step_done(2, 0.1)
    assert "quiet" not in capsys.readouterr().err
    with Progress(bar=True).phase("unlearn", 2, label="loud") as step_done:
        step_done(1, 0.1)
        step_done(2, 0.1)
    assert "loud" in capsys.readouterr().err
