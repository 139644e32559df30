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
