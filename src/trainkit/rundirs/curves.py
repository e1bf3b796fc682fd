"""One picture of several runs: each run's training loss and monitored validation metric per epoch, on shared axes.

A sweep draws it as sweep_curves.png (sweeps.py); `trainkit runs --compare A B --plot PATH` draws it for two
runs. It reads only the runs' metrics.csv files; matplotlib (Agg: no display needed) is imported only here, when drawing.
"""

from __future__ import annotations

import math
from pathlib import Path

from trainkit.rundirs.read import Run, metric_rows

TRAIN_KEY = "train/loss"


def _series(run: Run, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in metric_rows(run.path / "metrics.csv"):
        try:
            epoch, value = float(row["epoch"]), float(row.get(key) or "nan")
        except (KeyError, ValueError):
            continue
        if math.isfinite(value):
            xs.append(epoch)
            ys.append(value)
    return xs, ys


def labels(runs: list[Run]) -> list[str]:
    """Each run's overrides, minus those every run shares (a sweep's fixed keys); the directory name without any."""
    common = [o for o in runs[0].overrides if all(o in r.overrides for r in runs)] if len(runs) > 1 else []
    return [" ".join(o for o in r.overrides if o not in common) or r.path.name for r in runs]


def monitor_of(runs: list[Run]) -> str:
    """The metric the runs monitor (the most common one; val/loss when none has a summary yet)."""
    monitors = [r.monitor for r in runs if r.monitor]
    return max(set(monitors), key=monitors.count) if monitors else "val/loss"


def lines(runs: list[Run]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """What the picture shows: {label: {metric: (epochs, values)}} for train/loss and the monitored metric."""
    keys = (TRAIN_KEY, monitor_of(runs))
    return {label: {key: _series(run, key) for key in keys} for run, label in zip(runs, labels(runs))}


def draw(runs: list[Run], path: Path, title: str = "") -> Path | None:
    """Write the picture to `path` (PNG); None when no run has a metrics.csv row to draw."""
    monitor = monitor_of(runs)
    drawn = lines(runs)
    if not any(xs for series in drawn.values() for xs, _ in series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True, constrained_layout=True)
    for label, series in drawn.items():
        for ax, key in zip(axes, (TRAIN_KEY, monitor)):
            xs, ys = series[key]
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
    for ax, key in zip(axes, (TRAIN_KEY, monitor)):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    if not handles:
        handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(3, max(1, len(names))), fontsize="small")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
