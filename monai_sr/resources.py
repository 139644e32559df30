"""Files that travel with the package: the bundles, the data specs (bundle metadata schema, dataset
manifests) and the demo sample, found with :mod:`importlib.resources` under ``monai_sr/_data/``.

In the source checkout ``monai_sr/_data/{bundles,data_specs,sample}`` are relative symlinks to the
repository's ``bundles/``, ``data_specs/`` and ``data/sample/`` (those stay where MONAI users and the docs
expect them, e.g. for ``python -m monai.bundle run``); building a wheel or an sdist copies the files
behind the links (setup.cfg ``[options.package_data]``), so an installed package holds real folders.
On a checkout made without symlinks (git ``core.symlinks=false``) the links are plain files: then set
``$MONAI_SR_BUNDLES`` or install the package (``pip install .``).
"""

from __future__ import annotations

import hashlib
import os
from importlib.resources import files
from pathlib import Path

from monai_sr.errors import MonaiSRError

__all__ = ["data_path", "sha256_file", "BUNDLES", "DATA_SPECS", "SAMPLE"]

BUNDLES = "bundles"
DATA_SPECS = "data_specs"
SAMPLE = "sample"


def data_path(*parts: str) -> Path:
    """A file or folder of the package data (``monai_sr/_data/<parts>``) as a file-system path.

    The package must be installed as files (pip does so for wheels); a zipped import is refused with a
    message, since MONAI and the readers need real paths."""
    resource = files("monai_sr").joinpath("_data", *parts)
    if not isinstance(resource, Path):
        raise MonaiSRError(
            f"monai_sr's package data is not on the file system ({resource!r}); install the package "
            "unzipped (pip install) to use its bundles and sample"
        )
    return resource


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks (the check of every data file against
    ``data_specs/``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
