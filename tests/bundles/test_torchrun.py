"""Multi-process training as the issue runs it: ``torchrun --standalone --nproc_per_node=2 -m monai.bundle
run --config_file "['configs/train.json','configs/multi_gpu_train.json']"`` from the bundle folder, on CPU
(gloo), with tiny overrides; rank 0 alone writes the checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_volumes import needs_training_data
from helpers import REPO

pytestmark = needs_training_data

BUNDLE = REPO / "bundles" / "mri_sr_unet"
TORCHRUN = Path(sys.executable).with_name("torchrun")
TINY = ["--epoch_length", "2", "--batch_size", "2", "--patch_schedule", "{'0': 8, '1': 12}",
        "--validate#dataset#step", "1000", "--num_threads", "1", "--val_interval", "1"]


def _torchrun(out: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
           "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
           "--logging_file", "configs/logging.conf", "--bundle_root", ".", "--output_dir", str(out), *TINY, *extra]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU and gloo even where a GPU exists
    return subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=timeout, env=env)


def _check_rank0_checkpoint(out: Path, epoch: int) -> dict:
    ckpt = torch.load(out / f"checkpoint_epoch={epoch}.pt", map_location="cpu", weights_only=True)
    assert ckpt["run"]["seed"] == 0 and ckpt["trainer"]["iteration"] == 2 * epoch
    assert not any(k.startswith("module.") for k in ckpt["model"]), "DDP wrapper leaked into the checkpoint"
    best = torch.load(out / "model.pt", map_location="cpu", weights_only=True)  # plain state_dict, as models/model.pt
    assert set(best) == set(ckpt["model"])
    return ckpt


def test_torchrun_two_processes_one_epoch(tmp_path):
    out = tmp_path / "ddp"
    run = _torchrun(out, "--max_epochs", "1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    _check_rank0_checkpoint(out, 1)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_epoch=1.pt", "final.pt", "model.pt"]


@pytest.mark.slow
def test_torchrun_resume_continues_the_run(tmp_path):
    """Two epochs, then a second torchrun resumes from the epoch-2 checkpoint and runs epoch 3 only."""
    out = tmp_path / "ddp"
    first = _torchrun(out, "--max_epochs", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = _check_rank0_checkpoint(out, 2)
    second = _torchrun(out, "--max_epochs", "3", "--resume_from", str(out / "checkpoint_epoch=2.pt"))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "SupervisedTrainer - INFO - Epoch[3] Complete" in log
    assert "SupervisedTrainer - INFO - Epoch[1] Complete" not in log  # epochs 1-2 came from the checkpoint
    after = _check_rank0_checkpoint(out, 3)
    assert any(not torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
