"""Fuzzing the doors a user's input comes through: config values for every typed key, and mutated bytes of every
file format trainkit reads (MNIST CSV, index CSV, PNG, CIFAR-10 batch, checkpoint).

Each case goes through the same checks and readers the CLI uses, in this process, and must end in success or in
trainkit's own error (a UserError, whose message is the one paragraph the CLI prints): never another exception,
never a hang (each case runs under an alarm). Seeded (the `trainkit` profile derandomizes), so CI is repeatable:
about 2,200 cases in a default run; `pytest tests/test_fuzz.py --hypothesis-profile=long` runs 20 times as many.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import mnist_images, write_cifar10, write_mnist_csv, write_pngs
from fuzzing import bounded, examples
from hypothesis import given
from hypothesis import strategies as st

from trainkit.errors import UserError

CASE_SECONDS = 5  # far above any case's time: a case that takes this long is hanging






def outcome(fn, *args, **kwargs) -> str:
    """'ok' or 'refused' (trainkit's error, with a message); anything else fails the test."""
    with bounded(CASE_SECONDS):
        try:
            fn(*args, **kwargs)
        except UserError as err:
            assert str(err).strip(), "a UserError without a message"
            return "refused"
    return "ok"


# --- config values --------------------------------------------------------------------------------------------

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2), st.text(max_size=8),
    st.sampled_from(["auto", "cpu", "32", "bf16-mixed", "stop", "skip", "min", "max", "plain", "none", "high"]),
    st.lists(st.integers(-2, 2000), max_size=3), st.lists(st.floats(-1, 2), min_size=2, max_size=2),
)


class Configs(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing case: keep them short
        return f"<{len(self)} composed train configs>"


@pytest.fixture(scope="module")
def base_configs():
    """The shipped train config for each model and optimizer, as the CLI composes it."""
    from hydra import compose, initialize_config_dir

    from trainkit.cli.compose import config_dir, register_schemas

    register_schemas()
    configs = Configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for model in ("mlp", "cnn", "gan"):
            for optimizer in ("adam", "sgd", "adamw", "rmsprop"):
                for scheduler in ("none", "cosine", "step", "onecycle", "plateau"):
                    configs[(model, optimizer, scheduler)] = compose(
                        config_name="train", overrides=[f"model={model}", f"optimizer={optimizer}",
                                                        f"scheduler={scheduler}"])
    return configs


def typed_keys(cfg) -> list[str]:
    from omegaconf import OmegaConf

    flat = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat.append(f"{prefix}{key}")

    container = OmegaConf.to_container(cfg)
    walk({k: v for k, v in container.items() if k in ("trainer", "data", "model", "optimizer", "scheduler")}, "")
    return [*flat, "seed"]


def check_config(cfg) -> None:
    """What `trainkit train` runs on a config before training: the CLI's preflight, then the model and its
    optimizers built for MNIST-shaped data (small enough sizes only: a fuzzed width of 10⁹ would be refused too,
    but only after allocating what fits)."""
    from omegaconf import OmegaConf

    from trainkit.build import build_optimization, build_settings, build_task, preflight
    from trainkit.data.base import DataMeta

    preflight(cfg)
    sizes = [v for v in OmegaConf.to_container(cfg.model).values() if isinstance(v, (int, list))]
    if any(max(v if isinstance(v, list) else [v], default=0) > 512 for v in sizes):
        return
    meta = DataMeta("fuzz", "classification", (1, 28, 28), 10, scale=255.0, mean=(0.1,), std=(0.3,))
    task = build_task(cfg, meta)
    build_optimization(cfg, task, build_settings(cfg), torch.device("cpu"), 10)


@examples(900)
@given(data=st.data())
def test_every_typed_key_takes_any_value_or_refuses_it_cleanly(base_configs, data):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = base_configs[data.draw(st.sampled_from(sorted(base_configs)))].copy()
    for key in data.draw(st.lists(st.sampled_from(typed_keys(cfg)), min_size=1, max_size=3)):
        try:
            OmegaConf.update(cfg, key, data.draw(VALUES), merge=False)
        except OmegaConfBaseException:
            return  # refused at composition: the CLI turns it into one paragraph (tested in test_validation.py)
    outcome(check_config, cfg)


def test_the_config_fuzz_reaches_both_outcomes(base_configs):
    """The fuzz above is no tautology: good values pass and bad ones are refused by the same function."""
    from omegaconf import OmegaConf

    cfg = base_configs[("mlp", "sgd", "none")].copy()
    assert outcome(check_config, cfg) == "ok"
    OmegaConf.update(cfg, "optimizer.momentum", -1.0, merge=False)
    assert outcome(check_config, cfg) == "refused"


# --- file bytes -----------------------------------------------------------------------------------------------

TOKENS = [b",", b";", b"\t", b"\n", b"\r", b'"', b" ", b"0.5", b"-1", b"256", b"12.0", b"\x00", b"label", b"\xff\xfe"]
MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate", "overwrite"]),
                     st.integers(0, 2**31), st.one_of(st.binary(min_size=1, max_size=12), st.sampled_from(TOKENS)))


def mutate(blob: bytes, mutations) -> bytes:
    """Small edits at random places: what a bad download, a wrong export or a text editor does to a file."""
    data = bytearray(blob)
    for op, where, chunk in mutations:
        i = where % (len(data) + 1)
        if op == "flip" and data:
            data[i % len(data)] ^= chunk[0] or 1
        elif op == "insert":
            data[i:i] = chunk
        elif op == "delete":
            del data[i:i + len(chunk) * 8]
        elif op == "truncate":
            del data[i:]
        elif op == "duplicate":
            data[i:i] = data[i:i + 64]
        else:
            data[i:i + len(chunk)] = chunk
    return bytes(data)


MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One valid file of each format, and the folders they must sit in."""
    root = tmp_path_factory.mktemp("fuzz")
    kaggle, headerless = root / "kaggle.csv", root / "headerless.csv"
    write_mnist_csv(kaggle, n=3, layout="kaggle", seed=0)
    write_mnist_csv(headerless, n=3, layout="headerless", seed=1)
    x, y = mnist_images(3, seed=2)
    write_pngs(root / "images", x, ["a.png", "b.png", "c.png"])
    index = root / "images" / "index.csv"
    index.write_text("filename,label\n" + "".join(f"{n},{k}\n" for n, k in zip("abc", y)))
    cifar = write_cifar10(root / "cifar", n_per_batch=4, batches=(), with_test=True)
    ckpt = root / "model.ckpt"
    _tiny_checkpoint(ckpt)
    return Files({"root": root, "kaggle": kaggle.read_bytes(), "headerless": headerless.read_bytes(),
            "index": index.read_bytes(), "png": (root / "images" / "a.png").read_bytes(),
            "cifar": (cifar / "test_batch").read_bytes(), "cifar_dir": cifar, "ckpt": ckpt.read_bytes()})


class Files(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing case: the mutations say it all
        return f"<valid files under {self['root']}>"


def _tiny_checkpoint(path: Path) -> None:
    from omegaconf import OmegaConf

    from trainkit.build import build_optimization, build_settings, build_task
    from trainkit.data.base import DataMeta, Split
    from trainkit.engine import checkpoint
    from trainkit.engine.loop import FitState

    cfg = OmegaConf.create({"seed": 0, "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
                            "optimizer": {"name": "sgd", "lr": 0.1}, "trainer": {"max_epochs": 1, "device": "cpu"},
                            "data": {"name": "synthetic_regression"}, "scheduler": {"name": "none"}})
    meta = DataMeta("synthetic_regression", "regression", (1,), 1, target_shape=(1,))
    task = build_task(cfg, meta)
    opt = build_optimization(cfg, task, build_settings(cfg), torch.device("cpu"), 1)
    manager = checkpoint.CheckpointManager(path.parent / "unused", task.monitor, task.monitor_mode)
    data = checkpoint.data_section(meta, Split(torch.zeros(2, 1), torch.zeros(2, 1)))
    checkpoint.save(path, checkpoint.make_payload(OmegaConf.to_yaml(cfg), task.modules(), opt, FitState(), manager,
                                                  data))


def written(files, name: str, blob: bytes, folder: Path | None = None) -> Path:
    path = (folder or files["root"]) / name
    path.write_bytes(blob)
    return path


@examples(400)
@given(layout=st.sampled_from(["kaggle", "headerless"]), mutations=MUTATIONS)
def test_mnist_csv_bytes(files, layout, mutations):
    from trainkit.data.mnist_csv import read_split

    path = written(files, "fuzzed.csv", mutate(files[layout], mutations))
    outcome(read_split, str(path), layout="auto", key="data.train_csv", cache=False)


@examples(250)
@given(mutations=MUTATIONS)
def test_index_csv_bytes(files, mutations):
    from trainkit.data.index_csv import Where, read_file_list, read_index

    path = written(files, "fuzzed.csv", mutate(files["index"], mutations), files["root"] / "images")
    outcome(read_index, path, (1, 28, 28), 10, Where("mnist_csv", "data.train_csv"), cache=False)
    outcome(read_file_list, path)


@examples(250)
@given(mutations=MUTATIONS)
def test_png_bytes(files, mutations):
    from trainkit.data.images import read_images

    path = written(files, "fuzzed.png", mutate(files["png"], mutations))
    outcome(read_images, [path], (1, 28, 28), workers=0)


@examples(250)
@given(mutations=MUTATIONS)
def test_cifar_batch_bytes(files, mutations):
    from trainkit.data.cifar10 import load

    written(files, "test_batch", mutate(files["cifar"], mutations), files["cifar_dir"])
    outcome(load, str(files["cifar_dir"].parent), splits=("test",))


@examples(250)
@given(mutations=MUTATIONS)
def test_checkpoint_bytes(files, mutations):
    from trainkit.restore import restore

    path = written(files, "fuzzed.ckpt", mutate(files["ckpt"], mutations))
    outcome(restore, path)


def test_the_file_fuzz_reaches_both_outcomes(files):
    from trainkit.data.mnist_csv import read_split
    from trainkit.restore import restore

    good = written(files, "good.csv", files["kaggle"])
    assert outcome(read_split, str(good), layout="auto", key="data.train_csv", cache=False) == "ok"
    bad = written(files, "bad.csv", files["kaggle"].replace(b",0,", b",x,", 1) if b",0," in files["kaggle"]
                  else files["kaggle"][:-40] + b"x\n")
    assert outcome(read_split, str(bad), layout="auto", key="data.train_csv", cache=False) == "refused"
    assert outcome(restore, written(files, "good.ckpt", files["ckpt"])) == "ok"
    assert outcome(restore, written(files, "bad.ckpt", files["ckpt"][:100])) == "refused"
