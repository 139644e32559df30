"""Every bundle under bundles/ against the bundle specification, offline.

Parametrised over each ``bundles/*/configs/metadata.json``, so a new bundle is checked as soon as it
exists: required files, ``verify_metadata`` against the schema kept in ``data_specs/bundle_schema``,
``verify_net_in_out``, the SR-aware shape check (output = input x declared scale), ``ckpt_export`` to
TorchScript matching the eager network (and the committed ``models/model.ts`` matching the weights),
and ConfigWorkflow smoke runs of ``train.json`` (two iterations, small patches) and ``evaluate.json``.

Smoke overrides: of the ids below, those a bundle's config defines are overridden (the shared
``train.json`` shape of common.md); a bundle can add its own in ``configs/smoke_overrides.json``
(``{"train": {...}, "evaluate": {...}}``, ids to values).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from data_volumes import needs_colin27, needs_training_data
from helpers import REPO

from monai_sr.bundles import check_sr_shape, declared_output_shape, verify_metadata_offline
from monai_sr.errors import ModelError

BUNDLES = sorted(p.parents[1] for p in (REPO / "bundles").glob("*/configs/metadata.json"))
REQUIRED = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/multi_gpu_inference.json",
    "configs/logging.conf",
    "models/model.pt",
    "models/model.ts",
    "docs/README.md",
    "LICENSE",
)
TRAIN_SMOKE = {
    "epoch_length": 2,
    "max_epochs": 1,
    "batch_size": 2,
    "num_threads": 1,
    "val_interval": 1,
    "patch_schedule": {"0": 8},
    "validate#dataset#step": 1000,
}
EVAL_SMOKE = {"slice_step": 1000, "num_threads": 1}

each_bundle = pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])


def _config(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "configs" / name).read_text())


def _smoke(bundle: Path, kind: str, generic: dict, tmp_path: Path) -> dict:
    """Overrides for ``kind`` (train / evaluate): the generic ones the config defines, then the bundle's own."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / f"{kind}.json"))
    overrides = {k: v for k, v in generic.items() if k in parser}
    overrides["output_dir"] = str(tmp_path / kind)
    own = bundle / "configs" / "smoke_overrides.json"
    if own.is_file():
        overrides.update(json.loads(own.read_text()).get(kind, {}))
    return overrides


@each_bundle
def test_required_files(bundle):
    missing = [rel for rel in REQUIRED if not (bundle / rel).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"
    readme = (bundle / "docs" / "README.md").read_text()
    for word in ("python", "PSNR"):
        assert word in readme, f"{bundle.name}/docs/README.md should give commands and measured metrics ({word})"


@each_bundle
def test_verify_metadata_offline(bundle, monkeypatch):
    # no network: a download attempt would fail loudly instead of hanging
    monkeypatch.setattr("monai.apps.utils.urlretrieve", lambda *a, **k: pytest.fail("verify_metadata tried to download"))
    schema = verify_metadata_offline(bundle)
    assert schema.parent.name == "bundle_schema"


@each_bundle
def test_metadata_rejects_a_missing_required_key(bundle, tmp_path):
    """The schema check can fail: the same metadata without ``network_data_format`` is refused."""
    from monai.bundle import verify_metadata

    meta = _config(bundle, "metadata.json")
    del meta["network_data_format"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    schema = REPO / "data_specs" / "bundle_schema" / meta["schema"].rsplit("/", 1)[-1]
    with pytest.raises(ValueError):
        verify_metadata(meta_file=str(bad), filepath=str(schema))


@each_bundle
def test_verify_net_in_out(bundle):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        device="cpu",
        n=2,
        any=32,
        bundle_root=str(bundle),
    )


@each_bundle
def test_sr_shape_matches_declared_scale(bundle):
    (n, c, *spatial), (n2, c2, *out) = check_sr_shape(bundle)
    tokens = _config(bundle, "metadata.json")["network_data_format"]["outputs"]
    tokens = next(iter(tokens.values()))["spatial_shape"]
    assert n == n2 and len(out) == len(spatial) == len(tokens)
    # odd input sizes: a network that rounds would fail here
    assert all(s % 2 == 1 for s in spatial)


def _eager(bundle: Path) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    return net.eval()


def _fake_input(bundle: Path) -> torch.Tensor:
    inp = next(iter(_config(bundle, "metadata.json")["network_data_format"]["inputs"].values()))
    spatial = [t if isinstance(t, int) else 33 for t in inp["spatial_shape"]]
    return torch.rand(1, int(inp["num_channels"]), *spatial, generator=torch.Generator().manual_seed(0))


@each_bundle
def test_ckpt_export_matches_eager(bundle, tmp_path):
    from monai.bundle import ckpt_export

    out = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(out),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )
    x = _fake_input(bundle)
    with torch.no_grad():
        ref = _eager(bundle)(x)
        for path in (out, bundle / "models" / "model.ts"):  # fresh export, and the committed one is current
            ts = torch.jit.load(str(path), map_location="cpu").eval()
            torch.testing.assert_close(ts(x), ref, rtol=1e-4, atol=1e-5, msg=f"{path} differs from the eager net")


@each_bundle
@needs_training_data
def test_train_config_workflow_smoke(bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    overrides = _smoke(bundle, "train", TRAIN_SMOKE, tmp_path)
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="train",
        bundle_root=str(bundle),
        **overrides,
    )
    wf.initialize()
    assert not wf.check_properties(), "train.json lacks required bundle properties"
    wf.run()
    assert wf.trainer.state.iteration >= 1
    wf.finalize()
    saved = sorted(p.name for p in Path(overrides["output_dir"]).glob("*.pt"))
    assert saved, "train.json wrote no checkpoint"
    ckpt = torch.load(Path(overrides["output_dir"]) / saved[0], map_location="cpu", weights_only=True)
    assert isinstance(ckpt, dict) and ckpt


@each_bundle
@needs_colin27
def test_evaluate_config_workflow_smoke(bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    overrides = _smoke(bundle, "evaluate", EVAL_SMOKE, tmp_path)
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "evaluate.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="eval",
        bundle_root=str(bundle),
        **overrides,
    )
    wf.initialize()
    assert not wf.check_properties(), "evaluate.json lacks required bundle properties"
    wf.run()
    metrics = wf.evaluator.state.metrics
    wf.finalize()
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values()), metrics


def _meta(inputs, outputs):
    fmt = lambda shape: {"x": {"num_channels": 1, "spatial_shape": shape}}  # noqa: E731
    return {"network_data_format": {"inputs": fmt(inputs), "outputs": fmt(outputs)}}


def test_declared_output_shape_tokens():
    assert declared_output_shape(_meta(["*", "*"], ["2*H", "2*W"]), (37, 40)) == (74, 80)
    assert declared_output_shape(_meta(["*", "*"], ["H", "4*W"]), (37, 40)) == (37, 160)
    assert declared_output_shape(_meta(["16*n", "16*n"], ["32*n", 64]), (48, 48), n=3) == (96, 64)
    with pytest.raises(ModelError, match="does not state the scale"):
        declared_output_shape(_meta(["*", "*"], ["*", "*"]), (37, 40))
    with pytest.raises(ValueError, match="unsupported shape token"):
        declared_output_shape(_meta(["*"], ["__import__('os')"]), (37,))


def test_sr_shape_check_catches_a_wrong_declared_scale(tmp_path):
    import shutil

    bundle = tmp_path / "mri_sr_unet_wrong"
    shutil.copytree(REPO / "bundles" / "mri_sr_unet" / "configs", bundle / "configs")
    meta = _config(bundle, "metadata.json")
    meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] = ["3*H", "3*W"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"does not match the declared \(2, 1, 111, 111\)"):
        check_sr_shape(bundle)


def test_as_bool_reads_the_strings_the_bundle_runner_passes():
    from monai_sr.bundles import as_bool

    assert as_bool("false") is False and as_bool("True") is True and as_bool(" 0 ") is False and as_bool(1) is True
    assert as_bool(False) is False
    with pytest.raises(ValueError, match="internal_learning must be true or false, got 'maybe'"):
        as_bool("maybe", "internal_learning")


@pytest.mark.parametrize("bundle,switch,hook", [("mri_sr_unet", "internal_learning", "internal_learning_fit"),
                                               ("mri_sr_selfsupervised", "fit", "through_plane_fit")])
def test_switch_given_as_the_string_false_turns_the_fit_off(bundle, switch, hook):
    from monai_sr.bundles import load_inference_parts

    off = load_inference_parts(bundle, **{switch: "false"})["adapt"]
    assert off is None or not off.enabled  # mri_sr_selfsupervised keeps its hook: the factor from the spacing
    assert load_inference_parts(bundle, **{switch: "true"})["adapt"] is not None
