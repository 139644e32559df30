"""The monai_sr MONAI Label app: the three bundles as infer tasks of type ``others``.

Start it from the environment ``make monailabel`` makes (see README.md beside this file)::

    .venv-monailabel/bin/python -m monailabel.main start_server --app apps/monailabel --studies STUDIES \\
        --host 127.0.0.1 --port 8000

``STUDIES`` is a folder of NIfTI volumes (MONAI Label's local datastore) or a DICOMweb service root such as
``http://127.0.0.1:8042/dicom-web`` (MONAI Label's DICOMweb datastore; its MR series are listed). The tasks
run ``monai-sr enhance`` in monai_sr's own environment (``$MONAI_SR_PYTHON``, see
:func:`lib.infers.enhance.monai_sr_command`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, NoReturn

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask

from lib.infers.enhance import BUNDLES, EnhanceError, EnhanceTask, monai_sr_command

logger = logging.getLogger(__name__)


def _stop_server(message: str) -> NoReturn:
    """Say ``message`` in one line and end the server process with exit code 2.

    MONAI Label builds the app inside the ASGI lifespan of its uvicorn server: an exception raised here
    reaches the user as a traceback of some 100 lines through starlette and fastapi, and a SystemExit
    would be taken by uvicorn for a missing lifespan protocol (the server would go on without the app).
    A setup error that one environment variable fixes is said once, before the server listens."""
    logger.error(message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(2)


class MonaiSRApp(MONAILabelApp):
    """MONAI Label app serving :data:`lib.infers.enhance.BUNDLES`, one :class:`EnhanceTask` each.

    ``conf`` (``--conf KEY VALUE`` of ``monailabel start_server``): ``infer_timeout`` seconds per
    ``monai-sr enhance`` run (default 3600); ``dicomweb_search_filter``, the QIDO-RS filter of the
    series a DICOMweb datastore lists (JSON, default ``{"Modality": "MR"}``); ``send_to``, where the
    ``derived_dicom`` option sends the derived series (``dicom://AET@HOST:PORT`` or a DICOMweb root;
    default the DICOMweb datastore).

    For a DICOMweb datastore it reads the DICOM series as they are (MONAI Label's conversion to NIfTI
    is switched off: the derived series needs the source headers, and monai_sr reads DICOM itself) and
    downloads no DICOM SEG tools (these tasks write no segmentation).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        try:
            self.command = monai_sr_command(app_dir)
        except EnhanceError as exc:
            _stop_server(f"monai_sr app ({app_dir}): {exc}")
        self.timeout = float((conf or {}).get("infer_timeout", 3600))
        settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI = False
        # start_server has exported every setting to the environment by now, defaults included (Modality CT)
        settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER = json.loads(conf.get("dicomweb_search_filter", '{"Modality": "MR"}'))
        logger.info("monai_sr runs as: %s", " ".join(self.command))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="monai_sr",
                         description="MRI super-resolution and denoising (monai_sr bundles)", version="1")

    def init_infers(self) -> dict[str, InferTask]:
        dicomweb = self.studies if self.studies.startswith(("http://", "https://")) else None
        send_to = self.conf.get("send_to") or dicomweb
        return {
            name: EnhanceTask(name, command=self.command, send_to=send_to, description=text, timeout=self.timeout)
            for name, text in BUNDLES.items()
        }

    def _download_dcmqi_tools(self) -> None:
        """MONAI Label fetches dcmqi from GitHub for DICOM SEG output; these tasks write none."""

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's ``infer``, with a bad request answered by an HTTP error that says what is wrong
        (404: unknown model or image; 422: the image was refused or the run failed, with monai-sr's
        one-line error) instead of a bare 500; the server keeps serving either way."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"no model {model!r}; available: {', '.join(sorted(self._infers))}")
        image = request.get("image")
        if isinstance(image, str) and not os.path.exists(image):
            store = datastore or self.datastore()
            try:
                uri = store.get_image_uri(image)
            except Exception as exc:  # MONAI Label's datastores raise anything from IndexError to HTTPError
                raise HTTPException(404, f"image {image!r} not found in the datastore ({type(exc).__name__}: {exc})") from None
            if not uri or not os.path.exists(uri):
                raise HTTPException(404, f"image {image!r} not found in the datastore")
        try:
            return super().infer(request, datastore)
        except EnhanceError as exc:
            raise HTTPException(422, f"{model}: {exc}") from None
        except MONAILabelException as exc:
            raise HTTPException(400, f"{model}: {exc.msg}") from None
