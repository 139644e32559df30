"""A series' source headers as DICOM JSON dicts, to travel in meta to the derived-series writer.

Meta ``"dicom_headers"`` (:data:`monai_sr.meta.HEADERS_KEY`) holds one dict per slice in slice order,
without pixel data; for a multi-frame object the top-level attributes plus the frame's geometry and
rescale, flattened. Header dicts of different slices share their identical elements: treat them as
read-only. :func:`source_headers` turns them back into Datasets.
"""

from __future__ import annotations

import logging

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement

from monai_sr import geometry
from monai_sr.io.dicom.frames import Frame
from monai_sr.io.dicom.stack import DicomSeries
from monai_sr.io.library_notes import from_file
from monai_sr.meta import FILES_KEY, HEADERS_KEY

__all__ = ["HeaderJSON", "series_headers", "source_headers"]

logger = logging.getLogger(__name__)


class HeaderJSON:
    """Headers as DICOM JSON model dicts (PS3.18 F), to travel in meta, converting each distinct element once.

    JSON rather than a Dataset: MONAI's transforms copy, collate and byte-swap meta, which they can do
    with plain dicts and lists but not with pydicom objects. ``pydicom.Dataset.from_json`` restores it.
    Elements whose raw bytes equal ones already converted (most of a series' header) share that result.
    """

    _SKIP_GROUPS = (0x0000, 0x5200, 0x7FE0)  # command set, functional groups (flattened), pixel data

    def __init__(self) -> None:
        self._cache: dict[tuple, dict] = {}

    @staticmethod
    def _bulk(_elem) -> str:
        return ""

    def element(self, elem) -> dict:
        return elem.to_json_dict(bulk_data_element_handler=self._bulk, bulk_data_threshold=1 << 20)

    def dataset(self, ds: pydicom.Dataset) -> dict:
        out = {}
        charset = ds.get_item(0x00080005)
        # raw bytes, or the converted value (a MultiValue when several): only its text goes in the keys
        charset = None if charset is None else str(charset.value)
        for tag in ds.keys():
            if tag.group in self._SKIP_GROUPS:
                continue
            raw = ds.get_item(tag, keep_deferred=True)
            key = None
            if isinstance(raw, RawDataElement):
                if isinstance(raw.value, bytes):
                    key = (int(tag), raw.VR, raw.value, charset)
            elif raw.VR != "SQ" and raw.VR not in _BINARY_VRS:  # converted already (read by the checks)
                key = (int(tag), raw.VR, str(raw.value), charset)
            if key is not None:
                hit = self._cache.get(key)
                if hit is not None:
                    out[f"{tag:08X}"] = hit
                    continue
            try:
                value = self.element(ds[tag])
            except Exception as exc:  # an unreadable element must not make the image unreadable
                logger.info("header element %s not kept in meta: %s", tag, exc)
                continue
            if key is not None:
                self._cache[key] = value
            out[f"{tag:08X}"] = value
        return out

    def frame(self, frame: Frame, top: dict) -> dict:
        """Flattened header of one frame of a multi-frame object: top level + the frame's functional groups."""
        out = dict(top)
        for sequence, keywords in _FLATTENED:
            for kw in keywords:
                for item in frame.group_items(sequence):
                    if kw in item:
                        elem = item[kw]
                        try:
                            out[f"{elem.tag:08X}"] = self.element(elem)
                        except Exception as exc:  # as in dataset(): unreadable, not kept
                            logger.info("header element %s of %s not kept in meta: %s", elem.tag, frame.label, exc)
                        break
        for tag, sequence, keyword in (("00180081", "MREchoSequence", "EffectiveEchoTime"),
                                       ("00180080", "MRTimingAndRelatedParametersSequence", "RepetitionTime")):
            value = frame.attr(sequence, keyword)
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if np.isfinite(number):
                out[tag] = {"vr": "DS", "Value": [round(number, 6)]}
            elif value is not None:
                logger.info("%s of %s not kept in meta: %r", keyword, frame.label, value)
        out["00280008"] = {"vr": "IS", "Value": [1]}
        # The classic MR image's Scanning Sequence / Sequence Variant, from the Enhanced MR attributes.
        pulse = str(frame.dataset.get("EchoPulseSequence", "") or "")
        scanning = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(pulse, ["RM"])
        out.setdefault("00180020", {"vr": "CS", "Value": scanning})
        out.setdefault("00180021", {"vr": "CS", "Value": ["NONE"]})
        return out


_BINARY_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")


_FLATTENED = (
    ("PlanePositionSequence", ("ImagePositionPatient",)),
    ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
    ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")),
    ("PixelValueTransformationSequence", ("RescaleIntercept", "RescaleSlope", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth")),
)


def series_headers(series: DicomSeries) -> list[dict]:
    conv = HeaderJSON()
    tops: dict[int, dict] = {}
    headers = []
    for f in series.frames:
        top = tops.get(id(f.dataset))
        if top is None:
            top = tops[id(f.dataset)] = conv.dataset(f.dataset)
        headers.append(top if f.index is None else conv.frame(f, top))
    if series.grid is None:
        return headers
    # Resampled: each grid slice gets its nearest source slice's header at the grid position.
    f0 = series.frames[0]
    normal = geometry.slice_normal([float(v) for v in f0.iop()])
    ipp0 = np.asarray([float(v) for v in f0.ipp()])
    out = []
    for t in series.grid:
        h = dict(headers[int(np.argmin(np.abs(series.positions - t)))])
        ipp = ipp0 + normal * (t - series.positions[0])
        h["00200032"] = {"vr": "DS", "Value": [round(float(v), 5) for v in ipp]}
        h.pop("00201041", None)  # SliceLocation of the source slice no longer applies
        out.append(h)
    return out


def source_headers(meta: dict) -> list[pydicom.Dataset]:
    """The source slice headers (Datasets, slice order) from a volume's meta; [] when it was not DICOM.
    What pydicom warns about a header's values names its source file (meta ``"dicom_files"``) in the notes."""
    headers = meta.get(HEADERS_KEY, [])
    files = meta.get(FILES_KEY) or []
    if len(files) != len(headers):  # resampled: the headers are of grid slices, not of the files
        return [pydicom.Dataset.from_json(h) for h in headers]
    out = []
    for h, f in zip(headers, files):
        with from_file(f):
            out.append(pydicom.Dataset.from_json(h))
    return out
