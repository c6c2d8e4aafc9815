"""Every data command on a hostile pair folder (benchmarks/hostile_inputs.py builds it): no
traceback, every input line accounted for by reason, nothing outside the folder read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hostile_inputs as hostile  # noqa: E402  (benchmarks/, on the path above)

pytestmark = pytest.mark.slow  # fresh processes and a SIGKILLed run: about 90 s


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    parent = tmp_path_factory.mktemp("hostile")
    folder = hostile.build_hostile_folder(parent)
    return folder, hostile.run_all(folder, parent / "work")


COMMANDS = ("data filter", "data shards", "train", "eval")
ALL_DROPS = hostile.READ_DROPS | hostile.IMAGE_DROPS


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_finishes_without_a_traceback(outcome, command):
    _, results = outcome
    assert results[command]["returncode"] == 0, results[command]["stderr"][-2000:]
    assert not results[command]["traceback"]


def test_data_filter_accounts_for_every_line(outcome):
    folder, results = outcome
    counts = results["data filter"]["counts"]
    assert counts["rows_in"] == folder.lines == 142
    assert counts["bad_input"] == ALL_DROPS
    assert counts["kept"] + sum(counts["removed"].values()) == folder.lines
    # of the readable rows, the size rule takes the 1x1 image and the word-count rule the 100 kB caption
    assert counts["removed"]["image_size"] == 1 and counts["removed"]["text_length"] == 1
    assert counts["kept"] == folder.readable - 2


def test_data_shards_packs_exactly_the_readable_rows(outcome):
    folder, results = outcome
    counts = results["data shards"]["counts"]
    assert counts["skipped"] == ALL_DROPS
    assert counts["packed"] == folder.readable and counts["packed"] + sum(counts["skipped"].values()) == folder.lines


def test_train_reports_read_drops_and_replaced_images(outcome):
    folder, results = outcome
    report = results["train"]["counts"]
    assert report["dropped_while_reading"] == hostile.READ_DROPS
    assert report["rows"] + sum(report["dropped_while_reading"].values()) == folder.lines
    assert set(report["bad_images"]) <= set(hostile.IMAGE_DROPS)
    assert 0 < report["bad_images_total"] == sum(report["bad_images"].values()) <= 3 * 8  # drawn: 3 steps x 8
    assert "dropped while reading (bad_json: 1, empty_text: 2" in results["train"]["stdout"]


def test_eval_scores_the_readable_images_and_counts_the_rest(outcome):
    folder, results = outcome
    counts = results["eval"]["counts"]
    assert counts["skipped"] == ALL_DROPS
    assert counts["images"] == folder.readable
    assert counts["images"] + sum(counts["skipped"].values()) == folder.lines


def test_nothing_outside_the_folder_reaches_an_output(outcome):
    _, results = outcome
    assert results["outside bytes in outputs"]["found"] == []
    assert results["data filter"]["counts"]["bad_input"]["unsafe_file_name"] == 3


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    """``kill -9`` between checkpoints, then ``--resume``: the weights equal an uninterrupted run's,
    bit for bit, and no staging folder is left to confuse the resumed run."""
    import signal
    import subprocess
    import time

    from safetensors.torch import load_file

    run = [sys.executable, "-m", "align_lite.cli", "train", "--preset", "tiny", "--world-n", "256",
           "--batch-size", "16", "--eval-size", "0", "--max-steps", "20", "--ckpt-every", "5",
           "--text-length", "16", "--no-tensorboard", "--log-every", "5"]
    env = {**os.environ, "ALIGN_PROGRESS": "0"}
    whole = subprocess.run([*run, "--out", str(tmp_path / "whole")], capture_output=True, text=True, env=env,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = subprocess.Popen([*run, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not (tmp_path / "killed" / "checkpoint-0000005").is_dir() and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not finished
    assert not (tmp_path / "killed" / "final").exists()
    resumed = subprocess.run([*run, "--out", str(tmp_path / "killed"), "--resume"], capture_output=True, text=True,
                             env=env, timeout=600)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
