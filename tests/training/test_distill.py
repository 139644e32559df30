"""Distillation: the loss (values, zero case, gradients) and DistillationTrainer on real MRI pairs
(MNI152 slices, k-space truncated x2): teacher frozen and unchanged, only the student learns."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pytest
import torch
from data_volumes import data_file
from helpers import load_script
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch.utils.data import DataLoader

from monai_sr.networks import RCAN, MobileSR
from monai_sr.training.distill import TEACHER_PRED, DistillationLoss, DistillationTrainer, freeze
from monai_sr.training.pairs import DegradedStack, normalise_volume
from monai_sr.training.datasets import shared_data_dir

torch.set_num_threads(1)

MNI152 = shared_data_dir() / "mni152_2009a_t1_1mm.nii.gz"


@pytest.fixture(scope="module")
def pairs() -> list[dict[str, torch.Tensor]]:
    """Eight aligned 16 -> 32 crops from four central axial MNI152 slices (a training volume)."""
    if not MNI152.exists():
        data_file(MNI152.name)
    vol = normalise_volume(np.asarray(nib.as_closest_canonical(nib.load(str(MNI152))).dataobj, np.float32))
    stack = DegradedStack.from_volume(vol[:, :, 80:84], axis=2)
    items = []
    for k in range(4):
        for i, j in ((30, 40), (50, 60)):
            lr, hr = stack.crop(k, i, j, 16)
            items.append({"image": torch.from_numpy(lr.copy())[None], "label": torch.from_numpy(hr.copy())[None]})
    return items


def tiny_teacher() -> RCAN:
    torch.manual_seed(1)
    return RCAN(2, scale=2, features=8, num_groups=1, num_blocks=1, reduction=4)


def tiny_student() -> MobileSR:
    torch.manual_seed(2)
    net = MobileSR(2, scale=2, features=8, num_blocks=1)
    torch.nn.init.normal_(net.head.weight, std=0.01)  # not zero, so the output depends on every weight
    return net


def make_trainer(student, teacher, loader, kd_weight: float = 1.0, **kwargs) -> DistillationTrainer:
    return DistillationTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=student,
        optimizer=torch.optim.Adam(student.parameters(), lr=1e-2),
        teacher=teacher,
        loss_function=DistillationLoss(kd_weight=kd_weight),
        **kwargs,
    )


def test_loss_values():
    s, y, t = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4), torch.full((2, 1, 4, 4), 3.0)
    assert float(DistillationLoss(kd_weight=0.5)(s, y, t)) == pytest.approx(1.0 + 0.5 * 3.0)
    assert float(DistillationLoss(kd_weight=0.0)(s, y, t)) == pytest.approx(1.0)
    mse = DistillationLoss(kd_weight=2.0, base=torch.nn.MSELoss())
    assert float(mse(s, y, t)) == pytest.approx(1.0 + 2.0 * 9.0)
    terms = DistillationLoss().terms(s, y, t)
    assert float(terms["target"]) == pytest.approx(1.0) and float(terms["teacher"]) == pytest.approx(3.0)


def test_loss_zero_when_student_teacher_target_agree(pairs):
    teacher = tiny_teacher()
    x = torch.stack([p["image"] for p in pairs])
    with torch.no_grad():
        out = teacher(x)
    assert float(DistillationLoss(kd_weight=1.0)(out, out.detach(), out.detach())) == 0.0
    # and not zero when they disagree
    assert float(DistillationLoss(kd_weight=1.0)(out, out.detach() + 0.1, out.detach())) == pytest.approx(0.1, rel=1e-4)


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="kd_weight"):
        DistillationLoss(kd_weight=-1.0)
    with pytest.raises(ValueError, match="teacher shape"):
        DistillationLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2))


def test_gradients_reach_only_the_student(pairs):
    teacher, student = tiny_teacher(), tiny_student()
    x = torch.stack([p["image"] for p in pairs])
    y = torch.stack([p["label"] for p in pairs])
    loss = DistillationLoss(kd_weight=1.0)(student(x), y, teacher(x))  # teacher output still has a graph
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert sum(float(p.grad.abs().sum()) for p in student.parameters()) > 0


def test_trainer_student_learns_teacher_frozen(pairs):
    teacher, student = tiny_teacher(), tiny_student()
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    trainer = make_trainer(student, teacher, DataLoader(pairs, batch_size=4), epoch_length=2, decollate=False)
    trainer.run()
    assert trainer.state.iteration == 2
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    out = trainer.state.output
    assert out[TEACHER_PRED].shape == out["pred"].shape == (4, 1, 32, 32)
    with torch.no_grad():
        expected = teacher(out["image"])
    torch.testing.assert_close(out[TEACHER_PRED], expected)


def test_trainer_loss_is_zero_for_a_copy_of_the_teacher(pairs):
    """Student = copy of the teacher, labels = teacher output: the first iteration's loss is exactly 0."""
    teacher = tiny_teacher()
    x = torch.stack([p["image"] for p in pairs])
    with torch.no_grad():
        y = teacher(x)
    data = [{"image": x[i], "label": y[i]} for i in range(len(x))]
    student = copy.deepcopy(teacher)
    losses = []
    trainer = make_trainer(student, teacher, DataLoader(data, batch_size=4), epoch_length=1, decollate=False)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach())))
    trainer.run()
    assert losses == [0.0]


def test_kd_weight_zero_matches_supervised_trainer(pairs):
    """With kd_weight 0 the distillation trainer is SupervisedTrainer with an L1 loss, step for step."""
    results = []
    for use_kd_trainer in (True, False):
        student = tiny_student()
        loader = DataLoader(pairs, batch_size=4)
        if use_kd_trainer:
            trainer = make_trainer(student, tiny_teacher(), loader, kd_weight=0.0, epoch_length=2)
        else:
            trainer = SupervisedTrainer(
                device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=student,
                optimizer=torch.optim.Adam(student.parameters(), lr=1e-2), loss_function=torch.nn.L1Loss(),
                epoch_length=2,
            )
        trainer.run()
        results.append(student.state_dict())
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k])


def test_trainer_refuses_shared_parameters(pairs):
    student = tiny_student()
    with pytest.raises(ValueError, match="shares parameters"):
        make_trainer(student, student, DataLoader(pairs, batch_size=4))


def test_freeze():
    net = freeze(tiny_teacher().train())
    assert not net.training and not any(p.requires_grad for p in net.parameters())


# ------------------------------------------------------------------- scripts/distill_mobile_sr.py pieces


def _script():
    return load_script("distill_mobile_sr")


def test_cached_pairs_equal_the_shared_pair_maker():
    """The cached pair maker (the distillation script's) draws exactly the pairs of InPlaneSRPairs (noise off: bitwise)."""
    if not MNI152.exists():
        data_file(MNI152.name)
    from monai_sr.training.datasets import CachedInPlaneSRPairs, InPlaneSRPairs, RandomPairDataset, load_training_volumes

    volumes = load_training_volumes(names=(MNI152.name,), data_dir=MNI152.parent)
    cached = CachedInPlaneSRPairs
    a = RandomPairDataset(volumes, InPlaneSRPairs(factor=2, noise_prob=0.0), length=12, patch=16, seed=3)
    b = RandomPairDataset(volumes, cached(factor=2, noise_prob=0.0), length=12, patch=16, seed=3)
    for i in range(12):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["label"], b[i]["label"])
    noisy = RandomPairDataset(volumes, cached(factor=2, noise_prob=1.0), length=2, patch=16, seed=3)
    assert not torch.equal(noisy[0]["image"], b[0]["image"])  # the noise is drawn (on the LR crop)


@pytest.mark.slow
def test_script_student_runs_and_resumes(tmp_path):
    """Two tiny distillation runs: the second resumes from the first's checkpoint and finishes."""
    if not MNI152.exists():
        data_file(MNI152.name)
    script = _script()
    torch.save(script.make_teacher().state_dict(), tmp_path / "teacher.pt")
    common = ["student", "--out", str(tmp_path / "kd"), "--epoch-length", "1", "--batch-size", "2", "--patch", "8",
              "--teacher", str(tmp_path / "teacher.pt"), "--kd-weight", "1", "--resume"]
    script.main([*common, "--steps", "2"])
    assert script.newest_checkpoint(tmp_path / "kd").name.endswith("epoch=2.pt")
    script.main([*common, "--steps", "3"])
    log = (tmp_path / "kd" / "train.log").read_text()
    assert "resuming from" in log and "done: 3 steps" in log
    state = torch.load(tmp_path / "kd" / "final.pt", weights_only=True)
    script.make_student().load_state_dict(state)
