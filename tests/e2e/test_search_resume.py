"""Resumable Optuna searches through the real CLI: a 6-trial search stopped by Ctrl-C during its 4th trial is
continued by `trainkit sweep resume DIR` into one study of 6 trials (read back with Optuna's API), the finished
trials kept, the stopped one resumed from its checkpoint, and the summary covering every trial."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from conftest import stop_sweep_during_job, job_dir, run_cli

from trainkit.errors import ConfigError
from trainkit.rundirs.search import SearchSettings, make_sampler, space

TRIAL = ["trainer.max_epochs=2", "data.n_train=512", "trainer.checkpoint_every_n_steps=4", "trainer.progress=none",
         "trainer.tensorboard=false"]


def study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="regression", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def test_a_search_stopped_after_3_trials_is_resumed_into_one_study_of_6(tmp_path):
    sweep_dir = tmp_path / "outputs" / "multirun" / "search"
    search = ["hparams_search=regression_optuna", "hydra.sweeper.n_trials=6", *TRIAL]
    stopped = stop_sweep_during_job(sweep_dir, 3, search, tmp_path)
    assert stopped.returncode == 130, stopped.stdout
    assert f"trainkit sweep resume {sweep_dir}" in stopped.stdout
    before = study(sweep_dir).trials
    states = [t.state for t in before]
    # Trials are asked 2 at a time (n_jobs=2): trial 2 has finished, but the study is told after trial 3.
    assert len(before) == 4 and states[:2] == [optuna.trial.TrialState.COMPLETE] * 2
    assert states[3] == optuna.trial.TrialState.RUNNING
    assert json.loads((job_dir(sweep_dir, 2) / "summary.json").read_text())["status"] == "finished"
    assert json.loads((job_dir(sweep_dir, 3) / "summary.json").read_text())["status"] == "interrupted"
    finished = {j: (job_dir(sweep_dir, j) / "summary.json").read_text() for j in (0, 1, 2)}

    out = run_cli("sweep", "resume", str(sweep_dir), cwd=tmp_path).stdout
    assert "continuing its study" in out and "2 of 6 trials done" in out
    assert "trial 3: resuming job 3_" in out and "resuming " in out

    trials = study(sweep_dir).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5], "one study: 6 trials, not 4 + 6"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.params for t in trials[:4]] == [t.params for t in before]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6, "the resumed sampler draws new values"
    for t in trials:  # each trial's value is what its job reported, and job N is trial N
        summary = json.loads((job_dir(sweep_dir, t.number) / "summary.json").read_text())
        assert summary["status"] == "finished" and t.value == summary["best_value"]
    for j, text in finished.items():  # the finished trials did not run again
        assert (job_dir(sweep_dir, j) / "summary.json").read_text() == text
    assert json.loads((job_dir(sweep_dir, 3) / "summary.json").read_text())["epochs"] == 2
    with (sweep_dir / "sweep_summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["job"] for r in rows) == ["0", "1", "2", "3", "4", "5"]
    assert all(r["status"] == "finished" and "resume=" not in r["overrides"] for r in rows)
    assert not (sweep_dir / ".resume").exists()


def test_the_search_space_is_hydras_sweep_grammar_and_the_command_line_fixes_keys():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    settings = SearchSettings(params={"optimizer": "choice(adam, sgd)", "optimizer.lr": "tag(log, interval(1e-4, 0.1))",
                                      "data.batch_size": "range(32, 129, 32)", "model.dropout": "interval(0, 0.5)"})
    searched, fixed = space(settings, ["optimizer=sgd", "seed=3"])
    assert searched == {"optimizer.lr": FloatDistribution(1e-4, 0.1, log=True),
                        "data.batch_size": IntDistribution(32, 128, step=32),
                        "model.dropout": FloatDistribution(0.0, 0.5)}
    assert fixed == {"optimizer": "optimizer=sgd", "seed": "seed=3"}
    assert space(SearchSettings(params={"a": "choice(1, x)"}), [])[0] == {"a": CategoricalDistribution([1, "x"])}


def test_a_resumed_sampler_is_seeded_past_the_trials_so_far():
    first, resumed = make_sampler({"name": "random", "seed": 2}), make_sampler({"name": "random", "seed": 2}, 4)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    draws = []
    for sampler in (first, resumed):
        s = optuna.create_study(sampler=sampler)
        draws.append([s.ask(dist).params["x"] for _ in range(3)])
    assert draws[0] != draws[1]


def test_a_search_refuses_retry_failed_and_an_unknown_sampler_names_the_choices(tmp_path):
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    sweeper = "hydra_plugins.trainkit_optuna.OptunaSweeper"
    (sweep_dir / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    _target_: {sweeper}\n")
    proc = run_cli("sweep", "resume", str(sweep_dir), "--retry-failed", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "its failed trials are results" in proc.stderr
    with pytest.raises(ConfigError, match="hydra.sweeper.sampler.name=tp is not a sampler.*tpe, random"):
        make_sampler({"name": "tp"})
