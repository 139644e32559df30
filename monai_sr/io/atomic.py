"""Never a partial output: write into a temporary path beside the target, rename at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monai_sr.errors import OutputError

__all__ = ["atomic_output", "check_output_free"]


def check_output_free(target: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Raise :class:`OutputError` when ``target`` exists (and ``overwrite`` is off) or its parent is missing."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError("output exists already (pass overwrite to replace it)", path=target)
    if not target.parent.is_dir():
        raise OutputError("the folder to write into does not exist", path=target.parent)
    return target


@contextmanager
def atomic_output(target: str | os.PathLike, *, is_dir: bool, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success move it onto ``target``.

    On any exception the temporary path is removed and ``target`` is left as it was. With
    ``overwrite``, an existing ``target`` is replaced only after the new output is complete.
    """
    target = check_output_free(target, overwrite=overwrite)
    parent = target.parent
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
    tmp = tmp_dir / target.name
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = tmp_dir / (target.name + ".old")
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
