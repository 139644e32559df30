"""One exception family for monai_sr.

Every error the package raises on purpose derives from :class:`MonaiSRError`. The CLI turns it into a
single line ``monai-sr: error: <file>: <cause>`` and a non-zero exit code (a traceback only with
``--debug``).
"""

from __future__ import annotations

import re
from os import PathLike

__all__ = ["MonaiSRError", "InputError", "GeometryError", "ModelError", "OutputError", "SendError"]


class MonaiSRError(Exception):
    """Base error. ``path`` (optional) is the file or folder the error is about. The message is kept on
    one line (line breaks of a library's message become spaces), as the CLI prints it."""

    def __init__(self, message: str, *, path: str | PathLike | None = None) -> None:
        self.path = None if path is None else str(path)
        message = re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip()
        self.cause = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(MonaiSRError):
    """The input cannot be read: not DICOM/NIfTI, truncated, empty, several series, wrong dimension."""


class GeometryError(MonaiSRError):
    """Geometry is missing or inconsistent: no IPP/IOP, missing slices, unequal spacing, bad affine."""


class ModelError(MonaiSRError):
    """A bundle or its weights cannot be found or loaded, or the network does not fit the data."""


class OutputError(MonaiSRError):
    """The output cannot be written: it exists already, its parent is missing, its format is unknown."""


class SendError(MonaiSRError):
    """A series could not be sent (entirely or in part): bad destination, refused association, C-STORE
    failure status, HTTP error. ``path`` is the destination."""
