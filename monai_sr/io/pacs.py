"""Send a written series to a PACS: DICOM C-STORE (pynetdicom) or DICOMweb STOW-RS (HTTP POST).

Destinations are URLs:

* ``dicom://AET@HOST:PORT`` - C-STORE to the Storage SCP whose AE title is ``AET``; our calling AE
  title is ``calling_aet`` (default ``MONAI_SR``);
* ``http://HOST:PORT/PATH`` or ``https://...`` - STOW-RS to the DICOMweb service root ``PATH`` (the
  instances are POSTed to ``PATH/studies`` as ``multipart/related; type="application/dicom"``, the file
  bytes unchanged).

Every instance gets its own result (:class:`InstanceResult`): a refused association, a failed or
refused C-STORE, an HTTP error or an instance the STOW-RS response lists as failed are reported for
the instances they hit, and :meth:`SendReport.raise_for_failures` turns any failure into
:class:`~monai_sr.errors.SendError`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_sr.errors import InputError, SendError

__all__ = ["Destination", "InstanceResult", "SendReport", "check_destination", "parse_destination", "send_series",
           "DEFAULT_AET"]

DEFAULT_AET = "MONAI_SR"
_STOW_BATCH_BYTES = 64 << 20  # one STOW-RS request carries up to this much (at least one instance)


@dataclass(frozen=True)
class Destination:
    """A parsed destination URL: ``kind`` is ``"dicom"`` (C-STORE) or ``"http"`` (STOW-RS)."""

    url: str
    kind: str
    host: str = ""
    port: int = 0
    called_aet: str = ""


@dataclass
class InstanceResult:
    """What happened to one instance: stored or not, and why (status, reason, HTTP error)."""

    path: Path
    sop_instance_uid: str
    stored: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'stored' if self.stored else 'FAILED'}  {self.path.name}  {self.sop_instance_uid}" + (
            f"  {self.detail}" if self.detail else "")


@dataclass
class SendReport:
    """Per-instance results of one :func:`send_series`."""

    destination: str
    results: list[InstanceResult] = field(default_factory=list)

    @property
    def failed(self) -> list[InstanceResult]:
        return [r for r in self.results if not r.stored]

    def text(self) -> str:
        """Failed instances one per line, then a summary line."""
        lines = [r.line() for r in self.failed]
        lines.append(f"sent    {len(self.results) - len(self.failed)} of {len(self.results)} instance(s) to {self.destination}")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """:class:`SendError` naming the destination, the count and the first cause, if any failed."""
        if self.failed:
            causes = sorted({r.detail for r in self.failed})
            raise SendError(
                f"{len(self.failed)} of {len(self.results)} instance(s) not stored: {causes[0]}"
                + (f" (and {len(causes) - 1} other cause(s))" if len(causes) > 1 else ""),
                path=self.destination,
            )


def parse_destination(url: str) -> Destination:
    """Parse ``dicom://AET@HOST:PORT`` or ``http(s)://HOST[:PORT]/PATH``; :class:`SendError` if malformed."""
    usage = "expected dicom://AET@HOST:PORT or http(s)://HOST:PORT/PATH"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SendError(f"bad destination ({exc}); {usage}", path=url) from None
    if parts.scheme == "dicom":
        aet = parts.username or ""
        if not aet or not parts.hostname or port is None:
            raise SendError(f"a DICOM destination needs an AE title, a host and a port; {usage}", path=url)
        _check_aet(aet, url)
        return Destination(url=url, kind="dicom", host=parts.hostname, port=port, called_aet=aet)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise SendError(f"an HTTP destination needs a host; {usage}", path=url)
        return Destination(url=url, kind="http", host=parts.hostname, port=port or 0)
    raise SendError(f"unknown destination scheme {parts.scheme!r}; {usage}", path=url)


def check_destination(dest: str | Destination, *, timeout: float = 30.0) -> Destination:
    """Parse ``dest`` and resolve its host name; :class:`SendError` naming the destination if it cannot be.

    A host that does not resolve would otherwise fail every instance (or, for C-STORE, raise from the
    socket layer); it is refused once, before anything is read or sent, so ``enhance --send`` finds it
    before the model loads. An HTTP destination reached through a proxy (``HTTP(S)_PROXY``) is left to
    the proxy to resolve. A lookup that takes longer than ``timeout`` seconds counts as failed.
    """
    import socket
    import threading

    dest = dest if isinstance(dest, Destination) else parse_destination(dest)
    if dest.kind == "http":
        import requests

        if requests.utils.get_environ_proxies(dest.url):
            return dest
    outcome: dict[str, object] = {}

    def lookup() -> None:
        try:
            outcome["ok"] = socket.getaddrinfo(dest.host, dest.port or None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout)
    if "ok" in outcome:
        return dest
    exc = outcome.get("error")
    if exc is None:
        why = f"no answer within {timeout:g} s"
    elif isinstance(exc, socket.gaierror):
        why = exc.strerror or str(exc)
    else:
        why = f"{type(exc).__name__}: {exc}"
    raise SendError(f"cannot resolve host {dest.host!r} ({why})", path=dest.url)


def _check_aet(aet: str, where: str) -> None:
    if not 0 < len(aet) <= 16 or not aet.isascii() or "\\" in aet or not aet.strip() or not aet.isprintable():
        raise SendError(f"AE title {aet!r} must be 1 to 16 printable ASCII characters without a backslash", path=where)


@dataclass
class _Instance:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def _instances(files: Iterable[str | os.PathLike]) -> list[_Instance]:
    out = []
    for f in files:
        path = Path(f)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            out.append(_Instance(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is refused by name
            raise InputError(f"not a DICOM file that can be sent ({type(exc).__name__}: {exc})", path=path) from exc
    return out


def _series_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The DICOM files of a series folder (``DICM`` marker, no hidden files), or the given files."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise InputError("expected a folder holding a DICOM series", path=folder)
        files = []
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                with open(p, "rb") as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        files.append(p)
        if not files:
            raise InputError("no DICOM files to send", path=folder)
        return files
    return [Path(p) for p in source]


def send_series(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    to: str | Destination,
    *,
    calling_aet: str = DEFAULT_AET,
    timeout: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """Send every DICOM file of ``source`` (a series folder or a list of files) to ``to``.

    Args:
        source: the folder the writer made, or its files.
        to: ``dicom://AET@HOST:PORT`` (C-STORE) or ``http(s)://HOST:PORT/PATH`` (STOW-RS service root).
        calling_aet: our AE title for C-STORE.
        timeout: seconds for connecting and for each network exchange.
        progress: called with ``(instances_done, instances_total)``.

    Returns:
        :class:`SendReport` with one result per instance; call ``raise_for_failures()`` to turn
        failures into :class:`~monai_sr.errors.SendError`. Malformed destinations, a host name that does
        not resolve (:func:`check_destination`) and unreadable files raise before anything is sent.
    """
    dest = to if isinstance(to, Destination) else parse_destination(to)
    _check_aet(calling_aet, "--aet")
    instances = _instances(_series_files(source))
    check_destination(dest, timeout=timeout)
    if dest.kind == "dicom":
        results = _c_store(instances, dest, calling_aet=calling_aet, timeout=timeout, progress=progress)
    else:
        results = _stow_rs(instances, dest, timeout=timeout, progress=progress)
    return SendReport(destination=dest.url, results=results)


def _status_text(code: int) -> str:
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

    category, text = STORAGE_SERVICE_CLASS_STATUS.get(code, ("Unknown", "unknown status"))
    return f"status 0x{code:04X} ({category}: {text})"


def _c_store(
    instances: list[_Instance], dest: Destination, *, calling_aet: str, timeout: float,
    progress: Callable[[int, int], None] | None,
) -> list[InstanceResult]:
    from pynetdicom import AE, evt

    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    syntaxes: dict[str, list[str]] = {}
    for inst in instances:
        ts = syntaxes.setdefault(inst.sop_class_uid, [])
        for uid in (inst.transfer_syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if uid not in ts:
                ts.append(uid)
    if len(syntaxes) > 128:
        raise InputError(f"{len(syntaxes)} SOP classes in one series; an association carries at most 128")
    for sop_class, ts in syntaxes.items():
        ae.add_requested_context(sop_class, ts)

    seen: dict[str, object] = {}
    handlers = [
        (evt.EVT_CONN_OPEN, lambda event: seen.setdefault("open", True)),
        (evt.EVT_ACSE_RECV, lambda event: seen.__setitem__("acse", event.primitive)),
    ]
    where = f"{dest.called_aet}@{dest.host}:{dest.port}"
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.called_aet, evt_handlers=handlers)
    except OSError as exc:  # the address could not be used (resolution is checked before, by name)
        why = f"cannot connect to {dest.host}:{dest.port} ({exc.strerror or exc})"
        return [InstanceResult(i.path, i.sop_instance_uid, False, why) for i in instances]
    if not assoc.is_established:
        rsp = seen.get("acse")
        if assoc.is_rejected and rsp is not None:
            why = f"association rejected by {where}: {rsp.result_str}, {rsp.source_str}: {rsp.reason_str}"
        elif "open" not in seen:
            why = f"cannot connect to {dest.host}:{dest.port} (refused, unreachable or timed out)"
        else:
            why = f"association with {where} aborted or not answered"
        return [InstanceResult(i.path, i.sop_instance_uid, False, why) for i in instances]

    results = []
    try:
        for n, inst in enumerate(instances, 1):
            results.append(_store_one(assoc, inst, where))
            if progress:
                progress(n, len(instances))
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def _store_one(assoc, inst: _Instance, where: str) -> InstanceResult:
    from pynetdicom.status import code_to_category

    if not assoc.is_established:
        return InstanceResult(inst.path, inst.sop_instance_uid, False, f"association with {where} ended early")
    try:
        status = assoc.send_c_store(inst.path)
    except ValueError as exc:  # no accepted presentation context for this SOP class / transfer syntax
        return InstanceResult(inst.path, inst.sop_instance_uid, False, f"not accepted by {where}: {exc}")
    if "Status" not in status:
        return InstanceResult(inst.path, inst.sop_instance_uid, False, f"no C-STORE response from {where} (aborted or timed out)")
    code = int(status.Status)
    category = code_to_category(code)
    if category == "Success":
        return InstanceResult(inst.path, inst.sop_instance_uid, True)
    detail = _status_text(code) + (f": {status.ErrorComment}" if "ErrorComment" in status else "")
    # a Warning (coercion, elements discarded) still means stored
    return InstanceResult(inst.path, inst.sop_instance_uid, category == "Warning", detail)


def _stow_rs(
    instances: list[_Instance], dest: Destination, *, timeout: float, progress: Callable[[int, int], None] | None,
) -> list[InstanceResult]:
    import requests

    url = dest.url.rstrip("/") + "/studies"
    results: list[InstanceResult] = []
    batch: list[_Instance] = []
    size = 0
    for inst in instances:
        n = inst.path.stat().st_size
        if batch and size + n > _STOW_BATCH_BYTES:
            results += _stow_batch(requests, url, batch, timeout)
            batch, size = [], 0
            if progress:
                progress(len(results), len(instances))
        batch.append(inst)
        size += n
    if batch:
        results += _stow_batch(requests, url, batch, timeout)
        if progress:
            progress(len(results), len(instances))
    return results


def _stow_batch(requests, url: str, batch: list[_Instance], timeout: float) -> list[InstanceResult]:
    """POST one multipart/related request; read the per-instance outcome from the STOW-RS response."""
    boundary = uuid.uuid4().hex
    body = bytearray()
    for inst in batch:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += inst.path.read_bytes()
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    try:
        response = requests.post(url, data=bytes(body), headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        why = f"cannot reach {url}: {type(exc).__name__}"
        return [InstanceResult(i.path, i.sop_instance_uid, False, why) for i in batch]
    return stow_results(batch, response.status_code, response.reason, response.content, url)


def stow_results(batch: Sequence, status: int, reason: str, content: bytes, url: str) -> list[InstanceResult]:
    """Per-instance results of a STOW-RS response (PS3.18 10.5.3): Referenced / Failed SOP Sequence.

    ``batch`` holds objects with ``path`` and ``sop_instance_uid``. An HTTP error without a readable
    response body fails every instance with the HTTP status; an instance the response does not name
    fails, unless the server answered 2xx with no body at all.
    """
    import json

    response = None
    if content:
        try:
            response = pydicom.Dataset.from_json(json.loads(content))
        except (ValueError, TypeError, KeyError):
            response = None
    http = f"HTTP {status} {reason}".strip()
    if response is None:
        ok = 200 <= status < 300 and not content
        detail = http if ok else f"{http} from {url}" + ("" if status >= 300 else " (unreadable response)")
        return [InstanceResult(i.path, i.sop_instance_uid, ok, detail) for i in batch]
    stored = {str(item.get("ReferencedSOPInstanceUID", "")): item for item in response.get("ReferencedSOPSequence", [])}
    failed = {str(item.get("ReferencedSOPInstanceUID", "")): item for item in response.get("FailedSOPSequence", [])}
    out = []
    for inst in batch:
        uid = inst.sop_instance_uid
        if uid in failed:
            code = failed[uid].get("FailureReason")
            out.append(InstanceResult(inst.path, uid, False, (_status_text(int(code)) if code is not None else http) + f" from {url}"))
        elif uid in stored and 200 <= status < 300:
            warn = stored[uid].get("WarningReason")
            out.append(InstanceResult(inst.path, uid, True, _status_text(int(warn)) if warn is not None else ""))
        else:
            out.append(InstanceResult(inst.path, uid, False, f"{http}: not stored according to the response of {url}"))
    return out
