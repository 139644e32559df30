"""The meta keys every layer shares, beside MONAI's own (:class:`monai.utils.MetaKeys`).

The readers put them in a volume's MetaTensor meta; transforms, inference, training, validation and the
writers read them (or add to the notes). Plain strings, so that a bundle config can name them too.
"""

from __future__ import annotations

__all__ = ["HEADERS_KEY", "FILES_KEY", "FRAMES_KEY", "NOTES_KEY", "INTENSITY_SCALE_KEY"]

#: Source DICOM headers, one DICOM JSON dict per slice in slice order (see :mod:`monai_sr.io.dicom.headers`).
HEADERS_KEY = "dicom_headers"
#: The source file of each slice, in slice order.
FILES_KEY = "dicom_files"
#: For a multi-frame source, the 1-based frame number of each slice (None for a single-frame file).
FRAMES_KEY = "dicom_frame_numbers"
#: What was tolerated or changed on the way (strings); ``enhance`` reports them.
NOTES_KEY = "monai_sr_notes"
#: What ``enhance`` divided the input's intensities by (its robust maximum) before the ``adapt`` hook and
#: the network saw them: a hook converts a value in the input's own units (e.g. a known noise sigma) with it.
INTENSITY_SCALE_KEY = "monai_sr_intensity_scale"
