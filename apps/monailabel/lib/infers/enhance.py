"""One MONAI Label infer task per monai_sr bundle, running ``monai-sr enhance`` in monai_sr's own environment.

The MONAI Label server runs in ``.venv-monailabel`` (pydicom 2, which MONAI Label 0.8.5 needs); monai_sr
needs pydicom 3, so the task does not import it. It runs the real command line of monai_sr's environment
(``$MONAI_SR_PYTHON -m monai_sr enhance ...``, see :func:`monai_sr_command`): the same bundle, network,
inferer, per-volume adaptation, geometry, checks and writers as ``monai-sr enhance``, no second copy.

What a task returns to MONAI Label: the enhanced volume as a NIfTI file (float32, RAS affine of the
field-of-view rule: ``A' = A diag(1/s, 1)``, translation moved by ``A[:3,:3] (1/s - 1)/2``), written by
monai_sr's NIfTI writer; MONAI Label sends it back for ``output=image`` and deletes it afterwards. The
JSON part holds the command's summary and notes. With ``derived_dicom`` (a DICOM input only, i.e. a
DICOMweb datastore) the task also writes the derived DICOM series with monai_sr's writer and sends it to
the PACS by STOW-RS (``monai-sr enhance ... --send URL``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

logger = logging.getLogger(__name__)

__all__ = ["BUNDLES", "MONAI_SR_PYTHON_ENV", "EnhanceError", "EnhanceTask", "monai_sr_command"]

#: the bundles served, one infer task each (the task's name is the bundle's)
BUNDLES: dict[str, str] = {
    "mri_sr_unet": "x2 in-plane super-resolution (SRUNet, guarded per-volume fit; 'fast' skips the fit)",
    "mri_sr_selfsupervised": "through-plane super-resolution by the slice-thickness ratio, fitted to the input first",
    "mri_denoise_dncnn": "denoising on the same grid (DnCNN; the estimated noise level is a note)",
}

#: a Python interpreter of an environment where monai_sr is installed (e.g. the checkout's .venv/bin/python)
MONAI_SR_PYTHON_ENV = "MONAI_SR_PYTHON"

_TQDM = re.compile(r"^(?P<stage>[^:]+):\s+\d+%.*?\|\s*(?P<done>\d+)/(?P<total>\d+)")
_SENT = re.compile(r"^sent\s+(?P<stored>\d+) of (?P<total>\d+) instance")


class EnhanceError(Exception):
    """``monai-sr enhance`` refused the input or failed: the message is its one-line error."""


def monai_sr_command(app_dir: str | os.PathLike | None = None) -> list[str]:
    """The command that starts monai_sr's command line in monai_sr's own environment.

    In this order: ``[$MONAI_SR_PYTHON, "-m", "monai_sr"]``; the ``monai-sr`` on ``PATH``; the Python of
    the checkout's ``.venv`` two folders above ``app_dir`` (``apps/monailabel`` of the repository).
    Raises :class:`EnhanceError` naming the variable when none is found.
    """
    python = os.environ.get(MONAI_SR_PYTHON_ENV)
    if python:
        if shutil.which(python) is None:
            raise EnhanceError(f"${MONAI_SR_PYTHON_ENV}={python}: not an executable")
        return [python, "-m", "monai_sr"]
    on_path = shutil.which("monai-sr")
    if on_path:
        return [on_path]
    if app_dir is not None:
        checkout = Path(app_dir).resolve().parents[1] / ".venv" / "bin" / "python"
        if checkout.is_file():
            return [str(checkout), "-m", "monai_sr"]
    raise EnhanceError(
        f"monai_sr not found: set ${MONAI_SR_PYTHON_ENV} to the python of an environment with monai_sr installed "
        "(e.g. the checkout's .venv/bin/python), or put monai-sr on PATH"
    )


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise EnhanceError(f"parameter {name!r}: expected true or false, got {value!r}")


class EnhanceTask(InferTask):
    """Enhance the request's image with one monai_sr bundle (``type="others"``, 3D).

    Request keys (MONAI Label's ``params`` form field, JSON), all optional:

    - ``fast`` (bool): skip the bundle's per-volume adaptation (``monai-sr enhance --fast``);
    - ``derived_dicom`` (bool): also write the derived DICOM series and send it by STOW-RS to ``send_to``;
      the input must be a DICOM series (a DICOMweb datastore).

    ``send_to`` (``dicom://AET@HOST:PORT`` or a DICOMweb root) is the server's choice, never a request's: a
    client cannot make the server send images elsewhere.

    ``__call__`` returns ``(nifti_path, result)``; ``result`` holds ``bundle``, ``summary`` (the lines
    ``monai-sr enhance`` printed), ``notes``, ``seconds`` and, with ``derived_dicom``, ``derived_series``
    (``series_instance_uid``, ``instances``, ``stored``, ``destination``).
    """

    def __init__(self, bundle: str, *, command: Sequence[str], send_to: str | None = None,
                 description: str | None = None, timeout: float = 3600.0) -> None:
        super().__init__(
            type=InferType.OTHERS, labels=None, dimension=3,
            description=description or BUNDLES.get(bundle, f"monai_sr bundle {bundle}"),
            config={"fast": False, "derived_dicom": False},
        )
        self.bundle = bundle
        self.command = list(command)
        self.send_to = send_to
        self.timeout = timeout

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        image = request.get("image")
        if not isinstance(image, str) or not os.path.exists(image):
            raise EnhanceError(f"expects an image of the datastore or an uploaded NIfTI file, got {image!r}")
        fast = _as_bool(request.get("fast", False), "fast")
        derived = _as_bool(request.get("derived_dicom", False), "derived_dicom")
        if derived:
            if not os.path.isdir(image):
                raise EnhanceError(f"{image}: derived_dicom needs a DICOM series input (a DICOMweb datastore), not a file")
            if not self.send_to:
                raise EnhanceError("derived_dicom: the server has no PACS to send to (a DICOMweb datastore, or --conf send_to URL)")
        options = ["--bundle", self.bundle] + (["--fast"] if fast else [])
        t0 = time.perf_counter()
        output = Path(tempfile.gettempdir()) / f"monai_sr_{self.bundle}_{uuid.uuid4().hex}.nii.gz"
        stdout = self._run(["enhance", image, str(output), *options], what="NIfTI")
        result: dict[str, Any] = {"bundle": self.bundle, "summary": stdout.splitlines(), "notes": _notes(stdout)}
        if derived:
            try:
                result["derived_series"] = self._derived_series(image, options, self.send_to)
            except BaseException:
                output.unlink(missing_ok=True)
                raise
        result["seconds"] = round(time.perf_counter() - t0, 2)
        return str(output), result

    def _derived_series(self, image: str, options: list[str], send_to: str) -> dict[str, Any]:
        """``monai-sr enhance IMAGE FOLDER --send send_to`` into a temporary folder, removed afterwards."""
        import pydicom

        work = Path(tempfile.mkdtemp(prefix=f"monai_sr_{self.bundle}_"))
        try:
            folder = work / "derived"
            stdout = self._run(["enhance", image, str(folder), *options, "--send", send_to], what="DICOM + STOW-RS")
            files = sorted(p for p in folder.iterdir() if p.is_file())
            first = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            sent = next((m for m in map(_SENT.match, stdout.splitlines()) if m), None)
            return {
                "series_instance_uid": str(first.SeriesInstanceUID), "instances": len(files),
                "stored": int(sent["stored"]) if sent else None, "destination": send_to,
            }
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, args: list[str], *, what: str) -> str:
        """Run monai_sr's command line with ``args``; its progress bars and warnings go to this log as
        they come. Returns its stdout; :class:`EnhanceError` with its one-line error on a non-zero exit."""
        cmd = [*self.command, *args]
        logger.info("%s: %s", self.bundle, " ".join(cmd))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        errors: list[str] = []
        chunks: list[bytes] = []
        readers = [threading.Thread(target=self._log_progress, args=(proc.stderr, errors, what), daemon=True),
                   threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # monai-sr leaves no partial output behind a killed run (DESIGN.md)
            proc.wait()
            raise EnhanceError(f"monai-sr enhance ran past {self.timeout:.0f} s and was stopped") from None
        finally:
            for reader in readers:
                reader.join(timeout=10)
        stdout = b"".join(chunks).decode(errors="replace")
        for line in stdout.splitlines():
            logger.info("%s: %s", self.bundle, line)
        if proc.returncode != 0:
            message = next((e for e in reversed(errors) if e.startswith("monai-sr: error: ")), errors[-1] if errors else "")
            raise EnhanceError(message.removeprefix("monai-sr: error: ") or f"monai-sr enhance exited with {proc.returncode}")
        return stdout

    def _log_progress(self, stream: Any, errors: list[str], what: str) -> None:
        """Log tqdm's bars from ``stream`` as ``bundle (what): stage done/total``, at most every 2 s per
        stage plus the last; other lines (warnings, the error) are logged and kept in ``errors``."""
        last: dict[str, float] = {}
        buffer = b""
        while chunk := stream.read1(4096):
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for raw in lines:
                self._log_line(raw.decode(errors="replace").strip(), last, errors, what)
        self._log_line(buffer.decode(errors="replace").strip(), last, errors, what)

    def _log_line(self, line: str, last: dict[str, float], errors: list[str], what: str) -> None:
        if not line:
            return
        bar = _TQDM.match(line)
        if bar is None:
            errors.append(line)
            logger.warning("%s: %s", self.bundle, line)
            return
        stage, done, total = bar["stage"].strip(), int(bar["done"]), int(bar["total"])
        now = time.monotonic()
        if done == total or now - last.get(stage, 0.0) >= 2.0:
            last[stage] = now
            logger.info("%s (%s): %s %d/%d", self.bundle, what, stage, done, total)


def _notes(stdout: str) -> list[str]:
    """The ``note`` lines of ``monai-sr enhance``'s summary."""
    return [line[4:].strip() for line in stdout.splitlines() if line.startswith("note ")]
