"""A study's outputs in its folder: ``trials.csv``, ``best.toml`` (the best trial as a complete recipe),
``history.png``, ``importance.png``, ``params.png``, ``tune.html`` (self-contained) and ``tune_summary.json``;
a multi-objective study writes its Pareto front instead of ``best.toml``: ``front.csv``, ``front/trialN.toml``,
``front.png``. No trial evaluates the test split: each chosen trial's weights are scored on it here, once
(``vitkit eval``'s path, kept in its run as ``eval_test.json``), and shown apart; nothing is ranked on it."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

from vitkit.commands.tune.space import with_values
from vitkit.recipe import Recipe, dump_toml
from vitkit.runs.checkpoint import atomic_write_text

FINISHED = ("COMPLETE", "PRUNED")  # the states that count towards --trials


def counts(study: Any) -> dict[str, int]:
    """Trials by state; ``finished``: COMPLETE + PRUNED, what ``--trials`` counts (the one count of it: the
    header, the live table, the summary and the study's stop all read it here)."""
    from optuna.trial import TrialState

    out = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name.lower()] += 1
    out["finished"] = sum(out[state.lower()] for state in FINISHED)
    return out


def test_note(settings: Any) -> str:
    """What a chosen trial's reported test accuracy is, and whether ``vitkit run`` of its recipe gives it."""
    if settings.folds:
        k = settings.folds
        return (
            f"the mean over the {k} fold models of the trial (each trained on {k - 1}/{k} of train+val); vitkit "
            f"run of its recipe trains one model on the usual split instead, and its test accuracy differs"
        )
    return "the trial's kept weights; vitkit run of its recipe trains the same run again and gets the same number"


def _rows(study: Any, settings: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "WAITING":
            continue
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        row.update({p.key: t.params.get(p.key, "") for p in settings.space})
        values = t.user_attrs.get("values") or [t.user_attrs.get("value")]  # a pruned trial: the first only
        for i, metric in enumerate(settings.metrics):
            value = values[i] if i < len(values) else None
            row[metric] = "" if value is None else value
        row["epochs_run"] = t.user_attrs.get("epochs", "")
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        row["error"] = t.user_attrs.get("error", "") if t.state.name == "FAIL" else ""
        rows.append(row)
    return rows


def best_recipe(recipe: Recipe, params: dict[str, Any]) -> Recipe:
    """The study's recipe with the best trial's values: what ``vitkit run best.toml`` trains."""
    return with_values(recipe, params)


def write_outputs(study: Any, recipe: Recipe, settings: Any, study_dir: Path) -> dict[str, Any]:
    """Write every output of the study folder; returns the study summary."""
    rows = _rows(study, settings)
    with open(study_dir / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number", "state"])
        writer.writeheader()
        writer.writerows(rows)
    summary: dict[str, Any] = {
        "study": study.study_name,
        "study_dir": str(study_dir),
        "metric": settings.metric,
        "direction": settings.direction,
        "metrics": settings.metrics,
        "directions": settings.directions,
        "space": [p.text() for p in settings.space],
        "trials_requested": settings.trials,
        "counts": counts(study),
        "best": None,
    }
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    plots: list[tuple[Path, str]] = []
    if settings.multi:
        summary["front"] = []
        if complete:
            summary["front"] = write_front(study, recipe, settings, study_dir)
            plots.append(_front_plot(study, settings, summary["front"], study_dir))
    elif complete:
        best = study.best_trial
        recipe_best = best_recipe(recipe, best.params)
        run_dir = Path(best.user_attrs.get("run_dir", ""))
        tests = score_test(run_dir, recipe.train.device)
        test = _mean(tests)
        header = _header(study, settings, best, study_dir, test, tests)
        atomic_write_text(study_dir / "best.toml", header + dump_toml(recipe_best.to_dict()))
        summary["best"] = {
            "number": best.number,
            "params": best.params,
            "value": best.value,
            "epochs_run": best.user_attrs.get("epochs"),
            "run_dir": str(run_dir),
            "test_acc": test,  # reported apart: scored on the best trial's weights, never ranked on
            "test_acc_of": test_note(settings),
            **({"test_acc_folds": tests} if settings.folds else {}),
            "recipe": str(study_dir / "best.toml"),
        }
    plots += _plots(study, settings, study_dir)
    atomic_write_text(study_dir / "tune_summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    _html(summary, rows, plots, study_dir)
    _print(summary)
    return summary


def write_front(study: Any, recipe: Recipe, settings: Any, study_dir: Path) -> list[dict[str, Any]]:
    """A multi-objective study's Pareto front: ``front.csv`` and one recipe per point, ``front/trialN.toml``;
    each point's test accuracy scored once, reported apart. Sorted by the first metric, best first."""
    points = sorted(study.best_trials, key=lambda t: t.values[0], reverse=settings.direction == "maximize")
    (study_dir / "front").mkdir(exist_ok=True)
    front = []
    for t in points:
        path = study_dir / "front" / f"trial{t.number}.toml"
        scores = ", ".join(f"{m} = {v:.6g}" for m, v in zip(settings.metrics, t.values, strict=True))
        header = f"# vitkit tune: trial {t.number} of study {study.study_name} ({study_dir}), on the front: {scores}\n"
        atomic_write_text(path, header + dump_toml(best_recipe(recipe, t.params).to_dict()))
        run_dir = Path(t.user_attrs.get("run_dir", ""))
        front.append({
            "number": t.number,
            "params": t.params,
            "values": dict(zip(settings.metrics, t.values, strict=True)),
            "run_dir": str(run_dir),
            "test_acc": _mean(score_test(run_dir, recipe.train.device)),  # reported apart, never ranked on
            "test_acc_of": test_note(settings),
            "recipe": str(path),
        })  # fmt: skip
    fields = ["number", *settings.metrics, *(p.key for p in settings.space), "test_acc", "recipe"]
    with open(study_dir / "front.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for point in front:
            writer.writerow({
                "number": point["number"], **point["values"], **point["params"],
                "test_acc": point["test_acc"], "recipe": point["recipe"],
            })  # fmt: skip
    return front


def _front_plot(study: Any, settings: Any, front: list[dict[str, Any]], study_dir: Path) -> tuple[Path, str]:
    """front.png: every complete trial on the first two metrics, the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_metric, y_metric = settings.metrics[1], settings.metrics[0]
    on_front = {point["number"] for point in front}
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    others = [t for t in trials if t.number not in on_front]
    ax.scatter([t.values[1] for t in others], [t.values[0] for t in others], c="tab:gray", label="dominated")
    line = sorted(front, key=lambda p: p["values"][x_metric])
    xs, ys = [p["values"][x_metric] for p in line], [p["values"][y_metric] for p in line]
    ax.plot(xs, ys, "o-", c="tab:red", label="Pareto front")
    for p in line:
        ax.annotate(f"#{p['number']}", (p["values"][x_metric], p["values"][y_metric]), fontsize=8)
    ax.set(
        xlabel=f"{x_metric} ({settings.directions[1]})",
        ylabel=f"{y_metric} ({settings.directions[0]})",
        title="Pareto front",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(study_dir / "front.png", dpi=110)
    plt.close(fig)
    caption = f"{y_metric} against {x_metric} for every complete trial; the front: no trial beats it on both"
    return study_dir / "front.png", caption


def _header(study: Any, settings: Any, best: Any, study_dir: Path, test: float | None, tests: list[float]) -> str:
    """best.toml's header: the trial, its score, and what its reported test accuracy is."""
    over = f" (the mean over {settings.folds} folds)" if settings.folds else ""
    shown = "-" if test is None else f"{test:.4f}"
    per_fold = f" ({', '.join(f'{v:.4f}' for v in tests)})" if settings.folds else ""
    return (
        f"# vitkit tune: trial {best.number} of study {study.study_name} ({study_dir}), "
        f"{settings.metric} = {best.value:.6g}{over}\n"
        f"# test accuracy {shown}{per_fold}, reported apart: {test_note(settings)}\n"
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_test(run_dir: Path, device: str = "auto") -> list[float]:
    """The test accuracy of a chosen trial's kept weights (one per fold model with cross-validation), scored
    once through ``vitkit eval``'s path; later calls read the ``eval_test.json`` it left."""
    runs = (
        [run_dir]
        if (run_dir / "summary.json").is_file()
        else sorted(p.parent for p in run_dir.glob("fold*/summary.json"))
    )
    values = []
    for run in runs:
        saved = run / "eval_test.json"
        if not saved.is_file():
            from vitkit.commands.eval import reevaluate
            from vitkit.engine.console import console

            quiet, console.quiet = console.quiet, True  # its tables: in the run directory, not the study's output
            try:
                reevaluate(run, "test", device)  # writes eval_test.json
            finally:
                console.quiet = quiet
        values.append(float(json.loads(saved.read_text())["test_acc"]))
    return values


def _print(summary: dict[str, Any]) -> None:
    n = summary["counts"]
    line = (
        f"study {summary['study']}: {n['finished']}/{summary['trials_requested']} trials finished "
        f"({n['complete']} complete, {n['pruned']} pruned, {n['fail']} failed)"
    )
    best = summary["best"]
    if best is not None:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        test = "-" if best["test_acc"] is None else f"{best['test_acc']:.4f}"
        line += (
            f"\nbest: trial {best['number']}, {summary['metric']} {best['value']:.4g} ({values}); "
            f"its test accuracy, reported apart: {test}, {best['test_acc_of']}"
            f"\nrecipe: {best['recipe']}  (vitkit run {best['recipe']})"
        )
    for point in summary.get("front", []):
        scores = ", ".join(f"{m} {v:.4g}" for m, v in point["values"].items())
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point["params"].items())
        test = "-" if point["test_acc"] is None else f"{point['test_acc']:.4f}"
        line += f"\nfront: trial {point['number']}: {scores} ({values}); test, apart: {test}; {point['recipe']}"
    if summary.get("front"):
        line += f"\n(front test accuracies: {summary['front'][0]['test_acc_of']})"
    wrote = "front.csv, front/*.toml" if "front" in summary else "best.toml"
    print(line + f"\nwrote {summary['study_dir']}/: trials.csv, {wrote}, tune.html, plots", flush=True)


def _plots(study: Any, settings: Any, study_dir: Path) -> list[tuple[Path, str]]:
    """history.png, importance.png, params.png (matplotlib); the ones there is data for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    scored = [t for t in trials if t.user_attrs.get("value") is not None]
    out: list[tuple[Path, str]] = []
    if not scored:
        return out
    colors = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, color in colors.items():
        these = [t for t in scored if t.state.name == state]
        ax.scatter([t.number for t in these], [t.user_attrs["value"] for t in these], c=color, label=state.lower())
    best_so_far, line = None, []
    for t in sorted((t for t in scored if t.state.name == "COMPLETE"), key=lambda t: t.number):
        v = t.user_attrs["value"]
        if best_so_far is None or (v < best_so_far if settings.direction == "minimize" else v > best_so_far):
            best_so_far = v
        line.append((t.number, best_so_far))
    if line:
        ax.step([n for n, _ in line], [v for _, v in line], where="post", color="tab:green", label="best so far")
    ax.set(xlabel="trial", ylabel=settings.metric, title="optimisation history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(study_dir / "history.png", dpi=110)
    plt.close(fig)
    out.append((study_dir / "history.png", "the metric of every trial (pruned: at the epoch it stopped)"))

    importances = _importances(study, settings)
    if importances:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(importances)))
        keys = list(importances)[::-1]
        ax.barh(keys, [importances[k] for k in keys])
        ax.set(xlabel="importance (fANOVA, complete trials)", title="parameter importance")
        fig.tight_layout()
        fig.savefig(study_dir / "importance.png", dpi=110)
        plt.close(fig)
        out.append((study_dir / "importance.png", "how much of the metric's variance each parameter explains"))

    params = settings.space
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.4), squeeze=False)
    for ax, param in zip(axes[0], params, strict=True):
        for state, color in colors.items():
            these = [t for t in scored if t.state.name == state and param.key in t.params]
            xs = [t.params[param.key] if param.kind != "choice" else str(t.params[param.key]) for t in these]
            ax.scatter(xs, [t.user_attrs["value"] for t in these], c=color, label=state.lower(), s=18)
        if param.kind == "loguniform" and any(t.params[param.key] > 0 for t in scored if param.key in t.params):
            ax.set_xscale("log")  # only with values to scale: a key no trial drew leaves an empty, linear axis
        ax.set(xlabel=param.key, ylabel=settings.metric)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(study_dir / "params.png", dpi=110)
    plt.close(fig)
    out.append((study_dir / "params.png", "the metric against each searched parameter"))
    return out


def _importances(study: Any, settings: Any) -> dict[str, float]:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}
    import optuna

    try:
        if not settings.multi:
            return optuna.importance.get_param_importances(study)
        sign = -1.0 if settings.direction == "maximize" else 1.0  # the evaluator ranks on low target values
        with warnings.catch_warnings():  # its note that it does so
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study, target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few distinct values to tell
        return {}


def _html(summary: dict[str, Any], rows: list[dict[str, Any]], plots: list[tuple[Path, str]], study_dir: Path) -> None:
    from vitkit.evaluation.html_report import esc, figure, link, page, table

    best = summary["best"]
    parts = [f"<h1>vitkit tune: {esc(summary['study'])}</h1>"]
    n = summary["counts"]
    metrics = zip(summary["metrics"], summary["directions"], strict=True)
    objectives = ", ".join(f"{m} ({d})" for m, d in metrics)
    parts.append(
        f"<p>{n['finished']}/{summary['trials_requested']} trials finished ({n['complete']} complete, "
        f"{n['pruned']} pruned, {n['fail']} failed); ranked on {esc(objectives)} "
        f"over: {esc(', '.join(summary['space']))}.</p>"
    )
    if best is not None:
        values = ", ".join(
            f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best["params"].items()
        )
        test = "-" if best["test_acc"] is None else f"{best['test_acc']:.4f}"
        parts.append(
            f"<h2>Best trial</h2><p>trial {best['number']}: {esc(values)}; {esc(summary['metric'])} "
            f"{best['value']:.5g}. Test accuracy, reported apart (never ranked on): {test}, "
            f"{esc(best['test_acc_of'])}. "
            f"Recipe: {link(study_dir / 'best.toml', 'best.toml', study_dir)}</p>"
        )
    if summary.get("front"):
        headers = ["trial", *summary["metrics"], "values", "test acc (apart)", "recipe"]
        cells = [
            [
                point["number"],
                *(f"{v:.4g}" for v in point["values"].values()),
                ", ".join(
                    f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in point["params"].items()
                ),
                "-" if point["test_acc"] is None else f"{point['test_acc']:.4f}",
                link(Path(point["recipe"]), Path(point["recipe"]).name, study_dir),
            ]
            for point in summary["front"]
        ]
        parts.append(
            f"<h2>Pareto front</h2><p>{len(cells)} trials that no other trial beats on every metric "
            f"({esc(', '.join(f'{m} ({d})' for m, d in zip(summary['metrics'], summary['directions'], strict=True)))}"
            f"), one recipe each. Test accuracy, reported apart (never ranked on): "
            f"{esc(summary['front'][0]['test_acc_of'])}.</p>" + table(headers, cells, text_columns=1)
        )
    parts.append("<h2>Plots</h2>" + "".join(figure(path, caption) for path, caption in plots))
    headers = list(rows[0]) if rows else []
    body_rows = []
    best_index = -1
    for i, row in enumerate(rows):
        if best is not None and row["number"] == best["number"]:
            best_index = i
        cells = [f"{v:.4g}" if isinstance(v, float) else v for v in row.values()]
        if row.get("run_dir"):
            cells[headers.index("run_dir")] = link(Path(row["run_dir"]), Path(row["run_dir"]).name, study_dir)
        body_rows.append(cells)
    parts.append("<h2>Trials</h2>" + table(headers, body_rows, text_columns=0, best=best_index))
    (study_dir / "tune.html").write_text(page(f"vitkit tune {summary['study']}", "\n".join(parts)))
