"""The picture of a learning-rate range test (`trainkit tune`): the loss against the learning rate on a log scale,
raw and smoothed, with the suggested rate marked. Drawn like every other chart (render.py: its own Agg canvas)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from trainkit.reports.render import BLUE, ORANGE, RED, _figure, _image, _rgb


def lr_range_image(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                   suggestion: float | None, title: str, size: tuple[int, int] = (700, 460)) -> Image.Image:
    fig = _figure(size)
    ax = fig.add_subplot()
    ax.plot(lrs, losses, color=_rgb(BLUE), alpha=0.35, linewidth=1, label="loss")
    ax.plot(lrs, smoothed, color=_rgb(BLUE), linewidth=2, label="smoothed loss")
    if suggestion is not None:
        at = list(lrs).index(suggestion)
        ax.axvline(suggestion, color=_rgb(RED), linewidth=1, linestyle="--")
        ax.plot([suggestion], [smoothed[at]], "o", color=_rgb(ORANGE), label=f"suggested lr {suggestion:.3g}")
    ax.set_xscale("log")
    # The curve up to its lowest point decides the range: the divergence after it would flatten everything else.
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    low, high = smoothed[lowest], max(smoothed[: lowest + 1])
    pad = 0.15 * (high - low) or 0.1
    ax.set_ylim(low - pad, high + 2 * pad)
    ax.set_xlabel("learning rate (log scale)", fontsize=10)
    ax.set_ylabel("training loss", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.grid(color="0.9", linewidth=0.8, which="both")
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=11, x=0.02, ha="left")
    return _image(fig)
