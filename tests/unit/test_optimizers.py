"""Every optimizer config (configs/optimizer/) trains and resumes exactly; every config of a torch scheduler class
(configs/scheduler/, `name: <ClassName>`) moves the learning rate exactly as that class does.

Each run is the Trainer that `trainkit train` runs, on the shipped configs composed as the CLI composes them (one
composition per test: Hydra's is most of a tiny run's time), on a few hundred synthetic regression samples.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from conftest import fit, untimed

from trainkit.cli.compose import config_dir
from trainkit.engine import checkpoint

TINY = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1", "trainer.device=cpu",
        "data.n_train=256", "data.n_val=64", "data.n_test=32", "data.batch_size=16", "model.hidden=[16]"]
OPTIMIZERS = sorted(p.stem for p in (config_dir() / "optimizer").glob("*.yaml"))
# torch's optimizers that trainkit cannot drive: LBFGS steps with a closure, SparseAdam wants sparse gradients,
# Muon takes only 2-D parameters (every model here has biases).
UNUSABLE = {"LBFGS", "SparseAdam", "Muon"}
# scheduler config → overrides that make its schedule visible within one tiny epoch (16 optimizer updates)
SCHEDULES = {
    "exponential": ["scheduler.gamma=0.9"],
    "multistep": ["scheduler.milestones=[3,10]", "scheduler.gamma=0.5"],
    "cosine_restarts": ["scheduler.T_0=4", "scheduler.T_mult=2", "scheduler.eta_min=0.01"],
    "polynomial": ["scheduler.total_iters=20", "scheduler.power=2.0"],
}


@pytest.fixture(autouse=True)
def _threads():
    """trainer.num_threads=1 sets torch's thread count for the whole process: put it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["modules"]["net"]


def config(group: str, name: str) -> dict:
    return yaml.safe_load((config_dir() / group / f"{name}.yaml").read_text())


def test_every_torch_optimizer_that_trainkit_can_drive_has_a_config():
    names = {cls.__name__ for cls in vars(torch.optim).values()
             if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer}
    assert {n.lower() for n in names - UNUSABLE} <= {config("optimizer", o)["name"] for o in OPTIMIZERS}
    assert config("optimizer", "sgd")["momentum"] == 0 and config("optimizer", "momentum")["momentum"] == 0.9


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_learns_and_resumes_exactly(compose, tmp_path, name):
    cfg = compose(f"optimizer={name}", *TINY, "trainer.max_epochs=2")
    rows = fit(cfg, tmp_path / "straight").state.history
    assert rows[1]["train/loss"] < rows[0]["train/loss"] and rows[1]["val/loss"] < rows[0]["val/loss"], rows
    fit(cfg, tmp_path / "halves", epochs=1)
    after_one = tmp_path / "halves" / "checkpoints" / "last.ckpt"
    assert checkpoint.load(after_one)["fit"]["epoch"] == 1
    resumed = fit(cfg, tmp_path / "halves", resume=after_one)
    assert resumed.state.epoch == 2 and [untimed(r) for r in resumed.state.history] == [untimed(r) for r in rows]
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "halves")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_torch_scheduler_config_moves_the_rate_as_its_class_does(compose, tmp_path, name):
    shipped = config("scheduler", name)
    cls = getattr(torch.optim.lr_scheduler, shipped["name"])  # named by torch's own class name
    given = {k.removeprefix("scheduler."): yaml.safe_load(v) for k, v in (o.split("=", 1) for o in SCHEDULES[name])}
    cfg = compose("optimizer=sgd", "optimizer.lr=0.1", f"scheduler={name}", *SCHEDULES[name], *TINY,
                  "trainer.max_epochs=1")
    state = fit(cfg, tmp_path / "run").state
    keys = {k: v for k, v in shipped.items() if k not in ("name", "warmup_epochs")}
    stand_in = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cls(stand_in, **keys)  # the shipped values are the class's own arguments
    schedule = cls(stand_in, **{**keys, **given})
    for _ in range(state.step):  # torch's classes count optimizer updates
        stand_in.step()
        schedule.step()
    expected = stand_in.param_groups[0]["lr"]
    assert state.step == 16 and expected != pytest.approx(0.1)
    assert state.history[-1]["lr/main"] == pytest.approx(expected, rel=1e-6)
