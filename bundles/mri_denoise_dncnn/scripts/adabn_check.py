"""Diagnostic: test-time batch-norm re-estimation (AdaBN) on the input's own slices, axial slices only.

Five held-out volumes of benchmarks.generalization.held_out (Colin27 T1, shoulder, abdomen, FLAIR-like
remaps) with Rician 5% (seed 0): PSNR in the head of the network as it is ("plain") and with every
BatchNorm's statistics re-estimated on the noisy input ("adabn"). Not shipped (it lost 2.5-6 dB).

    PYTHONPATH=. .venv/bin/python bundles/mri_denoise_dncnn/scripts/adabn_check.py runs/denoise_dr/model_0.1.0.pt
"""
import numpy as np, torch, sys, copy
from benchmarks.generalization import held_out
from monai_sr.training.datasets import shared_data_dir
from monai_sr.networks import DnCNN
from monai_sr.transforms.artefacts import rician_noise
from monai_sr.transforms.intensity import robust_max
from monai_sr.validation.metrics import head_mask, psnr
torch.set_num_threads(1)
ck = sys.argv[1]
net=DnCNN(2,1,1,depth=12,features=48,cbam_every=3,cbam_reduction=4); net.load_state_dict(torch.load(ck,weights_only=True)); net.eval()
def adabn(net, x):
    n=copy.deepcopy(net)
    for m in n.modules():
        if isinstance(m, torch.nn.BatchNorm2d): m.reset_running_stats(); m.momentum=None; m.train()
    with torch.no_grad():
        for k in range(0, x.shape[0], 4): n(x[k:k+4])
    n.eval(); return n
for v in held_out(shared_data_dir()):
    if not any(s in v[0] for s in ("shoulder","FLAIR","Colin27 T1","abdomen")): continue
    clean=v[2]; b=robust_max(clean); m=head_mask(clean.astype(np.float64),planar=True)
    noisy=rician_noise(clean,0.05*b,np.random.default_rng(0))
    x=torch.from_numpy(np.moveaxis(noisy,2,0)[:,None]/robust_max(noisy)).float()
    with torch.inference_mode():
        y0=net(x)[:,0].numpy(); y1=adabn(net,x)(x)[:,0].numpy()
    f=lambda y: psnr(np.moveaxis(y,0,2)*robust_max(noisy),clean,data_range=b,mask=m)
    print(v[0], "noisy", round(psnr(noisy,clean,data_range=b,mask=m),2), "plain", round(f(y0),2), "adabn", round(f(y1),2), flush=True)
