"""DICOM in and out, one module per step of the data flow (DESIGN.md), each importing only earlier ones.

Reading: :mod:`.frames` (one 2D image, lenient header reading, decodability) -> :mod:`.discover` (finding
and choosing series, the series table) -> :mod:`.stack` (slice order, grid checks, affine) ->
:mod:`.pixels` (decoding, rescale) and :mod:`.headers` (source headers as DICOM JSON for meta) ->
:mod:`.reader` (the MONAI ``ImageReader``, :func:`~.reader.load_dicom_series`).

Writing: :mod:`.derived` (the derived-series plan: UIDs, rescale and window policy, references) ->
:mod:`.classic` and :mod:`.enhanced` (the two encodings; each imports :mod:`.derived`, never the other) ->
:mod:`.writer` (:class:`~.writer.DerivedSeriesWriter`, :func:`~.writer.write_derived_series`).
"""
