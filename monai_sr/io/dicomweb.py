"""Cases from a PACS over DICOMweb: QIDO-RS finds the series, WADO-RS fetches each one into a folder.

A query is a URL, what ``monai-sr enhance`` takes in place of an input folder::

    dicomweb+http://HOST:PORT/SERVICE_ROOT?KEY=VALUE&KEY=VALUE...

``http(s)://HOST:PORT/SERVICE_ROOT`` is the DICOMweb service root (Orthanc: ``/dicom-web``), the same
URL ``--send`` takes for STOW-RS; the ``dicomweb+`` prefix says "search this server" rather than "a
path". The keys are QIDO-RS series-level matching keys (PS3.18 10.6.1), passed to the server as they are:
``StudyInstanceUID``, ``SeriesInstanceUID``, ``PatientID``, ``StudyDate=20240101-20241231``,
``SeriesDescription=*T1*``, ``Modality``. ``Modality`` defaults to ``MR`` (the only modality a
cohort runs); several ``StudyInstanceUID`` / ``SeriesInstanceUID`` values (the key repeated, or the
values separated by commas) are searched one by one, so no server support for UID lists is needed.
A cohort leaves out the series this package derived (Manufacturer ``monai_sr``, :attr:`SeriesRef.ours`),
so that outputs sent back into the same studies are not enhanced again by the next run.

Each series found is one case, named by its Series Instance UID. Its identity for a resume
(:attr:`SeriesRef.digest`) is a sha256 over the study and series UIDs and the sorted SOP Instance UIDs
the server lists (one QIDO-RS instance query per series): an instance added to or removed from the
series on the PACS makes it a new input. :func:`fetch_series` retrieves the series (WADO-RS, the
instances as stored: ``transfer-syntax=*``), writes each instance as ``<SOPInstanceUID>.dcm`` and
checks that every listed instance arrived.

HTTP goes through ``requests``; errors become :class:`~monai_sr.errors.InputError` naming the URL and
the cause on one line. A retrieved series is held in memory once (the multipart body) before its files
are written.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from monai_sr.errors import InputError

__all__ = ["PREFIX", "DicomwebQuery", "SeriesRef", "is_query", "parse_query", "search_series", "fetch_series"]

PREFIX = "dicomweb+"
_DICOM_JSON = "application/dicom+json"
_UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID")
_PAGE = 500  # QIDO-RS results asked for per request (limit / offset)
# DICOM JSON tags (PS3.18 F.2): the attributes read from QIDO-RS answers
_STUDY, _SERIES, _SOP, _MODALITY, _DESCRIPTION = "0020000D", "0020000E", "00080018", "00080060", "0008103E"
_MANUFACTURER = "00080070"


@dataclass(frozen=True)
class DicomwebQuery:
    """A parsed query: ``root`` the service root URL (``http(s)://...``, no trailing slash), ``params``
    the series-level matching keys in order (``Modality`` added when absent)."""

    url: str
    root: str
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SeriesRef:
    """One series a query found: its UIDs, modality, description, manufacturer (``monai_sr`` for a series
    this package derived: :attr:`ours`) and the SOP Instance UIDs listed."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    instance_uids: tuple[str, ...]
    manufacturer: str = ""

    @property
    def ours(self) -> bool:
        """A derived series this package wrote (Manufacturer ``monai_sr``), e.g. sent back by an earlier run."""
        from monai_sr.io.dicom.derived import SOFTWARE_NAME

        return self.manufacturer == SOFTWARE_NAME

    @property
    def digest(self) -> str:
        """``qido:`` + sha256 over the study UID, the series UID and the sorted SOP Instance UIDs."""
        h = hashlib.sha256(f"{self.study_uid}\0{self.series_uid}\n".encode())
        for uid in sorted(self.instance_uids):
            h.update(f"{uid}\n".encode())
        return "qido:" + h.hexdigest()


def is_query(text: str | os.PathLike) -> bool:
    """True for a ``dicomweb+http://`` or ``dicomweb+https://`` URL (a string, never a path object)."""
    return isinstance(text, str) and text.lower().startswith((PREFIX + "http://", PREFIX + "https://"))


def parse_query(text: str) -> DicomwebQuery:
    """Parse ``dicomweb+http(s)://HOST[:PORT]/ROOT?KEY=VALUE...``; :class:`InputError` when malformed
    (no host, a key given without a value, a fragment)."""
    usage = "expected dicomweb+http(s)://HOST:PORT/SERVICE_ROOT?KEY=VALUE&... (e.g. ?StudyInstanceUID=1.2.3)"
    if not is_query(text):
        raise InputError(f"not a DICOMweb query; {usage}", path=text)
    try:
        parts = urlsplit(text[len(PREFIX):])
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InputError(f"bad DICOMweb query ({exc}); {usage}", path=text) from None
    if not parts.hostname or parts.fragment:
        raise InputError(f"bad DICOMweb query (no host, or a #fragment); {usage}", path=text)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InputError(f"bad DICOMweb query string ({exc}); {usage}", path=text) from None
    for key, value in pairs:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*|[0-9A-Fa-f]{8}", key) or value == "":
            raise InputError(f"bad query key {key}={value!r}: a DICOM keyword (or tag) and a value; {usage}",
                             path=text)
    if not any(key == "Modality" for key, _ in pairs):
        pairs.append(("Modality", "MR"))
    root = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return DicomwebQuery(url=text, root=root, params=tuple(pairs))


def _value(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _get(url: str, *, params: Iterable[tuple[str, str]] = (), accept: str, timeout: float):
    """GET with ``Accept``; the response, or :class:`InputError` naming the URL and the cause."""
    import requests

    params = list(params)
    shown = url + (f"?{urlencode(params)}" if params else "")
    try:
        response = requests.get(url, params=params, headers={"Accept": accept}, timeout=timeout)
    except requests.RequestException as exc:
        raise InputError(f"cannot reach the DICOMweb server ({type(exc).__name__})", path=shown) from exc
    if response.status_code == 204:  # QIDO-RS: no match
        return response
    if not 200 <= response.status_code < 300:
        raise InputError(f"HTTP {response.status_code} {response.reason}".strip(), path=shown)
    return response


def _json_list(response, url: str) -> list[dict]:
    if response.status_code == 204 or not response.content:
        return []
    try:
        items = response.json()
    except ValueError:
        raise InputError("the QIDO-RS answer is not DICOM JSON", path=url) from None
    if not isinstance(items, list):
        raise InputError("the QIDO-RS answer is not a list of DICOM JSON objects", path=url)
    return items


def _search(url: str, params: list[tuple[str, str]], timeout: float) -> list[dict]:
    """Every result of one QIDO-RS search, page by page (``limit`` / ``offset``), until a page brings
    nothing new (a server that ignores ``limit`` answers everything at once)."""
    found: list[dict] = []
    seen: set[str] = set()
    offset = 0
    while True:
        page = _json_list(_get(url, params=[*params, ("limit", str(_PAGE)), ("offset", str(offset))],
                               accept=_DICOM_JSON, timeout=timeout), url)
        new = [item for item in page if _value(item, _SERIES) + _value(item, _SOP) not in seen]
        for item in new:
            seen.add(_value(item, _SERIES) + _value(item, _SOP))
        found += new
        if len(page) < _PAGE or not new:
            return found
        offset += len(page)


def search_series(query: DicomwebQuery | str, *, timeout: float = 30.0) -> list[SeriesRef]:
    """The series matching ``query`` (QIDO-RS ``/series``), each with its instances listed (QIDO-RS
    ``/studies/{study}/series/{series}/instances``), sorted by Series Instance UID, each once.

    Raises :class:`InputError` when the server cannot be reached or answers an error; an empty list
    when nothing matches.
    """
    query = parse_query(query) if isinstance(query, str) else query
    fixed = [(k, v) for k, v in query.params if k not in _UID_KEYS]
    lists = [[u for k, v in query.params if k == key for u in v.split(",") if u] or [None] for key in _UID_KEYS]
    series: dict[str, dict] = {}
    for study in lists[0]:
        for uid in lists[1]:
            keys = fixed + [(k, v) for k, v in zip(_UID_KEYS, (study, uid)) if v is not None]
            for item in _search(query.root + "/series", [*keys, ("includefield", _MANUFACTURER)], timeout):
                if _value(item, _SERIES):
                    series.setdefault(_value(item, _SERIES), item)
    refs = []
    for series_uid in sorted(series):
        item = series[series_uid]
        study_uid = _value(item, _STUDY)
        if not study_uid:
            raise InputError(f"the QIDO-RS answer for series {series_uid} has no StudyInstanceUID",
                             path=query.root + "/series")
        url = f"{query.root}/studies/{study_uid}/series/{series_uid}/instances"
        instances = tuple(sorted({_value(i, _SOP) for i in _search(url, [], timeout)} - {""}))
        refs.append(SeriesRef(study_uid, series_uid, _value(item, _MODALITY), _value(item, _DESCRIPTION), instances,
                              _value(item, _MANUFACTURER)))
    return refs


def _multipart_parts(body: bytes, content_type: str, url: str) -> list[bytes]:
    """The bodies of the parts of a ``multipart/related`` answer (RFC 2046), in order."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/") or m is None:
        raise InputError(f"the WADO-RS answer is not multipart (Content-Type {content_type!r})", path=url)
    delimiter = b"\r\n--" + m.group(1).encode("ascii")
    chunks = (b"\r\n" + body).split(delimiter)
    parts = []
    for chunk in chunks[1:]:  # chunks[0]: the preamble
        if chunk.startswith(b"--"):  # the close delimiter: the epilogue follows
            break
        head_end = chunk.find(b"\r\n\r\n")
        if head_end < 0:
            raise InputError("a part of the WADO-RS answer has no header end", path=url)
        parts.append(chunk[head_end + 4 :])
    return parts


def fetch_series(ref: SeriesRef, root: str, folder: str | os.PathLike, *, timeout: float = 30.0) -> list[Path]:
    """Retrieve the series ``ref`` from the service root ``root`` (WADO-RS, the instances as stored) into
    the existing, empty ``folder`` as ``<SOPInstanceUID>.dcm`` files; the files written, sorted.

    Raises :class:`InputError` naming the URL when the server fails, a part is not a DICOM file, or an
    instance QIDO-RS listed did not arrive.
    """
    import pydicom

    url = f"{root.rstrip('/')}/studies/{ref.study_uid}/series/{ref.series_uid}"
    response = _get(url, accept='multipart/related; type="application/dicom"; transfer-syntax=*', timeout=timeout)
    if response.status_code in (400, 406):  # a server that cannot send the stored syntax: its default one
        response = _get(url, accept='multipart/related; type="application/dicom"', timeout=timeout)
    folder = Path(folder)
    written: dict[str, Path] = {}
    for n, part in enumerate(_multipart_parts(response.content, response.headers.get("Content-Type", ""), url)):
        if part[128:132] != b"DICM":
            raise InputError(f"part {n + 1} of the WADO-RS answer is not a DICOM file (no DICM marker)", path=url)
        try:
            uid = str(pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID)
        except Exception as exc:  # noqa: BLE001 - any unreadable part is refused by its number
            raise InputError(f"part {n + 1} of the WADO-RS answer cannot be read ({type(exc).__name__}: {exc})",
                             path=url) from exc
        if not re.fullmatch(r"[0-9.]{1,64}", uid):
            raise InputError(f"part {n + 1} has an invalid SOP Instance UID {uid!r}", path=url)
        path = written[uid] = folder / f"{uid}.dcm"
        path.write_bytes(part)
    missing = set(ref.instance_uids) - set(written)
    if missing:
        raise InputError(f"WADO-RS returned {len(ref.instance_uids) - len(missing)} of the {len(ref.instance_uids)} "
                         f"instances QIDO-RS lists (missing e.g. {sorted(missing)[0]})", path=url)
    return sorted(written.values())
