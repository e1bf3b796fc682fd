"""The parts of `trainkit tune` and `trainkit profile`, one at a time: the range test's schedule, smoothing, rule and
stop; the batch finder's search; the start state put back; the phase timers; the options' refusals."""

from __future__ import annotations

import math
from dataclasses import replace
import time

import pytest
import torch

from trainkit.engine import profiling, tuning


def test_the_sweep_is_exponential_from_lr_min_to_lr_max():
    lrs = tuning.lr_schedule(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert all(b / a == pytest.approx(10.0) for a, b in zip(lrs, lrs[1:]))


def test_smoothing_is_debiased_and_follows_the_loss():
    assert tuning.smooth([2.0] * 5, 0.98) == pytest.approx([2.0] * 5), "no pull towards 0 at the start"
    assert tuning.smooth([1.0, 3.0], 0.0) == [1.0, 3.0], "beta 0: the loss itself"


def test_the_suggestion_is_the_steepest_descent_before_the_lowest_loss():
    lrs = tuning.lr_schedule(1e-6, 10.0, 71)
    # A loss that falls fastest around lr 1e-3 (a logistic step in log lr), bottoms out at 1e-1, then rises.
    losses = [2.0 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + (max(0.0, math.log10(lr) + 1)) ** 2
              for lr in lrs]
    i = tuning.steepest_descent(lrs, losses)
    assert lrs[i] == pytest.approx(1e-3, rel=0.2)
    assert tuning.steepest_descent(lrs, sorted(losses)) is None, "a loss that never falls suggests nothing"


@pytest.mark.parametrize("start,cap,limit,expected", [(64, 4096, 300, 300), (512, 4096, 300, 300),
                                                      (32, 100, 10**6, 100), (8, 4096, 0, None), (1, 16, 1, 1)])
def test_the_batch_finder_doubles_then_bisects(start, cap, limit, expected):
    tried = []

    def fits(size: int) -> bool:
        tried.append(size)
        return size <= limit

    assert tuning.largest_fitting(fits, start, cap) == expected
    assert len(tried) <= 2 * math.log2(cap) + 2, "a logarithmic number of trials"
    assert all(s <= cap for s in tried)


def test_powers_of_two_up_to_the_cap():
    assert tuning.powers_of_two(100) == [8, 16, 32, 64]
    assert tuning.powers_of_two(5) == [5]


@pytest.fixture
def built(compose):
    from trainkit import build

    cfg = build.plain(compose("trainer.device=cpu"))  # the default run: an MLP on synthetic regression data
    run = build.build_run(cfg)
    opt = build.build_optimization(cfg, run.task, run.settings, run.device, len(run.loaders["train"]))
    return run, tuning.plain_optimization(opt)


def test_the_range_test_stops_on_divergence_and_the_start_state_comes_back(built):
    run, opt = built
    before = {k: v.clone() for k, v in run.task.net.state_dict().items()}
    start = tuning.StartState(run.task, opt)
    test = tuning.lr_range_test(run.task, run.loaders["train"], opt, tuning.lr_schedule(1e-5, 1e3, 60), 0.9, 4.0)
    assert "passed 4× its lowest" in test.stopped or "became" in test.stopped
    assert test.suggestion is not None and test.lrs[0] <= test.suggestion < test.lrs[-1]
    assert any(not torch.equal(before[k], v) for k, v in run.task.net.state_dict().items())
    start.restore()
    assert all(torch.equal(before[k], v) for k, v in run.task.net.state_dict().items())
    assert not opt.optimizers["main"].state, "the optimizer's moments are gone again"


def test_a_task_with_two_optimizers_has_no_lr_curve(built):
    run, opt = built
    two = replace(opt, optimizers={"gen": opt.optimizers["main"], "disc": opt.optimizers["main"]})
    with pytest.raises(tuning.TuneError, match="steps 2 optimizers .*tune.mode=batch"):
        tuning.lr_range_test(run.task, run.loaders["train"], two, [1e-3] * 5, 0.9, 4.0)


def test_the_cpu_batch_timing_and_a_device_fit(built):
    run, opt = built
    loader = tuning.with_batch_size(run.loaders["train"], 32)
    assert loader.batch_size == 32 and run.loaders["train"].batch_size != 32, "the original loader is unchanged"
    assert tuning.timed_steps(run.task, loader, opt, 2, lambda: None) > 0
    assert tuning.fits(run.task, loader, run.loaders["val"], opt, run.device)


def test_phases_cost_nothing_when_off_and_time_their_own_share_when_on():
    assert profiling.phase("step") is profiling.phase("data"), "one shared do-nothing context"
    with profiling.recording(trace=False) as times:
        with profiling.phase("step"):
            time.sleep(0.02)
            with profiling.phase("backward"):
                time.sleep(0.05)
    assert times.seconds["backward"] >= 0.05
    assert 0.02 <= times.seconds["step"] < 0.05, "the step's own time, the backward inside it left out"
    assert times.counts == {"step": 1, "backward": 1}
    assert times.wall >= sum(times.seconds.values())


def test_the_peak_and_the_flop_count():
    assert profiling.peak_matmul_flops(torch.device("cpu"), seconds=0.05) > 1e8
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert profiling.count_flops(lambda: a @ b) == 2 * 64 * 32 * 16


@pytest.mark.parametrize("words,message", [
    (["tune.lr_min=0.5", "tune.lr_max=0.5"], "tune.lr_min=0.5 must be below tune.lr_max=0.5"),
    (["tune.lr_min=-1"], "tune.lr_min=-1 must be a learning rate above 0"),
    (["tune.steps=-3"], "tune.steps=-3 must be a whole number of at least 5"),
    (["tune.smoothing=1.0"], "tune.smoothing=1.0 must be from 0"),
    (["tune.diverge=1"], "tune.diverge=1 must be above 1"),
    (["tune.smoothing=high"], "tune.smoothing=high must be from 0"),
    (["tune.lr_max=big"], "tune.lr_max=big must be a learning rate above 0"),
    (["tune.max_batch=0"], "tune.max_batch=0 must be a whole number of at least 1"),
])
def test_tune_options_name_the_key(compose, words, message):
    from trainkit.commands.tune import options
    from trainkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        options(compose(*words, config="tune"))


@pytest.mark.parametrize("words,message", [(["profile.steps=0"], "profile.steps=0 must be a whole number"),
                                           (["profile.peak_seconds=0"], "profile.peak_seconds=0 must be")])
def test_profile_options_name_the_key(compose, words, message):
    from trainkit.commands.profile import options
    from trainkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        options(compose(*words, config="profile"))


def test_tune_refuses_resume_before_building_anything(compose, tmp_path):
    from trainkit.commands import Context
    from trainkit.commands.tune import run_tune
    from trainkit.errors import ConfigError

    with pytest.raises(ConfigError, match="resume= is not used by trainkit tune"):
        run_tune(compose("resume=outputs/2026-01-01/00-00-00", config="tune"), Context(tmp_path))
    assert list(tmp_path.iterdir()) == []
