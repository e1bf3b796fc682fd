"""The first-steps tutorial data: noisy y = x² on an interval, generated in memory from a seed.

It reads no files and does not batch: the batch loader does that.
"""

from __future__ import annotations

import torch

from trainkit.data.base import SPLITS, DataError, DataMeta, DataSplits, Split, asked_splits


def load(
    n_train: int = 2048,
    n_val: int = 512,
    n_test: int = 512,
    noise: float = 0.05,  # std of the Gaussian noise added to x²
    seed: int = 0,
    x_low: float = -2.0,
    x_high: float = 2.0,
    *,
    splits: tuple[str, ...] = SPLITS,  # which to return; not a config key: the command knows what it needs
) -> DataSplits:
    """Three independent draws from one generator seeded with `seed`: float32 N×1 inputs and targets.

    All three are drawn whatever `splits` asks for: each split's values depend on the draws before it.
    """
    asked = asked_splits(splits, "synthetic")
    _check(n_train, n_val, n_test, noise, x_low, x_high)
    gen = torch.Generator().manual_seed(seed)

    def draw(n: int) -> Split:
        x = torch.rand(n, 1, generator=gen) * (x_high - x_low) + x_low
        return Split(x, x * x + noise * torch.randn(n, 1, generator=gen))

    train, val, test = draw(n_train), draw(n_val), draw(n_test)  # in this order: it fixes the stream
    meta = DataMeta(
        name="synthetic_regression", kind="regression", in_shape=(1,), num_outputs=1,
        scale=1.0, mean=None, std=None, target_shape=(1,),
    )
    return DataSplits.asked(asked, train, val, test, meta)


def _check(n_train: int, n_val: int, n_test: int, noise: float, x_low: float, x_high: float) -> None:
    for key, n in (("data.n_train", n_train), ("data.n_val", n_val), ("data.n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise DataError(
                f"synthetic: {key}={n!r} is not a positive whole number of samples. "
                f"Set {key} to an integer of at least 1, e.g. {key}=512."
            )
    if not noise >= 0:  # also refuses NaN
        raise DataError(
            f"synthetic: data.noise={noise!r} is the std of the noise added to x² and cannot be negative. "
            f"Set data.noise to 0 or more, e.g. data.noise=0.05."
        )
    if not x_low < x_high:
        raise DataError(
            f"synthetic: the interval data.x_low={x_low!r} .. data.x_high={x_high!r} is empty. "
            f"Set data.x_low below data.x_high, e.g. data.x_low=-2 data.x_high=2."
        )
