"""Pictures for people: a confusion matrix, scatter plots, line plots, histograms and bar charts (matplotlib figures)
and captioned image grids (Pillow), each returned as a PIL image.

The charts are matplotlib figures drawn on the Agg canvas of each call's own Figure: no pyplot, no global backend or
style is touched, and matplotlib is imported only when a chart is drawn (importing trainkit stays fast). The caller
saves a picture (`image.save(path)`) or hands `to_tensor(image)` to TensorBoard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WHITE, BLACK = (255, 255, 255), (20, 20, 20)
GREEN, RED, BLUE = (40, 150, 60), (205, 40, 40), (31, 88, 160)
ORANGE, SKY = (240, 130, 60), (90, 170, 240)
DPI = 100  # a chart of size (600, 480) is 6 × 4.8 inches: fonts in points read as they do on a page


def font(size: int = 13) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def to_tensor(image: Image.Image) -> Tensor:
    """3×H×W float in [0, 1], as TensorBoard's add_image wants it."""
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _text_size(text: str, f: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = f.getbbox(text)
    return int(right - left), int(bottom - top)


def _figure(size: tuple[float, float]) -> Figure:
    """A figure of `size` pixels with its own Agg canvas: nothing shared with pyplot or other calls."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _image(fig: Figure) -> Image.Image:
    """The figure's pixels as an RGB image, straight from the canvas's buffer (no file, no PNG round trip)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return Image.fromarray(np.ascontiguousarray(rgba[:, :, :3]), "RGB")


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255 for c in colour)  # type: ignore[return-value]


def _text_width(text: str, points: float) -> float:
    """The width of `text` in points at a font size of `points`, measured without drawing."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    return text_to_path.get_text_width_height_descent(text, FontProperties(size=points), ismath=False)[0]


def confusion_image(matrix: Tensor, names: Sequence[str], title: str) -> Image.Image:
    """Rows are true classes, columns predicted ones; a cell's shade grows with its share of the row (on a
    square-root scale, so a few percent of errors still shows), its number is the count (left out when the classes
    are too many to print legibly). The picture grows with the number of classes."""
    from matplotlib.colors import PowerNorm

    k = len(names)
    cell = 0.44 if k <= 12 else max(0.10, 5.28 / k)  # inches: the grid is 5.28 in across from 12 to 52 classes
    label_pt = min(10.0, cell * 72 * 0.9)
    label_in = max((_text_width(str(n), label_pt) for n in names), default=0) / 72
    rows = matrix.double()
    shares = (rows / rows.sum(1, keepdim=True).clamp_min(1)).numpy()
    side = k * cell
    width = max(side + label_in + 1.6, _text_width(title, 11) / 72 + 0.3)  # room for the title, too
    fig = _figure((width * DPI, (side + label_in + 1.2) * DPI))
    ax = fig.add_subplot()
    # pcolormesh: cells with white edges between them, cheaper than a grid of minor ticks
    shade = ax.pcolormesh(shares, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), edgecolors="white",
                          linewidth=min(0.8, 0.08 * cell * 72))
    ax.set_aspect("equal")
    ax.invert_yaxis()  # the first true class on top
    ticks = np.arange(k) + 0.5
    ax.set_xticks(ticks, [str(n) for n in names], fontsize=label_pt, rotation=90)
    ax.set_yticks(ticks, [str(n) for n in names], fontsize=label_pt)
    ax.tick_params(length=0)
    ax.set_xlabel("predicted", fontsize=10, color="0.35")
    ax.set_ylabel("true", fontsize=10, color="0.35")
    fig.suptitle(title, fontsize=11, x=0.02, ha="left")  # the axes are centred: align with the figure's edge
    for edge in ax.spines.values():
        edge.set_visible(False)
    counts = matrix.long().tolist()
    digits = max((len(str(c)) for row in counts for c in row), default=1)
    count_pt = min(10.0, 0.85 * cell * 72 / (0.62 * digits))  # 0.62: a digit's width per point of font size
    if count_pt >= 6:  # smaller is not legible
        for i, row in enumerate(counts):
            for j, count in enumerate(row):
                if count:
                    ax.text(j + 0.5, i + 0.5, str(count), ha="center", va="center", fontsize=count_pt,
                            color="white" if shares[i, j] ** 0.5 > 0.6 else "black",
                            in_layout=False)  # inside the cells: the layout need not measure them
    bar = fig.colorbar(shade, ax=ax, shrink=0.8, pad=0.02, aspect=30, ticks=[0, 0.05, 0.2, 0.5, 1], format="{x:.0%}")
    bar.set_label("share of the true class", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return _image(fig)


def image_grid(images: Tensor, captions: Sequence[str] | None = None, nrow: int = 8,
               zoom: int | None = None) -> Image.Image:
    """N×C×H×W images in [0, 1] as one picture, `nrow` to a row, each with its caption lines below it.
    Small images are enlarged by whole pixels (`zoom`, default: to about 96 pixels) so digits stay crisp.

    A picture, not a chart, so Pillow and not matplotlib: each tile is pasted pixel for pixel, where imshow in a
    figure would resample it to the axes' size (blurred or aliased digits) and add axes nobody reads."""
    n, c, h, w = images.shape
    zoom = zoom or max(1, 96 // max(h, w))
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3)
    f = font(11)
    lines = max((len(cap.split("\n")) for cap in captions), default=0) if captions else 0
    line_h = 13
    cell_w = max([w * zoom] + [_text_size(part, f)[0] for cap in captions or [] for part in cap.split("\n")]) + 6
    cell_h = h * zoom + lines * line_h + 6
    cols = max(1, min(nrow, n))
    image = Image.new("RGB", (cols * cell_w + 4, max(1, math.ceil(n / cols)) * cell_h + 4), WHITE)
    draw = ImageDraw.Draw(image)
    for i in range(n):
        x0, y0 = 4 + (i % cols) * cell_w, 4 + (i // cols) * cell_h
        tile = pixels[i].permute(1, 2, 0).numpy()
        tile = Image.fromarray(tile[:, :, 0] if c == 1 else tile[:, :, :3], "L" if c == 1 else "RGB")
        image.paste(tile, (x0, y0))
        for k, part in enumerate((captions[i] if captions else "").split("\n")):
            draw.text((x0, y0 + h * zoom + 2 + k * line_h), part, font=f, fill=BLACK if k == 0 else RED)
    return image


@dataclass
class Series:
    """One set of points on a plot: N×2 (x, y), its colour and its legend label."""

    points: Tensor
    colour: tuple[int, int, int]
    label: str


def scatter_plot(series: Sequence[Series], title: str, xlabel: str, ylabel: str, diagonal: bool = False,
                 size: tuple[int, int] = (600, 480)) -> Image.Image:
    """Points on shared axes with a legend; `diagonal` draws y = x on equal x and y ranges. Points with a non-finite
    coordinate are left out."""
    small = min(size) < 400  # an epoch picture: smaller type, so the points keep most of the room
    fig = _figure(size)
    ax = fig.add_subplot()
    finite = []
    for s in series:
        pts = s.points[:, :2].detach().double().cpu().numpy()
        pts = pts[np.isfinite(pts).all(1)]
        finite.append(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=6 if small else 10, color=_rgb(s.colour), linewidths=0, label=s.label)
    both = np.concatenate(finite) if finite else np.zeros((0, 2))
    if diagonal:
        lo, hi = _padded(both.min(), both.max()) if len(both) else (-1.0, 1.0)
        ax.plot([lo, hi], [lo, hi], color="0.5", linewidth=1, zorder=0, label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
    elif not len(both):
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
    text_pt = 7 if small else 10
    ax.set_xlabel(xlabel, fontsize=text_pt)
    ax.set_ylabel(ylabel, fontsize=text_pt)
    ax.tick_params(labelsize=text_pt - 1)
    ax.grid(color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    if series:  # above the axes: a legend never hides a point
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=len(series) + diagonal, frameon=False,
                  fontsize=text_pt, markerscale=2, handletextpad=0.4, columnspacing=1, borderaxespad=0.2)
    if title:
        fig.suptitle(title, fontsize=text_pt + 1, x=0.02, ha="left")
    return _image(fig)


@dataclass
class Lines:
    """Curves on a line plot: N×P values at the plot's P x positions (or P values: one curve), one colour, one legend
    label, a line width and an opacity."""

    values: Tensor
    colour: tuple[int, int, int]
    label: str
    width: float = 1.5
    alpha: float = 1.0


def line_plot(x: Tensor, lines: Sequence[Lines], title: str, xlabel: str, ylabel: str, notes: Sequence[str] = (),
              ylim: tuple[float, float] | None = None, size: tuple[int, int] = (600, 480)) -> Image.Image:
    """Curves over shared x positions, with a legend above the axes and `notes` (lines of text) at the top centre of
    the axes, on a white box so a curve under them stays legible."""
    small = min(size) < 400
    text_pt = 7 if small else 10
    fig = _figure(size)
    ax = fig.add_subplot()
    xs = x.detach().double().cpu().numpy()
    for ln in lines:
        values = ln.values.detach().double().cpu().reshape(-1, len(xs)).numpy()
        for i, row in enumerate(values):
            ax.plot(xs, row, color=_rgb(ln.colour), linewidth=ln.width, alpha=ln.alpha,
                    label=ln.label if i == 0 else "_nolegend_")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel, fontsize=text_pt)
    ax.set_ylabel(ylabel, fontsize=text_pt)
    ax.tick_params(labelsize=text_pt - 1)
    ax.grid(color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    if lines:
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=min(len(lines), 2), frameon=False,
                  fontsize=text_pt, handlelength=1.5, handletextpad=0.4, columnspacing=1, borderaxespad=0.2)
    if notes:
        ax.text(0.5, 0.97, "\n".join(notes), transform=ax.transAxes, va="top", ha="center", fontsize=text_pt,
                bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.85, "boxstyle": "round,pad=0.3"})
    if title:
        fig.suptitle(title, fontsize=text_pt + 1, x=0.02, ha="left")
    return _image(fig)


def histogram(values: Tensor, low: float, high: float, title: str, xlabel: str, bins: int = 40,
              reference: tuple[float, float, float] | None = None, reference_label: str = "",
              size: tuple[int, int] = (600, 320)) -> Image.Image:
    """A histogram of `values` on [low, high] as a density (values outside are counted in the end bins, so nothing
    is hidden), and a reference density drawn over it: `reference` = (start, end, height), flat between start and end
    and 0 elsewhere (a uniform distribution)."""
    fig = _figure(size)
    ax = fig.add_subplot()
    v = values.detach().double().cpu().clamp(low, high).numpy()
    ax.hist(v, bins=bins, range=(low, high), density=True, color=_rgb(BLUE), alpha=0.8)
    if reference is not None:
        start, end, height = reference
        ax.plot([low, start, start, end, end, high], [0, 0, height, height, 0, 0], color=_rgb(ORANGE), linewidth=2,
                label=reference_label)
        ax.legend(loc="upper right", frameon=False, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel("density", fontsize=10)
    ax.tick_params(labelsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=11, loc="left")
    return _image(fig)


def bar_chart(values: Sequence[float], labels: Sequence[str], title: str, size: tuple[int, int] = (600, 320)) -> Image.Image:
    """One bar per label, its value printed above it."""
    fig = _figure(size)
    ax = fig.add_subplot()
    labels = [str(label) for label in labels]
    bars = ax.bar(range(len(values)), values, color=_rgb(BLUE), width=0.7)
    ax.bar_label(bars, [_tick_label(v) for v in values], padding=2, fontsize=9, color="0.35")
    room = (size[0] / DPI * 72) / max(len(labels), 1)  # points of width per bar
    tilt = max((_text_width(label, 9) for label in labels), default=0) > 0.9 * room
    ax.set_xticks(range(len(labels)), labels, fontsize=9, rotation=30 if tilt else 0,
                  ha="right" if tilt else "center", rotation_mode="anchor")
    ax.tick_params(axis="x", length=0)
    ax.set_yticks([])
    ax.margins(y=0.15)  # headroom for the values above the bars
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=11, loc="left")
    return _image(fig)


def _padded(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-12:
        return lo - 1, hi + 1
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _tick_label(value: float) -> str:
    return f"{value:.4g}" if value != 0 else "0"
