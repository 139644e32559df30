"""Find a bundle by name or path and build its inference parts through MONAI's ConfigParser.

``monai-sr enhance --bundle NAME`` and ``python -m monai.bundle run`` read the same
``configs/inference.json``: this module asks the parser for the same ``network``, ``load_weights`` and
``inferer`` entries that the config's ``run`` list uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai_sr.errors import ModelError

__all__ = ["BUNDLES_ENV", "DEFAULT_BUNDLE", "bundle_search_dirs", "find_bundle", "load_inference_parts"]

BUNDLES_ENV = "MONAI_SR_BUNDLES"
DEFAULT_BUNDLE = "mri_sr_unet"


def bundle_search_dirs() -> list[Path]:
    """Folders searched for a bundle name: ``$MONAI_SR_BUNDLES`` (os.pathsep-separated), then the
    ``bundles/`` folder of the source checkout this package runs from."""
    dirs = [Path(p) for p in os.environ.get(BUNDLES_ENV, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[1] / "bundles")
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


def load_inference_parts(name_or_path: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """Parse the bundle's inference config and return ``{"network", "inferer", "bundle_root", "parser"}``
    with the weights loaded (by the config's own ``load_weights`` expression)."""
    from monai.bundle import ConfigParser

    root = find_bundle(name_or_path)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    for key, value in overrides.items():
        parser[key] = value
    ckpt = Path(parser.get_parsed_content("ckpt_path"))
    if not ckpt.is_file():
        raise ModelError("bundle weights not found", path=ckpt)
    try:
        parser.get_parsed_content("load_weights")
        network = parser.get_parsed_content("network")
        inferer = parser.get_parsed_content("inferer")
    except Exception as exc:
        raise ModelError(f"cannot build the bundle's network ({type(exc).__name__}: {exc})", path=root) from exc
    return {"network": network.eval(), "inferer": inferer, "bundle_root": root, "parser": parser}
