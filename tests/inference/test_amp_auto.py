"""amp="auto": bf16 only on a CPU with native bf16, float32 elsewhere."""

from __future__ import annotations

import torch
from monai.data import MetaTensor

from monai_sr.inference import SliceWiseInferer, base
from monai_sr.networks import SRUNet


def test_auto_follows_the_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(base, "cpu_has_native_bf16", lambda: False)
    assert base.inference_dtype(base.AmpDtype.AUTO, cpu) is None
    monkeypatch.setattr(base, "cpu_has_native_bf16", lambda: True)
    assert base.inference_dtype(base.AmpDtype.AUTO, cpu) is torch.bfloat16
    assert base.inference_dtype(base.AmpDtype.AUTO, cuda) is None
    assert base.inference_dtype(base.AmpDtype.FP16, cuda) is torch.float16 and base.inference_dtype(None, cpu) is None


def test_auto_without_native_bf16_is_float32_exactly(monkeypatch):
    monkeypatch.setattr(base, "cpu_has_native_bf16", lambda: False)
    torch.manual_seed(0)
    net = SRUNet(2, scale=2, channels=(4, 8)).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.2)
    img = MetaTensor(torch.rand(1, 12, 10, 2))
    auto = SliceWiseInferer(amp="auto", channels_last=False)(img, net)
    plain = SliceWiseInferer(channels_last=False)(img, net)
    assert torch.equal(auto.as_tensor(), plain.as_tensor())
    monkeypatch.setattr(base, "cpu_has_native_bf16", lambda: True)
    bf16 = SliceWiseInferer(amp="auto", channels_last=False)(img, net)
    assert not torch.equal(bf16.as_tensor(), plain.as_tensor())
    assert torch.allclose(bf16.as_tensor(), plain.as_tensor(), atol=0.05)
