"""data=curves (the seeds' painter's paintings) and what judges a painter: the family's bounds, the least-squares a,
the share between the bounds, the KS statistic against a uniform a and the residual; and the preset's networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainkit.data.curves import Curves, load
from trainkit.errors import ConfigError
from trainkit.reports.gan import curve_measures, paintings_picture
from trainkit.reports.measures import ks_uniform

TUTORIAL = Curves(points=15, x_low=-1.0, x_high=1.0, family="quadratic", a_low=1.0, a_high=2.0)


def test_paintings_are_the_tutorials():
    data = load(n_train=300, n_val=20, n_test=30, seed=3)
    x = torch.linspace(-1, 1, 15, dtype=torch.float64)
    assert data.train.x.shape == (300, 15) and data.train.x.dtype == torch.float32
    assert data.train.y.shape == (300, 1) and len(data.val) == 20 and len(data.test) == 30
    a = data.train.y.double()
    assert ((a >= 1) & (a <= 2)).all() and a.std() > 0.2, "a uniform in [1, 2]"
    assert torch.allclose(data.train.x.double(), a * x**2 + (a - 1), atol=1e-6)
    lower, upper = TUTORIAL.bounds()
    assert torch.allclose(lower, x**2) and torch.allclose(upper, 2 * x**2 + 1)
    assert TUTORIAL.between(data.train.x).all(), "every painting lies between x² and 2x² + 1"
    meta = data.meta
    assert meta.kind == "regression" and meta.in_shape == (15,) and meta.num_outputs == 1
    assert Curves.from_spec(meta.curve) == TUTORIAL
    assert TUTORIAL.x[7] == 0 and TUTORIAL.x[0] == -1 and TUTORIAL.x[-1] == 1


def test_splits_are_seeded_and_independent():
    a, b, c = load(n_train=50, seed=0), load(n_train=50, seed=0), load(n_train=50, seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, c.train.x) and not torch.equal(a.train.x[:20], a.val.x[:20])
    only_test = load(n_train=50, seed=0, splits=("test",))
    assert only_test.train is None and torch.equal(only_test.test.x, a.test.x)


def test_keys_change_the_paintings():
    data = load(n_train=40, n_val=4, n_test=4, points=5, x_low=0.0, x_high=2.0, a_low=-1.0, a_high=0.5)
    assert data.train.x.shape == (40, 5)
    curves = Curves.from_spec(data.meta.curve)
    assert curves.x.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    a, residual = curves.fit(data.train.x)
    assert torch.allclose(a, data.train.y[:, 0].double(), atol=1e-6) and residual.max() < 1e-6
    assert curves.between(data.train.x).all(), "with a negative a the bounds swap where they cross"


@pytest.mark.parametrize("keys,message", [
    ({"points": 1}, r"data\.points=1 must be a whole number of at least 2"),
    ({"x_low": 1.0, "x_high": 1.0}, r"x range data\.x_low=1\.0 \.\. data\.x_high=1\.0 is empty.*data\.x_low=-1"),
    ({"x_low": 2.0, "x_high": -2.0}, r"x range .* is empty"),
    ({"a_low": 2.0, "a_high": 1.0}, r"range of a, data\.a_low=2\.0 \.\. data\.a_high=1\.0, is reversed"),
    ({"a_low": 1.5, "a_high": 1.5}, r"range of a, .* is empty.*data\.a_low=1 data\.a_high=2"),
    ({"a_low": float("nan")}, r"range of a, data\.a_low=nan"),
    ({"family": "cubic"}, r"data\.family='cubic' is not a family of paintings; choose one of: quadratic"),
    ({"n_train": 0}, r"data\.n_train=0 is not a positive whole number"),
])
def test_bad_keys_say_which_and_how_to_fix(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        load(**keys)
    assert "\n" not in str(err.value) and str(err.value).startswith("curves: ")


def test_bad_keys_from_the_config_name_the_key(compose):
    from trainkit.build import build_data

    with pytest.raises(ConfigError, match=r"data\.points=1 "):
        build_data(compose("data=curves", "data.points=1"))
    with pytest.raises(ConfigError, match=r"data\.points=.* is not a whole number"):
        build_data(compose("data=curves", "data.points=1.5"))


# --- the measures -------------------------------------------------------------------------------------------------

def test_family_paintings_score_perfectly():
    a = torch.rand(4000, generator=torch.Generator().manual_seed(0)) + 1
    m = curve_measures(TUTORIAL, TUTORIAL.paint(a).float())
    assert m["between"] == 1.0 and m["residual"] < 1e-6
    assert torch.allclose(m["a"], a.double(), atol=1e-6), "least squares recovers each a"
    assert m["ks_a"] < 1.63 / math.sqrt(4000), "below the KS test's 1% critical value"


def test_paintings_outside_the_bounds_are_counted():
    a = torch.full((10,), 1.5)
    paintings = TUTORIAL.paint(a)
    paintings[:3, 0] = 3.2  # above the upper bound at x = -1 (3)
    paintings[3, 7] = -0.1  # below the lower bound at x = 0 (0)
    paintings[4, 7] = 0.0  # on the lower bound: still between
    m = curve_measures(TUTORIAL, paintings)
    assert m["between"] == pytest.approx(0.6)
    assert m["residual"] > 0 and m["ks_a"] > 0.4, "every a near 1.5: half the uniform's mass is missed"
    outside = TUTORIAL.paint(torch.tensor([2.5, 0.5]))
    assert not TUTORIAL.between(outside).any()


def test_residual_is_the_distance_from_the_family():
    a = torch.tensor([1.2, 1.8])
    bumped = TUTORIAL.paint(a) + 0.1 * torch.tensor([1.0, -1.0]).repeat(8)[:15]  # orthogonal-ish noise
    fitted, residual = TUTORIAL.fit(bumped)
    assert torch.allclose(residual, torch.full((2,), 0.1, dtype=torch.float64), atol=0.01)
    assert torch.allclose(fitted, a.double(), atol=0.02)


def test_ks_uniform():
    n = 200
    exact = (torch.arange(n, dtype=torch.float64) + 0.5) / n + 1  # the uniform's quantiles: the smallest statistic
    assert ks_uniform(exact, 1, 2) == pytest.approx(0.5 / n)
    assert ks_uniform(torch.full((50,), 1.5), 1, 2) == pytest.approx(0.5)
    assert ks_uniform(torch.full((50,), 0.5), 1, 2) == 1.0 and ks_uniform(torch.full((50,), 7.0), 1, 2) == 1.0
    assert ks_uniform(torch.rand(4000, generator=torch.Generator().manual_seed(1)) + 1, 1, 2) < 0.03


# --- the preset's networks and pictures ---------------------------------------------------------------------------

def test_the_preset_builds_the_tutorials_networks(compose):
    from trainkit.build import build_data, build_task

    cfg = compose("experiment=painter_gan", "data.n_train=64", "data.n_val=64", "data.n_test=64")
    task = build_task(cfg, build_data(cfg).meta)
    g, d = task.gan.generator.net, task.gan.discriminator.net

    def shape(net: nn.Module) -> list[tuple]:
        return [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None))
                for m in net if not isinstance(m, nn.Flatten)]

    assert shape(g) == [("Linear", 5, 128), ("ReLU", None, None), ("Linear", 128, 15)]
    assert shape(d) == [("Linear", 15, 128), ("ReLU", None, None), ("Linear", 128, 1)]
    assert task.gan.generator.low is None, "no squashing of the output"
    assert task.real_label == 1.0 and cfg.optimizer.lr == 1e-4 and cfg.data.batch_size == 64
    assert task.gan(torch.randn(3, 5)).shape == (3, 15)


def test_the_picture_and_the_epoch_picture(compose):
    from trainkit.build import build_data, build_task, examples

    cfg = compose("experiment=painter_gan", "data.n_train=64", "data.n_val=64", "data.n_test=64")
    data = build_data(cfg)
    task = build_task(cfg, data.meta, examples(data.val))
    image = task.epoch_images()["paintings"]
    assert image.shape[0] == 3 and image.shape[1] > 300 and 0 <= image.min() and image.max() <= 1
    picture = paintings_picture(task, task.generate(5), shown=5)
    assert picture.size == (600, 480)
    acc, score = task.discriminator_figures(data.val.x, task.generate(64))
    assert 0 <= acc <= 1 and score < 0
