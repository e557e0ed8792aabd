"""What ``vitkit tune`` shows while it runs: a live rich table of the trials on a terminal (the trainer's own
lines are quiet meanwhile), one line per finished trial otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live as RichLive
from rich.table import Table

STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


class Live:
    """The study's trials as a table, refreshed after each epoch and trial."""

    def __init__(self, study: Any, settings: Any, study_dir: Path) -> None:
        self.study, self.settings, self.study_dir = study, settings, study_dir
        self.console = Console(highlight=False)
        self.running: dict[int, tuple[int, float | None]] = {}  # trial -> (epoch, metric so far)
        self.printed: set[int] = set()
        self.live: RichLive | None = None

    def __enter__(self) -> Live:
        from vitkit.engine.console import console

        self.was_quiet, console.quiet = console.quiet, True
        if self.console.is_terminal:
            self.live = RichLive(self.table(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        from vitkit.engine.console import console

        console.quiet = self.was_quiet
        if self.live is not None:
            self.refresh()
            self.live.__exit__(*exc)
        else:
            self.refresh()

    def table(self) -> Table:
        settings = self.settings
        from vitkit.commands.tune.report import counts

        trials = self.study.get_trials(deepcopy=False)
        finished = counts(self.study)["finished"]
        best = _best(self.study)
        title = (
            f"{self.study.study_name}: {finished}/{settings.trials} trials, {settings.metric} ({settings.direction})"
        )
        table = Table(title=title)
        for head in ("#", "state", *(p.key for p in settings.space), settings.metric, "epochs"):
            table.add_column(head, justify="left" if head == "state" else "right")
        for t in trials[-30:]:
            epoch, value = self.running.get(t.number, (t.user_attrs.get("epochs"), t.user_attrs.get("value")))
            row = [str(t.number), f"[{STATE_STYLE.get(t.state.name, '')}]{t.state.name}[/]"]
            row += [_fmt(t.params.get(p.key)) for p in settings.space]
            row += [_fmt(value), _fmt(epoch)]
            table.add_row(*row, style="bold" if best is not None and t.number == best.number else "")
        return table

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table())
            return
        for t in self.study.get_trials(deepcopy=False):
            if t.state.name in ("COMPLETE", "PRUNED", "FAIL") and t.number not in self.printed:
                self.printed.add(t.number)
                self._line(t)

    def _line(self, t: Any) -> None:
        values = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        value = t.user_attrs.get("value")
        error = f" ({t.user_attrs['error']})" if t.state.name == "FAIL" and t.user_attrs.get("error") else ""
        print(
            f"trial {t.number} {t.state.name}: {values} -> {self.settings.metric} {_fmt(value)} "
            f"after {_fmt(t.user_attrs.get('epochs'))} epochs{error}",
            flush=True,
        )

    def epoch(self, number: int, epoch: int, value: float | None) -> None:
        self.running[number] = (epoch, value)
        if self.live is not None:
            self.refresh()

    def trial_done(self, number: int, state: Any) -> None:
        self.running.pop(number, None)
        self.refresh()


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:
        return None
