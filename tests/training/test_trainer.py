"""train_step (monai_sr/training/trainer.py): the step the training scripts share is the plain PyTorch step."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from monai_sr.training.trainer import train_step


def test_train_step_equals_the_plain_step():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    ref = copy.deepcopy(net)
    opt, opt_ref = torch.optim.Adam(net.parameters(), lr=1.0), torch.optim.Adam(ref.parameters(), lr=1.0)
    x, y = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    for step, lr in enumerate((1e-3, 5e-4, None)):
        loss = train_step(net, opt, x, y, lr=lr, loss_fn=F.mse_loss if step == 2 else F.l1_loss)
        if lr is not None:
            for g in opt_ref.param_groups:
                g["lr"] = lr
        ref_loss = (F.mse_loss if step == 2 else F.l1_loss)(ref(x), y)
        opt_ref.zero_grad(set_to_none=True)
        ref_loss.backward()
        opt_ref.step()
        assert not loss.requires_grad and torch.equal(loss, ref_loss.detach())
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))
    assert opt.param_groups[0]["lr"] == 5e-4  # lr=None leaves the rate as it was


def test_training_state_round_trip(tmp_path):
    import numpy as np

    from monai_sr.training.trainer import load_training_state, save_training_state

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(4, 3)).sum().backward()
    opt.step()
    rng = np.random.default_rng(5)
    rng.random(3)
    save_training_state(tmp_path / "ckpt.pt", network=net, optimizer=opt, step=7, best=31.5, rng=rng)
    expected_draw, expected_torch = rng.random(), torch.rand(1)

    net2, rng2 = torch.nn.Linear(3, 2), np.random.default_rng(0)
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    torch.manual_seed(99)
    assert load_training_state(tmp_path / "ckpt.pt", network=net2, optimizer=opt2, rng=rng2) == (7, 31.5)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert rng2.random() == expected_draw and torch.equal(torch.rand(1), expected_torch)
