"""How an unlearning run reports where it stands: one object handed from ``run_unlearning`` down to every
optimisation phase, in place of a callback and a console flag passed side by side."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tqdm.auto import tqdm

# callback(phase, done, total): phases are method-specific words ("augment", "phase1", "unlearn", ...)
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Progress:
    """After every optimisation step of a phase, calls ``callback(phase, done, total)`` (e.g. a job's
    heartbeat) and, if ``bar``, advances a console (tqdm) bar for that phase.  ``Progress()`` reports
    nowhere."""

    callback: ProgressFn | None = None
    bar: bool = False

    def update(self, phase: str, done: int, total: int) -> None:
        """``done`` of the ``total`` steps of ``phase`` are finished."""
        if self.callback is not None:
            self.callback(phase, done, total)

    # a Progress stands wherever a ProgressFn is expected: a method that overrides ``run`` may simply call it
    __call__ = update

    @contextmanager
    def phase(self, phase: str, total: int, label: str) -> Iterator[Callable[[int, float], None]]:
        """Opens the bar ``label`` (if ``bar``) for ``total`` steps; yields ``step_done(done, loss)``, to call
        after each step."""
        bar = tqdm(total=total, desc=label, disable=not self.bar, unit="step")

        def step_done(done: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            self.update(phase, done, total)

        try:
            yield step_done
        finally:
            bar.close()
