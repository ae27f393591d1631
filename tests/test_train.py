"""The trainer: run-directory rules, CLI input errors, target alignment, the NaN guard, and the real CLI end to end
(train, kill -9, resume, export) on generated WAV files with recipes/tiny.yaml."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from bwe.config import RecipeError, load_recipe, recipe_from_dict
from bwe.rundir import RunDirError, prepare_run_dir
from signals import speech_like, write_wav

tf.config.experimental.enable_op_determinism()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "recipes", "tiny.yaml")


def _env():
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "bwe.train", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Folders of generated 16 kHz speech-like WAVs: train/ (4 files) and valid/ (2 files)."""
    root = tmp_path_factory.mktemp("corpus")
    for split, seeds in (("train", range(4)), ("valid", (100, 101))):
        os.makedirs(root / split)
        for seed in seeds:
            write_wav(root / split / f"utt{seed}.wav", speech_like(1.5, seed=seed), 16000)
    return root


def _latest_step(checkpoint_dir) -> int | None:
    state = os.path.join(checkpoint_dir, "checkpoint")
    if not os.path.exists(state):
        return None
    with open(state) as f:
        match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', f.read())
    return int(match.group(1)) if match else None


# ---- run directory ----------------------------------------------------------------------------------------------


def test_run_dir_resumes_same_recipe_and_accepts_only_bookkeeping_changes(tmp_path):
    run = str(tmp_path / "run")
    recipe = load_recipe(TINY)
    assert prepare_run_dir(run, recipe) == []
    assert load_recipe(os.path.join(run, "recipe.yaml")) == recipe
    assert prepare_run_dir(run, recipe) == []
    longer = load_recipe(TINY, ["train.steps=50", "train.valid_every=7"])
    notes = prepare_run_dir(run, longer)
    assert notes == ["recipe change accepted: train.steps: 20 -> 50", "recipe change accepted: train.valid_every: 10 -> 7"]
    assert load_recipe(os.path.join(run, "recipe.yaml")).train.steps == 50
    other = load_recipe(TINY, ["train.steps=50", "train.valid_every=7", "losses.adversarial=lsgan",
                               "optim.generator_lr=0.001"])
    with pytest.raises(RunDirError) as err:
        prepare_run_dir(run, other)
    assert "losses.adversarial: 'hinge' -> 'lsgan'" in str(err.value)
    assert "optim.generator_lr: 0.0001 -> 0.001" in str(err.value) and "--force" in str(err.value)
    assert load_recipe(os.path.join(run, "recipe.yaml")).losses.adversarial == "hinge"  # untouched
    prepare_run_dir(run, other, force=True)
    assert load_recipe(os.path.join(run, "recipe.yaml")).losses.adversarial == "lsgan"


def test_run_dir_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a bwe run directory"):
        prepare_run_dir(str(tmp_path), recipe_from_dict({}))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
    # A non-chief worker only compares: the chief may be creating the directory right now.
    prepare_run_dir(str(tmp_path), recipe_from_dict({}), write=False)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "recipes")) if f.endswith(".yaml")))
def test_shipped_recipes_load_and_fit_their_segments(name):
    from bwe.models.seanet import generator_delay_samples
    from bwe.training.state import check_lengths

    recipe = load_recipe(os.path.join(REPO, "recipes", name))
    check_lengths(recipe, generator_delay_samples(recipe.model))


def test_a_recipe_extends_another_key_by_key(tmp_path):
    from bwe.config import RecipeError

    (tmp_path / "base.yaml").write_text(open(TINY, encoding="utf-8").read(), encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text("extends: ../base.yaml\nmodel:\n  channels: 8\ntrain:\n  steps: 7\n")
    child, base = load_recipe(sub / "child.yaml"), load_recipe(TINY)
    assert child.model.channels == 8 and child.train.steps == 7
    assert child.model.strides == base.model.strides and child.optim == base.optim  # the rest is the base's
    assert load_recipe(sub / "child.yaml", ["model.channels=16"]).model.channels == 16  # overrides still win
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="extends loops back to itself"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(RecipeError, match="missing.yaml: recipe file not found"):
        load_recipe(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [1]\n")
    with pytest.raises(RecipeError, match="extends: expected the path of another recipe"):
        load_recipe(tmp_path / "d.yaml")


def test_exponent_floats_without_a_dot_are_numbers():
    from bwe.config import RecipeError

    # PyYAML (YAML 1.1) reads "5e-5" as a string; a learning rate written that way must still load.
    recipe = load_recipe(TINY, ["optim.generator_lr=5e-5", "optim.discriminator_lr=1E-4"])
    assert recipe.optim.generator_lr == 5e-5 and recipe.optim.discriminator_lr == 1e-4
    with pytest.raises(RecipeError, match="optim.generator_lr: expected a number, got 'fast'"):
        load_recipe(TINY, ["optim.generator_lr=fast"])
    with pytest.raises(RecipeError, match="train.steps: expected an integer"):
        load_recipe(TINY, ["train.steps=1e3"])  # integers stay strict


def test_segments_too_short_for_the_stfts_are_refused():
    from bwe.config import RecipeError
    from bwe.training.state import check_lengths

    recipe = load_recipe(TINY, ["data.segment_samples=512"])
    with pytest.raises(RecipeError, match=r"data.segment_samples: 512 .* discriminators.stft_fft_sizes \(512\)"):
        check_lengths(recipe, 16)


# ---- CLI input errors -------------------------------------------------------------------------------------------


def test_cli_rejects_missing_data_dirs_and_bad_keys_with_the_key_path(tmp_path, corpus):
    missing = _cli(TINY, "--run-dir", str(tmp_path / "a"), f"data.train_dir={tmp_path / 'nowhere'}")
    assert missing.returncode == 2
    assert "data.train_dir" in missing.stderr and "is not a directory" in missing.stderr
    unset = _cli(TINY, "--run-dir", str(tmp_path / "b"))
    assert unset.returncode == 2 and "data.train_dir: not set" in unset.stderr
    typo = _cli(TINY, "--run-dir", str(tmp_path / "c"), f"data.train_dir={corpus / 'train'}", "train.stepz=3")
    assert typo.returncode == 2 and "train.stepz: unknown key" in typo.stderr
    bad_valid = _cli(TINY, "--run-dir", str(tmp_path / "d"), f"data.train_dir={corpus / 'train'}",
                     f"data.valid_dir={tmp_path / 'nowhere'}")
    assert bad_valid.returncode == 2 and "data.valid_dir" in bad_valid.stderr
    assert not any(os.path.exists(tmp_path / d) for d in "abcd")  # nothing written on bad input


# ---- the training step ------------------------------------------------------------------------------------------


def test_targets_are_delayed_like_the_generator_output():
    """A generator that is a perfect causal model (target delayed by `delay`) must align with zero error."""
    from bwe.training.steps import align

    delay = 16
    target = tf.constant(np.random.default_rng(0).normal(size=(2, 512, 1)).astype(np.float32))
    delayed = tf.pad(target, [[0, 0], [delay, 0], [0, 0]])[:, :512]
    estimate, aligned_target = align(lambda nb, training: delayed, delay, None, target)
    assert estimate.shape == aligned_target.shape == (2, 512 - delay, 1)
    np.testing.assert_array_equal(estimate.numpy(), aligned_target.numpy())


@pytest.fixture(scope="module")
def tiny_trainer(tmp_path_factory):
    from bwe.train import Trainer

    recipe = load_recipe(TINY, ["train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=100"])
    return Trainer(recipe, str(tmp_path_factory.mktemp("run")))


def test_resume_takes_the_learning_rates_of_the_new_recipe(tmp_path):
    from bwe.train import Trainer

    first = Trainer(load_recipe(TINY, ["optim.generator_lr=2e-4"]), str(tmp_path))
    first._save("latest")
    resumed = Trainer(load_recipe(TINY, ["optim.generator_lr=5e-5", "optim.discriminator_lr=3e-5"]), str(tmp_path))
    assert resumed.restore() == 0
    rates = resumed.learning_rates()
    assert rates["learning_rate/generator"] == pytest.approx(5e-5)
    assert rates["learning_rate/discriminator"] == pytest.approx(3e-5)


def test_a_new_run_starts_from_an_exported_folder_and_refuses_another_model(tmp_path):
    """train.init_from: a new run's generator takes an exported folder's weights (not a resumed run's:
    its checkpoint wins); weights of another generator, or none, are refused with the path."""
    from bwe.train import Trainer
    from exported_tiny import assert_same_trained_weights, exported_tiny

    generator, _, folder = exported_tiny()
    started = Trainer(load_recipe(TINY, [f"train.init_from={folder}"]), str(tmp_path / "new"))
    assert started.restore() == 0
    for a, b in zip(generator.weights, started.generator.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    started.generator.weights[0].assign(started.generator.weights[0] + 1.0)
    started._save("latest")
    resumed = Trainer(load_recipe(TINY, [f"train.init_from={folder}"]), str(tmp_path / "new"))
    resumed.restore()
    np.testing.assert_array_equal(np.asarray(resumed.generator.weights[0]), np.asarray(started.generator.weights[0]))
    other = Trainer(load_recipe(TINY, [f"train.init_from={folder}", "model.channels=8"]), str(tmp_path / "other"))
    with pytest.raises(RunDirError, match="does not fit"):
        other.restore()
    # A fixed filter of another length (model.split_taps) comes from the recipe, the trained weights from the folder.
    split = Trainer(load_recipe(TINY, [f"train.init_from={folder}", "model.split_taps=65"]), str(tmp_path / "split"))
    assert split.restore() == 0
    assert_same_trained_weights(generator, split.generator)
    assert split.generator.get_layer("band_split").get_weights()[0].shape[0] == 65
    missing = Trainer(load_recipe(TINY, [f"train.init_from={tmp_path}"]), str(tmp_path / "missing"))
    with pytest.raises(RunDirError, match="does not exist"):
        missing.restore()


def _batch(seed, nan=False):
    wb = np.stack([speech_like(4096 / 16000, seed=seed + i) for i in range(2)])[..., None].astype(np.float32)
    nb = wb[:, ::2].copy()
    if nan:
        nb[1, 100, 0] = np.nan
    return tf.constant(nb), tf.constant(wb)


def _state(trainer):
    return [v.numpy().copy() for v in trainer.generator.weights + trainer.discriminators.weights
            + trainer.generator_optimizer.variables + trainer.discriminator_optimizer.variables]


def test_nonfinite_step_applies_nothing_and_a_finite_one_trains(tiny_trainer):
    for step in (0, 1):  # warm-up (reconstruction only), then GAN
        before = _state(tiny_trainer)
        metrics = tiny_trainer.train_step(*_batch(0, nan=True), step)
        assert not metrics["finite"]
        assert all(np.array_equal(a, b) for a, b in zip(before, _state(tiny_trainer)))
        metrics = tiny_trainer.train_step(*_batch(0), step)
        assert metrics["finite"] and np.isfinite(metrics["loss/generator_total"])
        after = _state(tiny_trainer)
        changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
        n_gen = len(tiny_trainer.generator.weights)
        assert any(changed[:n_gen])
        n_disc = len(tiny_trainer.discriminators.weights)
        assert any(changed[n_gen:n_gen + n_disc]) == (step == 1)  # discriminators train after the warm-up
    assert {"loss/adversarial", "loss/feature_matching", "loss/discriminator", "grad_norm/discriminator"} <= set(metrics)


@pytest.mark.parametrize("weight, term", [("envelope_weight=3", "envelope"),
                                          ("network_lowband_weight=0.5", "network_lowband")])  # reads the body's output
def test_optional_losses_are_added_logged_and_checked(tmp_path, tiny_trainer, weight, term):
    from bwe.train import Trainer

    assert f"loss/{term}" not in tiny_trainer.train_step(*_batch(0), 0)  # off by default
    recipe = load_recipe(TINY, ["train.warmup_steps=1", f"losses.{weight}"])
    trainer = Trainer(recipe, str(tmp_path))
    for step in (0, 1):  # warm-up, then GAN
        metrics = trainer.train_step(*_batch(0), step)
        assert metrics["finite"] and metrics[f"loss/{term}"] > 0
    name = weight.split("=")[0]
    with pytest.raises(RecipeError, match=f"losses.{name}: must be >= 0"):
        load_recipe(TINY, [f"losses.{name}=-1"])


def _fit_with(trainer, batches, steps, **train_overrides):
    """Run `Trainer.fit` up to ``steps`` on a fixed cycle of batches (no files, no validation)."""
    for key, value in train_overrides.items():
        setattr(trainer.recipe.train, key, value)
    trainer.recipe.train.steps = steps
    nb = tf.concat([b[0] for b in batches], 0)
    wb = tf.concat([b[1] for b in batches], 0)
    dataset = tf.data.Dataset.from_tensor_slices((nb, wb)).batch(2).repeat()
    trainer.make_dataset = lambda files, start: trainer.strategy.experimental_distribute_dataset(dataset)
    return trainer.fit([], [], log=lambda message: None)


def test_nan_policy_stop_and_skip(tiny_trainer):
    from bwe.train import TrainingStopped

    tiny_trainer.step.assign(2)
    tiny_trainer._save("latest")
    ckpt_dir = tiny_trainer.managers["latest"].directory
    listing = {f: os.path.getmtime(os.path.join(ckpt_dir, f)) for f in os.listdir(ckpt_dir)}
    good, bad = _batch(10), _batch(20, nan=True)

    with pytest.raises(TrainingStopped, match="nan_policy=stop.*latest good checkpoint: step 2"):
        _fit_with(tiny_trainer, [good, bad], 10, nan_policy="stop")
    assert {f: os.path.getmtime(os.path.join(ckpt_dir, f)) for f in os.listdir(ckpt_dir)} == listing
    assert int(tiny_trainer.step.numpy()) == 4  # step 3 was fine, step 4 was not

    with pytest.raises(TrainingStopped, match="2 steps in a row"):
        _fit_with(tiny_trainer, [bad], 10, nan_policy="skip", max_consecutive_nonfinite=2)
    assert {f: os.path.getmtime(os.path.join(ckpt_dir, f)) for f in os.listdir(ckpt_dir)} == listing

    # Restarts from the checkpoint at step 2; every other batch is bad: skipped, counted, training goes on.
    _fit_with(tiny_trainer, [bad, good], 6, nan_policy="skip", max_consecutive_nonfinite=2)
    assert int(tiny_trainer.step.numpy()) == 6
    assert int(tiny_trainer.nonfinite_steps.numpy()) == 2
    assert _latest_step(ckpt_dir) == 6
    assert all(np.all(np.isfinite(w.numpy())) for w in tiny_trainer.generator.weights)


# ---- end to end through the CLI ---------------------------------------------------------------------------------


def _tensorboard_tags(log_dir) -> set[str]:
    tags = set()
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_cli_trains_survives_kill_9_resumes_and_exports(tmp_path, corpus):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "bwe.train", TINY, "--run-dir", str(run), f"data.train_dir={corpus / 'train'}",
               f"data.valid_dir={corpus / 'valid'}", "train.steps=30", "train.keep_periodic_every=10"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while _latest_step(run / "checkpoints") is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = _latest_step(run / "checkpoints")
    assert killed_at is not None and 5 <= killed_at < 30

    second = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from step {killed_at}" in second.stdout
    assert _latest_step(run / "checkpoints") == 30
    assert _latest_step(run / "checkpoints" / "best") is not None
    periodic = sorted(f for f in os.listdir(run / "checkpoints" / "periodic") if f.endswith(".index"))
    assert periodic == ["ckpt-10.index", "ckpt-20.index", "ckpt-30.index"]
    assert sorted(f for f in os.listdir(run / "checkpoints") if f.endswith(".index")) == ["ckpt-25.index",
                                                                                         "ckpt-30.index"]
    history = [json.loads(line) for line in (run / "valid_history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 30 and all(np.isfinite(h["lsd"]) and np.isfinite(h["lsd_hf"]) for h in history)
    from bwe.training.validation import PESQ_AVAILABLE

    if PESQ_AVAILABLE:  # .ci/run installs the eval extra, which brings pesq
        assert all(1.0 <= h["pesq_wb"] <= 4.65 for h in history)
    tags = _tensorboard_tags(run / "logs")
    expected = {"loss/generator_total", "loss/discriminator", "loss/adversarial", "loss/feature_matching",
                "loss/spectral_convergence", "loss/log_magnitude", "grad_norm/generator", "grad_norm/discriminator",
                "learning_rate/generator", "learning_rate/discriminator", "train/steps_per_second",
                "train/nonfinite_steps", "valid/lsd", "valid/lsd_lf", "valid/lsd_hf", "valid_audio/0/input_8k",
                "valid_audio/0/output", "valid_audio/0/reference", "valid_spectrogram/0/output",
                "valid_spectrogram/0/reference"}
    expected |= {"valid/pesq_wb"} if PESQ_AVAILABLE else set()
    assert expected <= tags, expected - tags

    # The finished run: the same command says so and changes nothing.
    again = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already at step 30" in again.stdout

    out = tmp_path / "export"
    export = subprocess.run([sys.executable, "-m", "bwe.export", str(run), str(out)], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    assert {"offline.tflite", "streaming.tflite", "metadata.json"} <= set(os.listdir(out))
    from bwe.runtime import ExportedModel

    model = ExportedModel(str(out))
    y = model(speech_like(0.5, rate=8000, seed=3))
    assert y.shape == (8000,) and np.all(np.isfinite(y))


# ---- distribution -----------------------------------------------------------------------------------------------


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_loopback_end_with_identical_weights(tmp_path, corpus):
    run = tmp_path / "run"
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    command = [sys.executable, "-m", "bwe.train", TINY, "--run-dir", str(run), "--keep-worker-checkpoints",
               f"data.train_dir={corpus / 'train'}", f"data.valid_dir={corpus / 'valid'}", "train.steps=6",
               "train.warmup_steps=3", "train.checkpoint_every=3", "train.valid_every=6"]
    workers = []
    for index in range(2):
        env = dict(_env(), TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for process, log in workers:
        process.wait(timeout=600)
        log.close()
    for index, (process, _) in enumerate(workers):
        assert process.returncode == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]
    chief = tf.train.load_checkpoint(str(run / "checkpoints" / "ckpt-6"))
    other = tf.train.load_checkpoint(str(run / "workers" / "worker-1" / "checkpoints" / "ckpt-6"))
    # Every saved value: network weights, optimizer slots and counters, step, best LSD.
    names = [n for n in chief.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert sorted(names) == sorted(n for n in other.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH")
    weights = [n for n in names if "_trainable_variables/" in n]
    assert len(weights) > 50
    for name in names:
        np.testing.assert_array_equal(chief.get_tensor(name), other.get_tensor(name), err_msg=name)
    # The workers trained on different shards of the data, so agreement means the gradients were all-reduced;
    # and they did train (weights moved away from the step-3 checkpoint).
    early = tf.train.load_checkpoint(str(run / "checkpoints" / "ckpt-3"))
    assert sum(not np.array_equal(early.get_tensor(n), chief.get_tensor(n)) for n in weights) > len(weights) // 2


MIRRORED_SCRIPT = """
import json, sys, tempfile
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bwe.config import load_recipe
from bwe.train import Trainer
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
trainer = Trainer(load_recipe(sys.argv[1], ["train.warmup_steps=1"]), tempfile.mkdtemp(), strategy)
wb = (0.1 * np.random.default_rng(0).standard_normal((4, 4096, 1))).astype(np.float32)
wb[3, 7] = np.nan  # the second global batch has a NaN on one replica only
batches = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((wb[:, ::2], wb)).batch(2)))
finite = [bool(trainer.train_step(*next(batches), step)["finite"]) for step in (0, 1)]
copies = [[c.numpy() for c in strategy.experimental_local_results(v.value)]
          for v in trainer.generator.trainable_variables + trainer.discriminators.trainable_variables]
print(json.dumps({"finite": finite, "replicas": len(copies[0]),
                  "agree": all(np.array_equal(c[0], c[1]) for c in copies)}))
"""


@pytest.mark.slow
def test_mirrored_strategy_over_two_devices_keeps_replicas_identical_and_skips_together():
    """The PerReplica path of the training step (several GPUs), on two logical CPU devices."""
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, TINY], cwd=REPO, env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"finite": [True, False], "replicas": 2, "agree": True}


def test_the_generator_overfits_one_batch(tmp_path):
    """A sanity check of the whole warm-up step (alignment, losses, gradients, optimizer): on one batch
    the reconstruction loss falls to under a quarter of its start within 60 steps (measured ~0.17)."""
    from bwe.train import Trainer

    recipe = load_recipe(TINY, ["train.steps=1000", "train.warmup_steps=1000", "optim.generator_lr=2e-3"])
    trainer = Trainer(recipe, str(tmp_path))
    batch = _batch(5)
    losses = [float(trainer.train_step(*batch, step)["loss/generator_total"]) for step in range(60)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.25 * losses[0], losses[::10]
