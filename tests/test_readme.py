"""README.md's commands run as written: every shell command in its ```bash blocks is either run here,
in README order, in a workspace that holds what a user would have (the repository's folders, an
in.wav, a folder of calls, a small corpus), or listed below with the reason it is not; its Python
snippet runs against the bundled model. A command added to README without a place here fails."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from signals import speech_like, write_real_pairs, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

NOT_RUN = {
    "pip install .": "installs the package; .ci/run does it on a fresh machine",
    'pip install -e ".[train-cpu,eval,test]"': "installs the package; .ci/run does it on a fresh machine",
    "python -m pytest -q": "is this test run",
    "arecord -q -r 8000 -f S16_LE -t raw | bwe-enhance --streaming - - | aplay -q -r 16000 -f S16_LE -t raw":
        "needs a sound card; the pipe itself runs below (bwe-enhance --streaming --int8 - -)",
    "python -m bwe.data.prepare debian-corpus --root CORPUS":
        "downloads about 1 GB of Debian packages; tests/test_debian_corpus.py runs it on stub packages",
    "python -m bwe.train recipes/pretrained.yaml --run-dir runs/pretrained data.train_dir=CORPUS/train "
    "data.valid_dir=CORPUS/valid": "hours of training; the tiny recipe's command runs below",
    "python -m bwe.train recipes/librispeech.yaml --run-dir runs/librispeech": "a GPU recipe on a downloaded corpus",
    "python -m bwe.train recipes/vctk.yaml --run-dir runs/vctk": "a GPU recipe on a downloaded corpus",
    "python -m eval.listening_test serve --test mushra":
        "a server that runs until Ctrl-C; tests/test_listening_browser.py drives it in a browser",
    "python -m eval.listening_test analyze mushra/webmushra/results/bwe_mushra/mushra.csv --key mushra/key.json "
    "--out report": "needs assessors' ratings; tests/test_listening_test.py analyses generated ones",
}

# What each command that runs must leave behind (paths relative to the workspace).
PRODUCES = {
    "bwe-enhance bwe/pretrained/sample_8k.wav enhanced_16k.wav": ["enhanced_16k.wav"],
    "bwe-enhance calls/ calls_wideband/": ["calls_wideband/a.wav", "calls_wideband/office/b.wav"],
    "python -m bwe.train recipes/tiny.yaml --run-dir runs/tiny data.train_dir=DIR data.valid_dir=DIR":
        ["runs/tiny/recipe.yaml"],
    "bwe-export runs/myrun exported/": ["exported/metadata.json"],
    "bwe-export bwe/pretrained exported/ --set export.highband_gain=0.5": ["exported/generator.weights.h5"],
    "python -m eval.evaluate --model bwe/pretrained --model bwe/pretrained:int8 --data CORPUS/valid "
    "--pairs PAIRS/nb PAIRS/wb --out results/eval": ["results/eval/report.md"],
    "python -m eval.listening_test prepare --model bwe/pretrained --data DIR --out mushra": ["mushra/key.json"],
}


def _blocks(language: str) -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(rf"```{language}\n(.*?)```", f.read(), flags=re.S)


def readme_commands() -> list[str]:
    """Shell commands of README's bash blocks in order: continuation lines joined, comments dropped,
    ``a && b`` split into its commands."""
    commands = []
    for block in _blocks("bash"):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            commands += [part.strip() for part in line.split(" && ")] if line else []
    return commands


def test_every_readme_command_is_run_here_or_says_why_not():
    commands = readme_commands()
    assert set(PRODUCES) - set(commands) == set(), "PRODUCES names a command README no longer has"
    assert set(NOT_RUN) - set(commands) == set(), "NOT_RUN names a command README no longer has"
    assert len(commands) > len(NOT_RUN) + 5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """What README's commands expect around them: the repository's folders, an in.wav and an in.flac,
    a folder of calls, DIR (speech), CORPUS/valid and real-pair folders PAIRS/nb, PAIRS/wb, a run
    directory runs/myrun (the tiny run the training command makes) and a checkpoint path/to/ckpt-1200."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("bwe", "recipes", "eval"):
        os.symlink(os.path.join(REPO, name), root / name)
    sample, rate = soundfile.read(os.path.join(REPO, "bwe", "pretrained", "sample_8k.wav"))
    soundfile.write(root / "in.wav", sample, rate)
    soundfile.write(root / "in.flac", sample, rate)
    shutil.copytree(os.path.join(REPO, "bwe", "pretrained"), root / "exported")
    _speech(root / "calls" / "a.wav", rate=8000, seed=1)
    _speech(root / "calls" / "office" / "b.wav", rate=8000, seed=2)
    for seed in range(10):  # the listening test's 10 trials need 10 clips of 4 s or more
        _speech(root / "DIR" / f"utt{seed}.wav", rate=16000, seed=seed, seconds=4.5)
    for seed in range(3):
        _speech(root / "CORPUS" / "valid" / f"utt{seed}.wav", rate=16000, seed=10 + seed)
    write_real_pairs(root / "PAIRS", lags=[0, 0])
    (root / "runs").mkdir()
    os.symlink("tiny", root / "runs" / "myrun")
    (root / "path" / "to").mkdir(parents=True)
    return root


def _speech(path, rate: int, seed: int, seconds: float = 1.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, speech_like(seconds, rate=rate, seed=seed), rate)


def _link_checkpoint(root) -> None:
    """path/to/ckpt-1200 (README's example checkpoint) -> the tiny run's last checkpoint."""
    checkpoints = root / "runs" / "tiny" / "checkpoints"
    prefix = max(checkpoints.glob("ckpt-*.index"), key=lambda p: int(p.stem.split("-")[1])).with_suffix("")
    for part in checkpoints.glob(prefix.name + ".*"):
        os.symlink(part, root / "path" / "to" / part.name.replace(prefix.name, "ckpt-1200"))


def test_readme_commands_run_as_written(workspace):
    stdin_frames = (speech_like(0.5, rate=8000, seed=3) * 32767).astype("<i2").tobytes()
    for command in readme_commands():
        if command in NOT_RUN:
            continue
        if command.startswith("bwe-export path/to/ckpt-1200"):
            _link_checkpoint(workspace)
        result = subprocess.run(["bash", "-c", command], cwd=workspace, capture_output=True, timeout=900,
                                input=stdin_frames if command.endswith(" - -") else None)
        assert result.returncode == 0, f"{command}\n{result.stderr.decode(errors='replace')[-2000:]}"
        for path in PRODUCES.get(command, []):
            assert (workspace / path).exists(), f"{command} did not write {path}"
        if command.endswith(" - -"):
            assert len(result.stdout) == 4 * len(stdin_frames) // 2  # 16 kHz out for 8 kHz in
    info = soundfile.info(workspace / "enhanced_16k.wav")
    assert info.samplerate == 16000 and info.channels == 1


def test_readme_python_snippet_runs(workspace):
    (snippet,) = _blocks("python")
    x8k = speech_like(1.0, rate=8000, seed=4)
    namespace = {"x8k": x8k, "frame_128": x8k[:128]}
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        exec(compile(snippet, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert np.asarray(namespace["y16k"]).shape == (2 * len(x8k),)
    assert np.asarray(namespace["out"]).shape == (256,)

