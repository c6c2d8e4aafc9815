"""Two CPU processes under ``torchrun`` (gloo) train like one process on the same global batch.

With batch norm on each process's own rows (as ALIGN's per-core batch norm), 2 processes x 8
pairs equal 1 process with 2 accumulated micro-batches of 8: same batches (the sampler hands
process r the micro-batches r·k … of each global batch), same negatives (gathered with gradient
vs cached), so the same loss and, after DDP averages the gradients, the same weights. Dropout,
drop-path and random crops are off so that the two set-ups draw no random numbers differently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from align_lite.models import from_pretrained, load_tokenizer
from align_lite.train import TrainConfig, train

pytestmark = [pytest.mark.slow,  # torchrun and process groups
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")]

CONFIG = dict(model="tiny", batch_size=8, warmup_steps=1, max_steps=3, text_length=16, world_n=64,
              vocab_size=500, eval_size=0, log_every=1, tensorboard=False, text_dropout=0.0,
              stochastic_depth=0.0, augment=False, seed=5)

SCRIPT = """
import json, os, sys
from safetensors.torch import save_file
from align_lite.train import TrainConfig, train

out = sys.argv[1]
result = train(TrainConfig(**json.loads(sys.argv[2])), out_dir=out)
state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
save_file(state, f"{out}/rank{os.environ['RANK']}.safetensors")
"""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ALIGN_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(out), json.dumps(CONFIG)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_two_processes_write_a_checkpoint_and_agree(two_process_run):
    out = two_process_run
    assert (out / "checkpoint-0000003" / "trainer_state.json").is_file()
    model = from_pretrained(out / "final")
    assert load_tokenizer(out / "final").vocab_size == model.config.text.vocab_size
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["global_batch"] == 16 for r in records)  # 2 processes x 8
    state = json.loads((out / "checkpoint-0000003" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    rank0, rank1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    for name, value in rank0.items():
        if "running_" in name or "num_batches" in name:
            continue  # batch-norm statistics are per process (DDP re-broadcasts them each forward)
        torch.testing.assert_close(rank1[name], value, rtol=0, atol=0, msg=name)


def test_two_processes_equal_one_process_with_accumulation(two_process_run):
    out = two_process_run
    tokenizer = load_tokenizer(out / "final")  # the same vocabulary numbering
    single = train(TrainConfig(**{**CONFIG, "accum_steps": 2}), tokenizer=tokenizer)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["loss"] == pytest.approx(single.losses[0], rel=1e-5)
    assert [r["loss"] for r in records] == pytest.approx(single.losses, rel=1e-4)
    ddp = load_file(str(out / "rank0.safetensors"))
    # Adam-type updates are normalised: a gradient component that is ~0 can take either sign
    # depending on summation order (2 processes vs 1 sum in different orders), and then moves
    # its weight by up to lr in either direction. So: nearly every weight equal to 1e-5, and
    # none further apart than two full steps of lr per step taken.
    config = TrainConfig(**{**CONFIG, "accum_steps": 2})
    bound = 2 * config.lr * config.max_steps + 1e-5
    close = total = 0
    for name, param in single.model.named_parameters():
        diff = (ddp[name] - param.detach()).abs()
        assert float(diff.max()) <= bound, f"{name}: differs by {float(diff.max()):.2e} > {bound:.2e}"
        close += int((diff <= 1e-5 + 1e-4 * param.detach().abs()).sum())
        total += diff.numel()
    assert close / total >= 0.999, f"only {close / total:.4%} of weights match"
