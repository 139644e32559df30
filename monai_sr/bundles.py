"""Find a bundle by name or path, build its inference parts through MONAI's ConfigParser, and check it.

``monai-sr enhance --bundle NAME`` and ``python -m monai.bundle run`` read the same
``configs/inference.json``: this module asks the parser for the same ``network``, ``load_weights``,
``inferer`` and ``adapt`` entries that the config's ``run`` list uses.

Checks (used by ``tests/bundles/test_bundle_spec.py`` for every bundle):

- :func:`verify_metadata_offline`: MONAI's ``verify_metadata`` against the schema kept in
  ``data_specs/bundle_schema/`` (the file named by the metadata's ``schema`` URL), no download;
- :func:`check_sr_shape`: the network's output spatial shape is the input's times the scale that
  ``network_data_format`` declares (``"2*H"``: twice the input along that axis; ``"H"``: unchanged).
  MONAI's ``verify_net_in_out`` checks channels and dtype only.
"""

from __future__ import annotations

import ast
import json
import os
import operator
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_sr.errors import ModelError
from monai_sr.resources import BUNDLES, DATA_SPECS, data_path

__all__ = [
    "PRECISIONS",
    "config_overrides",
    "BUNDLES_ENV",
    "DEFAULT_BUNDLE",
    "SCHEMA_DIR",
    "bundle_search_dirs",
    "config_bundle_root",
    "find_bundle",
    "load_inference_parts",
    "schema_path",
    "verify_metadata_offline",
    "declared_output_shape",
    "check_sr_shape",
    "as_bool",
]

BUNDLES_ENV = "MONAI_SR_BUNDLES"
DEFAULT_BUNDLE = "mri_sr_unet"
SCHEMA_DIR = data_path(DATA_SPECS, "bundle_schema")


def bundle_search_dirs() -> list[Path]:
    """Folders searched for a bundle name: ``$MONAI_SR_BUNDLES`` (os.pathsep-separated), then the
    bundles shipped as package data (:func:`monai_sr.resources.data_path`; in a source checkout, the
    repository's ``bundles/`` folder)."""
    dirs = [Path(p) for p in os.environ.get(BUNDLES_ENV, "").split(os.pathsep) if p]
    dirs.append(data_path(BUNDLES))
    return dirs


def find_bundle(name_or_path: str | os.PathLike) -> Path:
    """Resolve a bundle folder (one holding ``configs/inference.json``) from a path or a name."""
    candidate = Path(name_or_path)
    tried = [candidate]
    if not (candidate / "configs" / "inference.json").is_file() and candidate.name == str(name_or_path):
        tried = [candidate] + [d / str(name_or_path) for d in bundle_search_dirs()]
    for path in tried:
        if (path / "configs" / "inference.json").is_file():
            return path.resolve()
    available = sorted(
        {p.name for d in bundle_search_dirs() if d.is_dir() for p in d.iterdir() if (p / "configs" / "inference.json").is_file()}
    )
    raise ModelError(
        f"no bundle (a folder with configs/inference.json) found; tried {', '.join(map(str, tried))}; "
        f"available: {', '.join(available) or 'none'}",
        path=name_or_path,
    )


def _cause(exc: BaseException) -> str:
    """One line for a config error: the innermost cause, not MONAI's dump of the config expression."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


def load_inference_parts(name_or_path: str | os.PathLike, *, trust: bool = False, **overrides: Any) -> dict[str, Any]:
    """Parse the bundle's inference config and return ``{"network", "inferer", "adapt", "derivation",
    "bundle_root", "parser"}`` with the weights loaded by :func:`monai_sr.bundle_trust.load_checkpoint`
    (``torch.load(..., weights_only=True)``, whatever the config's ``load_weights`` says; that entry is
    not evaluated here); ``derivation`` is the config's Derivation Description text for DICOM output, or None.

    A bundle from outside the shipped ones (``bundles/`` of this repository) is checked first by
    :func:`monai_sr.bundle_trust.check_config_trust`: one whose ``_target_`` or ``$`` expressions reach
    beyond ``monai``, ``monai_sr`` and ``torch`` is refused (ModelError naming it) unless ``trust``.

    ``adapt`` is the config's per-volume fit hook for :func:`monai_sr.pipeline.enhance` (``None`` when
    the config has none or its switch, e.g. ``internal_learning``, is off); ``overrides`` set config
    ids before parsing, e.g. ``internal_learning=True``."""
    from monai.bundle import ConfigParser

    from monai_sr.bundle_trust import check_config_trust, is_shipped_bundle, load_checkpoint

    root = find_bundle(name_or_path)
    config_file = root / "configs" / "inference.json"
    parser = ConfigParser()
    try:
        parser.read_config(str(config_file))
    except ValueError as exc:  # json.JSONDecodeError
        raise ModelError(f"not a valid JSON config ({_cause(exc)})", path=config_file) from None
    except OSError as exc:
        raise ModelError(f"cannot read the config ({exc.strerror or exc})", path=config_file) from None
    if not isinstance(parser.get(), dict):
        raise ModelError("the config is not a JSON object of ids", path=config_file)
    parser["bundle_root"] = str(root)
    for key, value in overrides.items():
        if key not in parser:
            top = ", ".join(k for k in parser.get() if k != "imports" and not k.startswith("_"))
            raise ModelError(f"the bundle's inference.json has no id {key!r} to override (ids: {top})", path=root)
        parser[key] = value
    if not trust and not is_shipped_bundle(root):  # before anything of the config is evaluated
        try:
            parser.resolve_macro_and_relative_ids()
        except Exception as exc:
            raise ModelError(f"cannot resolve the config's macros ({_cause(exc)})", path=config_file) from None
        check_config_trust(parser.get(), config_file)
    try:
        ckpt = Path(parser.get_parsed_content("ckpt_path"))
        network = parser.get_parsed_content("network")
    except Exception as exc:
        raise ModelError(f"cannot build the bundle's network ({_cause(exc)})", path=root) from None
    load_checkpoint(network, ckpt)  # weights_only=True, whatever the config says
    try:
        inferer = parser.get_parsed_content("inferer")
        adapt = parser.get_parsed_content("adapt") if "adapt" in parser else None
        derivation = parser.get_parsed_content("derivation") if "derivation" in parser else None
    except Exception as exc:
        raise ModelError(f"cannot build the bundle's parts ({_cause(exc)})", path=root) from exc
    return {
        "network": network.eval(), "inferer": inferer, "adapt": adapt, "derivation": derivation, "bundle_root": root,
        "parser": parser,
    }


def schema_path(url: str) -> Path:
    """The repository's copy of the metadata schema at ``url`` (same file name, in :data:`SCHEMA_DIR`)."""
    path = SCHEMA_DIR / url.rstrip("/").rsplit("/", 1)[-1]
    if not path.is_file():
        kept = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
        raise ModelError(f"no local copy of the metadata schema {url}; kept: {', '.join(kept) or 'none'}", path=path)
    return path


def verify_metadata_offline(name_or_path: str | os.PathLike) -> Path:
    """Run MONAI's ``verify_metadata`` on the bundle's ``configs/metadata.json`` against the local copy
    of its schema, checked against its md5 in ``schemas.json`` (``verify_metadata`` downloads only when
    ``filepath`` does not exist yet). Raises
    MONAI's ``ValueError`` on a schema violation; returns the schema path used."""
    from monai.bundle import verify_metadata

    meta_file = find_bundle(name_or_path) / "configs" / "metadata.json"
    schema = schema_path(json.loads(meta_file.read_text())["schema"])
    manifest = json.loads((SCHEMA_DIR / "schemas.json").read_text())["files"].get(schema.name, {})
    verify_metadata(meta_file=str(meta_file), filepath=str(schema), create_dir=False, hash_val=manifest.get("md5"))
    return schema


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def _eval_size(token: str, names: Mapping[str, int], default: int | None) -> int:
    """Evaluate a shape token like ``"2*H"``, ``"16*n"``, ``"H"`` with integer arithmetic only (no eval).
    ``n`` and ``p`` take their values from ``names``; any other name is ``default`` (the input size)."""

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            if default is None:
                raise ValueError(f"shape token {token!r}: only n and p may name a size here")
            return default
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"unsupported shape token {token!r}")

    return int(ev(ast.parse(token.strip(), mode="eval")))


def _io(meta: Mapping[str, Any], key: str | None, which: str) -> Mapping[str, Any]:
    entries = meta["network_data_format"][which]
    return entries[key] if key is not None else next(iter(entries.values()))


def declared_output_shape(
    meta: Mapping[str, Any], input_spatial: Sequence[int], *, n: int = 1, p: int = 1, output_key: str | None = None
) -> tuple[int, ...]:
    """The output spatial shape that ``meta["network_data_format"]`` declares for ``input_spatial``.

    Output tokens: an int (a fixed size), or an expression of the input size along the same axis
    (any name other than ``n``/``p``: ``"2*H"``, ``"H"``) and of ``n``/``p`` (MONAI's
    ``verify_net_in_out`` variables, e.g. input ``"16*n"`` with output ``"32*n"``). ``"*"`` states no
    size, so it is refused: an SR bundle must declare its scale."""
    tokens = _io(meta, output_key, "outputs")["spatial_shape"]
    if len(tokens) != len(input_spatial):
        raise ModelError(f"output spatial_shape {tokens} and input shape {tuple(input_spatial)} differ in length")
    out = []
    for token, size in zip(tokens, input_spatial):
        if isinstance(token, int):
            out.append(token)
        elif token.strip() == "*":
            raise ModelError(f"output spatial_shape {tokens} does not state the scale ('*'); write e.g. '2*H' or 'H'")
        else:
            out.append(_eval_size(token, {"n": n, "p": p}, int(size)))
    return tuple(out)


def check_sr_shape(
    name_or_path: str | os.PathLike,
    *,
    config: str = "inference.json",
    net_id: str = "network_def",
    n: int = 3,
    p: int = 1,
    any: int = 37,  # noqa: A002 - MONAI's verify_net_in_out name
    input_key: str | None = None,
    output_key: str | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Build the bundle's network (random weights) and check ``output spatial = input spatial x scale``
    as declared in ``configs/metadata.json`` (see :func:`declared_output_shape`).

    The input shape comes from the metadata as in MONAI's ``verify_net_in_out`` (``"*"`` -> ``any``,
    ``n``/``p`` substituted); odd defaults (``any=37``, ``n=3``) catch networks that only work on even
    sizes. Returns ``(input shape, output shape)`` as ``(N, C, *spatial)``; raises :class:`ModelError`
    on a mismatch of shape or channel count.
    """
    import torch
    from monai.bundle import ConfigParser

    root = find_bundle(name_or_path)
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / config))
    parser["bundle_root"] = str(root)
    net = parser.get_parsed_content(net_id).to("cpu").eval()
    inp = _io(meta, input_key, "inputs")
    out_meta = _io(meta, output_key, "outputs")
    spatial = tuple(
        t if isinstance(t, int) else any if t.strip() == "*" else _eval_size(t, {"n": n, "p": p}, any)
        for t in inp["spatial_shape"]
    )
    x = torch.rand(2, int(inp["num_channels"]), *spatial)
    with torch.no_grad():
        y = net(x)
    expected = (2, int(out_meta["num_channels"]), *declared_output_shape(meta, spatial, n=n, p=p, output_key=output_key))
    if tuple(y.shape) != expected:
        raise ModelError(
            f"network output {tuple(y.shape)} for input {tuple(x.shape)} does not match the declared {expected} "
            f"(metadata output spatial_shape {out_meta['spatial_shape']})",
            path=root,
        )
    return tuple(x.shape), tuple(y.shape)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def config_bundle_root(name: str | None = None) -> str:
    """The ``bundle_root`` of a config, from the config file's own location, so that
    ``python -m monai.bundle run --config_file <bundle>/configs/inference.json`` runs from any working
    directory. The shipped configs set ``"bundle_root": {"_target_": "monai_sr.bundles.config_bundle_root",
    "name": "<bundle>"}``; ``--bundle_root PATH`` still overrides it, and :func:`load_inference_parts`
    sets it to the bundle it found.

    Looks up the call stack for what MONAI's bundle runner was given: a ``ConfigWorkflow``'s
    ``config_root_path`` (``run``, ``run_workflow``, ``create_workflow``), else the ``config_file``
    of a ``monai.bundle`` script (``ckpt_export``, ``verify_net_in_out``...); the bundle folder is the
    parent of ``configs/``. Outside those (a ConfigParser of your own), the installed bundle ``name``."""
    from monai.bundle import ConfigWorkflow

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("monai.bundle"):
            workflow = frame.f_locals.get("self")
            found = workflow.config_root_path if isinstance(workflow, ConfigWorkflow) else None
            if found is None:
                files = frame.f_locals.get("config_file_", frame.f_locals.get("config_file"))
                files = [files] if isinstance(files, (str, os.PathLike)) else files
                if isinstance(files, (list, tuple)) and files and isinstance(files[0], (str, os.PathLike)):
                    found = Path(files[0]).parent
            if found is not None:
                found = Path(found).resolve()
                return str(found.parent if found.name == "configs" else found)
        frame = frame.f_back
    if name is None:
        raise ModelError("bundle_root: not run by MONAI's bundle runner and no bundle name given; pass --bundle_root")
    return str(find_bundle(name))


def as_bool(value: Any, name: str = "value") -> bool:
    """A config switch as a bool. ``python -m monai.bundle run --flag false`` hands the config the
    *string* ``"false"`` (fire parses only Python literals such as ``False``), which is truthy, so the
    configs pass their switches through this: bools and 0/1 as they are, ``"true"/"false"`` (also
    ``yes/no``, ``on/off``, ``1/0``, any case); anything else is a ValueError naming the switch."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")


def as_mode(value: Any, name: str, modes: Sequence[str]) -> bool | str:
    """A config switch that is either on/off (read by :func:`as_bool`) or one of ``modes`` (kept as the
    string), e.g. ``self_ensemble``: ``true``, ``false``, ``"flips"`` or ``"full"``; anything else is a
    ValueError naming the switch and the choices."""
    if isinstance(value, str) and value.strip().lower() in modes:
        return value.strip().lower()
    try:
        return as_bool(value, name)
    except ValueError:
        raise ValueError(f"{name} must be true, false or one of {list(modes)}, got {value!r}") from None


#: ``--precision`` of ``monai-sr enhance`` -> the value of a bundle's ``amp`` config id (the autocast of
#: its inferers' forward passes, :class:`monai_sr.inference.base.AmpDtype`): ``auto`` = bf16 on a CPU with
#: native bf16, float32 elsewhere (CUDA included: ask for ``fp16`` or ``bf16`` there); ``fp32`` = none.
PRECISIONS: dict[str, str | None] = {"auto": "auto", "fp32": None, "bf16": "bf16", "fp16": "fp16"}


def config_overrides(precision: str | None, sets: Sequence[tuple[str, Any]] | None) -> dict[str, Any]:
    """The bundle config overrides of a command line: ``amp`` from ``precision`` (a key of
    :data:`PRECISIONS`; None: the bundle's own), then each ``(id, value)`` of ``--set`` (which win)."""
    overrides: dict[str, Any] = {}
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        overrides["amp"] = PRECISIONS[precision]
    overrides.update(dict(sets or ()))
    return overrides


def without_fit(adapt: Any) -> Any:
    """The bundle's ``adapt`` hook with its per-volume fit switched off (``monai-sr enhance --fast``).

    A fit hook of :mod:`monai_sr.training.internal` (a dataclass with ``enabled``) comes back as a copy
    with ``enabled=False``, so what it does besides fitting stays (e.g. the through-plane factor from the
    input's spacing); any other hook (e.g. the denoiser's noise report) fits nothing and is kept as it is.
    """
    import dataclasses

    if dataclasses.is_dataclass(adapt) and any(f.name == "enabled" for f in dataclasses.fields(adapt)):
        return dataclasses.replace(adapt, enabled=False)
    return adapt
