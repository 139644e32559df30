"""Bundle trust (DESIGN.md "Errors and safety"): weights always load with weights_only=True; a bundle from
outside the shipped ones may only reach monai, monai_sr and torch unless trusted; a damaged or foreign
model.pt gives one line with the cause."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import REPO, run_cli, tree_digest

from monai_sr.bundle_trust import SHIPPED_BUNDLES, check_config_trust, is_shipped_bundle, load_checkpoint
from monai_sr.bundles import load_inference_parts
from monai_sr.errors import ModelError


def _copy_bundle(tmp_path: Path, name: str = "mri_sr_unet", edit=None) -> Path:
    """A bundle outside the shipped ones: a copy of ``name``'s configs and weights, its inference.json
    passed through ``edit(config) -> None``."""
    src, dst = REPO / "bundles" / name, tmp_path / f"copy_of_{name}"
    shutil.copytree(src / "configs", dst / "configs")
    shutil.copytree(src / "models", dst / "models")
    if edit is not None:
        cfg_file = dst / "configs" / "inference.json"
        cfg = json.loads(cfg_file.read_text())
        edit(cfg)
        cfg_file.write_text(json.dumps(cfg, indent=1))
    return dst


class _Evil:
    """A pickle that runs code when loaded without weights_only."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


# --- the check on configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED_BUNDLES.iterdir() if (p / "configs").is_dir()))
def test_shipped_configs_pass_the_check(name):
    """The shipped bundles are trusted anyway; still, their configs keep within the rule (so a copy runs)."""
    from monai.bundle import ConfigParser

    assert is_shipped_bundle(SHIPPED_BUNDLES / name)
    parser = ConfigParser()
    parser.read_config(str(SHIPPED_BUNDLES / name / "configs" / "inference.json"))
    parser.resolve_macro_and_relative_ids()
    check_config_trust(parser.get(), name)


REFUSED = [
    ({"x": {"_target_": "os.system", "command": "true"}}, "x#_target_: os.system"),
    ({"x": {"_target_": "eval", "source": "1"}}, "x#_target_: eval"),
    ({"x": {"_target_": "@y"}, "y": "os.system"}, "x#_target_: '@y'"),
    ({"x": {"_target_": "monai.bundle.run"}}, "monai.bundle.run"),
    ({"x": {"_target_": "torch.nn.Identity", "_mode_": "debug"}}, "x#_mode_: debug"),
    ({"imports": ["$import os"], "x": "$os.system('true')"}, "imports#0: $import os"),
    ({"imports": ["$import subprocess as s"]}, "subprocess"),
    ({"imports": ["$from monai_sr.bundles import load_inference_parts"]}, "monai_sr.bundles.load_inference_parts"),
    ({"x": "$torch.os.system('true')"}, "torch.os.system (it is posix.system"),
    ({"x": "$monai.utils.module.os"}, "monai.utils.module.os"),
    ({"x": "$monai.utils.optional_import('os')[0].system('true')"}, "monai.utils.optional_import"),
    ({"x": "$torch.load('a.pt')"}, "torch.load"),
    ({"x": "$torch.load('a.pt', weights_only=False)"}, "torch.load"),
    ({"x": "$torch.hub.load('a', 'b')"}, "torch.hub.load"),
    ({"x": "$torch.ops.load_library('x.so')"}, "torch.ops.load_library"),
    ({"x": "$torch.utils.cpp_extension.load('x', ['a.cpp'])"}, "torch.utils.cpp_extension"),
    ({"x": "$getattr(torch, 'os')"}, "name getattr"),
    ({"x": "$__import__('os')"}, "name __import__"),
    ({"x": "$open('/etc/passwd').read()"}, "name open"),
    ({"x": "$(lambda f: f)(exec)"}, "name exec"),
    ({"x": "$np.load('a.npy', allow_pickle=True)"}, "np.load"),
    ({"x": "$torch.__builtins__"}, "attribute __builtins__"),
    ({"x": "$[c for c in ().__class__.__base__.__subclasses__()]"}, "__"),
    ({"x": "$import os; os.system('true')"}, "os"),
]


@pytest.mark.parametrize("config,named", REFUSED, ids=[r[1][:40] for r in REFUSED])
def test_configs_reaching_beyond_are_refused_naming_the_target(config, named):
    with pytest.raises(ModelError) as err:
        check_config_trust(config, "inference.json")
    line = str(err.value)
    assert line.startswith("inference.json: the bundle reaches beyond monai, monai_sr and torch")
    assert named in line and "--trust-bundle" in line and "\n" not in line


@pytest.mark.parametrize("config", [
    {"x": "$torch.load('a.pt', map_location='cpu', weights_only=True)"},
    {"x": {"_target_": "SRUNet"}, "imports": ["$import monai_sr.networks"]},
    {"x": {"_target_": "LoadImage", "image_only": True}},
    {"x": "$monai.transforms.Compose([])", "y": "$[i * 2 for i in range(3)]", "z": "$lambda t: t.float()"},
    {"n": 3, "x": "$@n + 1", "y": {"_target_": "torch.nn.Conv2d", "in_channels": "@n", "out_channels": 1, "kernel_size": 3}},
])
def test_configs_within_the_rule_pass(config):
    check_config_trust(config, "inference.json")


# --- load_inference_parts --------------------------------------------------------------------------------


def test_untrusted_bundle_refused_before_anything_runs_unless_trusted(tmp_path):
    sentinel = tmp_path / "ran"

    def edit(cfg):
        cfg["imports"].append("$import os")
        cfg["device"] = f"$os.system('touch {sentinel}') or torch.device('cpu')"

    bundle = _copy_bundle(tmp_path, edit=edit)
    with pytest.raises(ModelError, match=r"imports#\d: \$import os"):
        load_inference_parts(bundle)
    assert not sentinel.exists()
    parts = load_inference_parts(bundle, trust=True, internal_learning=False)  # the user vouches for it
    assert sentinel.exists() and parts["network"] is not None


def test_a_clean_copy_of_a_shipped_bundle_runs_untrusted(tmp_path):
    parts = load_inference_parts(_copy_bundle(tmp_path), internal_learning=False)
    ref = load_inference_parts("mri_sr_unet", internal_learning=False)
    for a, b in zip(parts["network"].state_dict().values(), ref["network"].state_dict().values()):
        assert torch.equal(a, b)


def test_weights_only_is_enforced_whatever_the_config_says(tmp_path):
    sentinel = tmp_path / "ran"

    def edit(cfg):
        cfg["load_weights"] = "$@network.load_state_dict(torch.load(@ckpt_path, weights_only=False))"

    bundle = _copy_bundle(tmp_path, edit=edit)
    torch.save({"w": _Evil(sentinel)}, bundle / "models" / "model.pt")
    with pytest.raises(ModelError) as err:
        load_inference_parts(bundle, trust=True)  # trusted config, but the package loads the weights itself
    assert not sentinel.exists(), "the pickle ran"
    assert "holds Python objects beyond tensors" in str(err.value) and "posix.system" in str(err.value)
    assert str(err.value).startswith(str(bundle / "models" / "model.pt"))


def test_corrupt_and_foreign_weights_give_one_line(tmp_path):
    net = torch.nn.Conv2d(1, 2, 3)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match="cannot read the weights: not a PyTorch checkpoint or damaged") as err:
        load_checkpoint(net, bad)
    assert "\n" not in str(err.value)
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Conv2d(1, 4, 3).state_dict(), other)
    with pytest.raises(ModelError, match=r"do not fit the bundle's network Conv2d: 2 of another shape \(e\.g\. weight: "
                                         r"\(4, 1, 3, 3\) in the file, \(2, 1, 3, 3\) in the network\)"):
        load_checkpoint(net, other)
    torch.save({"conv.weight": net.weight.detach(), "bias": net.bias.detach()}, other)  # another module layout
    with pytest.raises(ModelError, match=r"1 missing \(e\.g\. weight\); 1 unexpected \(e\.g\. conv\.weight\)"):
        load_checkpoint(net, other)
    torch.save([1, 2], other)
    with pytest.raises(ModelError, match="holds a list, not a state dict"):
        load_checkpoint(net, other)
    good = tmp_path / "good.pt"
    ref = torch.nn.Conv2d(1, 2, 3)
    torch.save({"model": ref.state_dict(), "step": 3}, good)  # a training checkpoint
    load_checkpoint(net, good)
    assert torch.equal(net.weight, ref.weight)
    with pytest.raises(ModelError, match="bundle weights not found"):
        load_checkpoint(net, tmp_path / "missing.pt")


def test_config_that_is_not_json(tmp_path):
    bundle = _copy_bundle(tmp_path)
    (bundle / "configs" / "inference.json").write_text("{ not json")
    with pytest.raises(ModelError, match="not a valid JSON config") as err:
        load_inference_parts(bundle)
    assert "\n" not in str(err.value)


# --- the command line --------------------------------------------------------------------------------------


def test_cli_refuses_untrusted_target_and_corrupt_weights(tmp_path):
    """Through the real entry point: one line naming the cause, exit 1, nothing at OUTPUT (nor beside it)."""
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 3)).astype(np.float32), np.eye(4)), src)
    before = tree_digest(src)
    sentinel = tmp_path / "ran"

    def edit(cfg):
        cfg["network_def"] = {"_target_": "os.system", "command": f"touch {sentinel}"}

    evil = _copy_bundle(tmp_path / "a", edit=edit)
    corrupt = _copy_bundle(tmp_path / "b")
    (corrupt / "models" / "model.pt").write_bytes(b"\x80\x02not a checkpoint")
    for bundle, cause in ((evil, "network_def#_target_: os.system"), (corrupt, "cannot read the weights")):
        out = tmp_path / "out.nii.gz"
        result = run_cli("enhance", src, out, "--bundle", bundle, "--quiet")
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("monai-sr: error: ") and cause in lines[0], result.stderr
        assert "Traceback" not in result.stderr
        assert not out.exists() and sorted(p.name for p in tmp_path.glob(".*")) == []
    assert not sentinel.exists()
    assert tree_digest(src) == before
