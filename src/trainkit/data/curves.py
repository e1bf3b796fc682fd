"""The seeds' painter's data: an artist's paintings, each a curve of `points` values y = a·g(x) + h(x) at x evenly
spaced in [x_low, x_high], with its own a drawn uniformly from [a_low, a_high]; generated in memory from a seed.

A painting is one sample (float32 N×points) and its a is its target (float32 N×1): `model=mlp` learns to read a off a
painting (regression), and `model=gan` learns the paintings alone, told so by `DataMeta.curve`. What the GAN's
pictures and report need of the family lives here too (`Curves`): the bounds every painting lies between, and the
least-squares fit of a. It reads no files and does not batch: the batch loader does that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trainkit.data.base import SPLITS, DataMeta, DataSplits, Split, asked_splits
from trainkit.errors import ConfigError

# Each family is affine in a, y = a·g(x) + h(x): a painting's a is then fitted by least squares in closed form, and
# the extremes of every painting at each x are the paintings of a_low and a_high.
Affine = tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]
FAMILIES: dict[str, Affine] = {
    "quadratic": (lambda x: x * x + 1, lambda x: torch.full_like(x, -1.0)),  # the tutorial's a·x² + (a − 1)
}
FORMULAS = {"quadratic": "a·x² + (a − 1)"}
TOLERANCE = 1e-5  # float32 rounding: a painting on its bound is still between the bounds


@dataclass(frozen=True)
class Curves:
    """A family of paintings: where they are sampled (`x`), their formula and the range of a."""

    points: int
    x_low: float
    x_high: float
    family: str
    a_low: float
    a_high: float

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Curves:
        """From `DataMeta.curve` (what a checkpoint carries)."""
        return cls(int(spec["points"]), float(spec["x_low"]), float(spec["x_high"]), str(spec["family"]),
                   float(spec["a_low"]), float(spec["a_high"]))

    def spec(self) -> dict[str, Any]:
        return {"points": self.points, "x_low": self.x_low, "x_high": self.x_high, "family": self.family,
                "a_low": self.a_low, "a_high": self.a_high}

    @property
    def x(self) -> Tensor:
        """The `points` x positions, float64 (x_low + i·step: the middle of [-1, 1] is exactly 0)."""
        steps = torch.arange(self.points, dtype=torch.float64) / (self.points - 1)
        return self.x_low + steps * (self.x_high - self.x_low)

    @property
    def formula(self) -> str:
        return f"y = {FORMULAS.get(self.family, self.family)}, a in [{self.a_low:g}, {self.a_high:g}]"

    def _gh(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """g(x) and h(x) on `like`'s device and in its dtype."""
        g, h = FAMILIES[self.family]
        return g(self.x).to(like), h(self.x).to(like)

    def paint(self, a: Tensor) -> Tensor:
        """The paintings of these a values: len(a)×points, float64 on the CPU (else float32 on a's device)."""
        a = _working(a).reshape(-1, 1)
        g, h = self._gh(a)
        return a * g + h

    def bounds(self, like: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(lower, upper), `points` values each, where every painting lies between them (the tutorial's x² and
        2x² + 1), as `paint` makes them (on `like`'s device)."""
        ends = self.paint(torch.tensor([self.a_low, self.a_high], device=None if like is None else like.device))
        return ends.min(0).values, ends.max(0).values

    def fit(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(a, residual) of each row of `y` (N×points), on y's device: the least-squares a of the family, and the
        root mean square of what is left, y − painting(a), over the points (0 for a painting of the family)."""
        y = _working(y).reshape(len(y), self.points)
        g, h = self._gh(y)
        a = ((y - h) * g).sum(1) / (g * g).sum()
        residual = (y - self.paint(a)).pow(2).mean(1).sqrt()
        return a, residual

    def between(self, y: Tensor) -> Tensor:
        """Whether each row of `y` lies between the bounds at every point, to within float32 rounding (bool N)."""
        y = _working(y).reshape(len(y), self.points)
        lower, upper = self.bounds(y)
        return ((y >= lower - TOLERANCE) & (y <= upper + TOLERANCE)).all(1)


def _working(t: Tensor) -> Tensor:
    """float64 on the CPU (cheap and exact enough to call a family painting's residual 0), float32 on accelerators
    (some have no float64)."""
    return t.double() if t.device.type == "cpu" else t.float()


def load(
    n_train: int = 64000,
    n_val: int = 1024,
    n_test: int = 10000,
    points: int = 15,
    x_low: float = -1.0,
    x_high: float = 1.0,
    family: str = "quadratic",
    a_low: float = 1.0,
    a_high: float = 2.0,
    seed: int = 0,
    *,
    splits: tuple[str, ...] = SPLITS,  # which to return; not a config key: the command knows what it needs
) -> DataSplits:
    """Three independent draws of paintings from one generator seeded with `seed`: a fixed set per split (the same
    paintings every epoch; the default 64,000 are 1,000 batches of 64, more than the GAN can memorize)."""
    asked = asked_splits(splits, "curves")
    curves = _checked(n_train, n_val, n_test, points, x_low, x_high, family, a_low, a_high)
    gen = torch.Generator().manual_seed(seed)

    def draw(n: int) -> Split:
        a = torch.rand(n, 1, generator=gen, dtype=torch.float64) * (a_high - a_low) + a_low
        return Split(curves.paint(a).float(), a.float())

    train, val, test = draw(n_train), draw(n_val), draw(n_test)  # in this order: it fixes the stream
    meta = DataMeta(name="curves", kind="regression", in_shape=(points,), num_outputs=1, target_shape=(1,),
                    curve=curves.spec())
    return DataSplits.asked(asked, train, val, test, meta)


def _checked(n_train: int, n_val: int, n_test: int, points: int, x_low: float, x_high: float, family: str,
             a_low: float, a_high: float) -> Curves:
    for key, n in (("data.n_train", n_train), ("data.n_val", n_val), ("data.n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"curves: {key}={n!r} is not a positive whole number of paintings. Set {key} to an "
                              f"integer of at least 1, e.g. {key}=1024.")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ConfigError(f"curves: data.points={points!r} must be a whole number of at least 2: the values of one "
                          f"painting, sampled at x evenly spaced from data.x_low to data.x_high. Set e.g. "
                          f"data.points=15 (the tutorial's).")
    if not (math.isfinite(x_low) and math.isfinite(x_high) and x_low < x_high):
        raise ConfigError(f"curves: the x range data.x_low={x_low!r} .. data.x_high={x_high!r} is empty: the "
                          f"paintings are sampled between them. Set data.x_low below data.x_high, e.g. "
                          f"data.x_low=-1 data.x_high=1.")
    if family not in FAMILIES:
        raise ConfigError(f"curves: data.family={family!r} is not a family of paintings; choose one of: "
                          f"{', '.join(f'{name} (y = {FORMULAS[name]})' for name in FAMILIES)}, e.g. "
                          f"data.family=quadratic.")
    if not (math.isfinite(a_low) and math.isfinite(a_high) and a_low < a_high):
        said = "reversed" if a_low > a_high else "empty"
        raise ConfigError(f"curves: the range of a, data.a_low={a_low!r} .. data.a_high={a_high!r}, is {said}: each "
                          f"painting's a is drawn uniformly from it. Set data.a_low below data.a_high, e.g. "
                          f"data.a_low=1 data.a_high=2.")
    return Curves(points, float(x_low), float(x_high), family, float(a_low), float(a_high))
