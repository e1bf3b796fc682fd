"""Pictures for people: a confusion matrix, captioned image grids, scatter plots and bar charts as PIL images.

Drawn with Pillow (already there through torchvision), so reports need no plotting library. The caller
saves them (`image.save(path)`) or hands `to_tensor(image)` to TensorBoard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (20, 20, 20), (110, 110, 110), (228, 228, 228)
GREEN, RED, BLUE = (40, 150, 60), (205, 40, 40), (31, 88, 160)


def font(size: int = 13) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def to_tensor(image: Image.Image) -> Tensor:
    """3×H×W float in [0, 1], as TensorBoard's add_image wants it."""
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _text_size(text: str, f: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = f.getbbox(text)
    return int(right - left), int(bottom - top)


def _vertical_text(canvas: Image.Image, xy: tuple[int, int], text: str, f: ImageFont.ImageFont,
                   fill: tuple[int, int, int]) -> None:
    """Text rotated 90° counter-clockwise, its bottom-left corner at `xy` (bottom to top reading)."""
    w, h = _text_size(text, f)
    strip = Image.new("RGBA", (w + 2, h + 6), (0, 0, 0, 0))
    ImageDraw.Draw(strip).text((0, 0), text, font=f, fill=fill)
    rotated = strip.rotate(90, expand=True)
    canvas.paste(rotated, (xy[0], xy[1] - rotated.height), rotated)


def confusion_image(matrix: Tensor, names: Sequence[str], title: str) -> Image.Image:
    """Rows are true classes, columns predicted ones; a cell's shade grows with its share of the row, its
    number is the count (left out when the classes are too many to print legibly)."""
    k = len(names)
    cell = 44 if k <= 12 else max(10, 520 // k)
    f, small = font(13), font(11 if cell >= 30 else 9)
    label_w = max(_text_size(n, f)[0] for n in names) + 10
    top = 34 + label_w + 6  # title, then the vertical column labels
    left = 26 + label_w
    image = Image.new("RGB", (left + k * cell + 16, top + k * cell + 30), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, font=f, fill=BLACK)
    rows = matrix.double()
    shares = rows / rows.sum(1, keepdim=True).clamp_min(1)
    for i in range(k):
        for j in range(k):
            s = shares[i, j].item() ** 0.5  # a square-root scale: a few percent of errors still shows
            colour = tuple(int(255 * (1 - s) + c * s) for c in BLUE)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=colour, outline=LIGHT)
            count = int(matrix[i, j])
            if cell >= 22 and count:
                text = str(count)
                tw, th = _text_size(text, small)
                draw.text((box[0] + (cell - tw) / 2, box[1] + (cell - th) / 2 - 1), text, font=small,
                          fill=WHITE if s > 0.5 else BLACK)
        w, h = _text_size(names[i], f)
        draw.text((left - w - 6, top + i * cell + (cell - h) / 2 - 2), names[i], font=f, fill=BLACK)
        _vertical_text(image, (left + i * cell + (cell - h) // 2 - 2, top - 6), names[i], f, BLACK)
    _vertical_text(image, (4, top + k * cell // 2 + 20), "true", f, GREY)
    draw.text((left + k * cell // 2 - 30, top + k * cell + 8), "predicted", font=f, fill=GREY)
    return image


def image_grid(images: Tensor, captions: Sequence[str] | None = None, nrow: int = 8,
               zoom: int | None = None) -> Image.Image:
    """N×C×H×W images in [0, 1] as one picture, `nrow` to a row, each with its caption lines below it.
    Small images are enlarged by whole pixels (`zoom`, default: to about 96 pixels) so digits stay crisp."""
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
    """Points on shared axes with ticks and a legend; `diagonal` draws y = x on equal x and y ranges."""
    pts = torch.cat([s.points[:, :2].double() for s in series]) if series else torch.zeros(1, 2)
    pts = pts[torch.isfinite(pts).all(1)]
    if len(pts) == 0:
        pts = torch.zeros(1, 2, dtype=torch.float64)
    lo, hi = pts.min(0).values.tolist(), pts.max(0).values.tolist()
    if diagonal:
        lo, hi = [min(lo)] * 2, [max(hi)] * 2
    x_lo, x_hi = _padded(lo[0], hi[0])
    y_lo, y_hi = _padded(lo[1], hi[1])
    f = font(12)
    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 70, size[0] - 20, 46, size[1] - 50
    to_px = lambda x, y: (left + (x - x_lo) / (x_hi - x_lo) * (right - left),  # noqa: E731
                          bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))
    for t in _ticks(x_lo, x_hi):
        px = to_px(t, y_lo)[0]
        draw.line([(px, top), (px, bottom)], fill=LIGHT)
        label = _tick_label(t)
        draw.text((px - _text_size(label, f)[0] / 2, bottom + 6), label, font=f, fill=GREY)
    for t in _ticks(y_lo, y_hi):
        py = to_px(x_lo, t)[1]
        draw.line([(left, py), (right, py)], fill=LIGHT)
        label = _tick_label(t)
        draw.text((left - _text_size(label, f)[0] - 6, py - 7), label, font=f, fill=GREY)
    draw.rectangle((left, top, right, bottom), outline=GREY)
    if diagonal:
        a, b = max(x_lo, y_lo), min(x_hi, y_hi)
        draw.line([to_px(a, a), to_px(b, b)], fill=GREY, width=1)
    for s in series:
        for x, y in s.points[:, :2].double().tolist():
            if math.isfinite(x) and math.isfinite(y):
                px, py = to_px(x, y)
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=s.colour)
    draw.text((10, 6), title, font=font(13), fill=BLACK)
    draw.text(((left + right) / 2 - _text_size(xlabel, f)[0] / 2, bottom + 26), xlabel, font=f, fill=BLACK)
    _vertical_text(image, (8, (top + bottom) // 2 + _text_size(ylabel, f)[0] // 2), ylabel, f, BLACK)
    x = right  # the legend, right-aligned above the plot: it never hides a point
    for s in reversed(series):
        x -= _text_size(s.label, f)[0] + 26
        draw.ellipse((x, 29, x + 8, 37), fill=s.colour)
        draw.text((x + 12, 26), s.label, font=f, fill=BLACK)
    return image


def bar_chart(values: Sequence[float], labels: Sequence[str], title: str, size: tuple[int, int] = (600, 320)) -> Image.Image:
    """One bar per label, its value printed above it."""
    f = font(12)
    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 20, size[0] - 20, 50, size[1] - 40
    top_value = max(max(values, default=0), 1e-12)
    width = (right - left) / max(len(values), 1)
    for i, (value, label) in enumerate(zip(values, labels)):
        x0 = left + i * width
        y0 = bottom - value / top_value * (bottom - top)
        draw.rectangle((x0 + width * 0.15, y0, x0 + width * 0.85, bottom), fill=BLUE)
        text = _tick_label(value)
        draw.text((x0 + width / 2 - _text_size(text, f)[0] / 2, y0 - 16), text, font=f, fill=GREY)
        draw.text((x0 + width / 2 - _text_size(label, f)[0] / 2, bottom + 6), label, font=f, fill=BLACK)
    draw.line([(left, bottom), (right, bottom)], fill=GREY)
    draw.text((left, 10), title, font=font(13), fill=BLACK)
    return image


def _padded(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-12:
        return lo - 1, hi + 1
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round numbers (1, 2 or 5 × a power of ten apart) inside [lo, hi]."""
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:.4g}" if value != 0 else "0"
