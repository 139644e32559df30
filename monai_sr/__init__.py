"""monai_sr: MRI super-resolution and denoising as a MONAI plugin.

``monai_sr.enhance`` and ``monai_sr.load_bundle`` (:mod:`monai_sr.api`) are the short way in from a
script; ``monai_sr.transforms.superresolve.SuperResolved`` the way in from a MONAI pipeline.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # The API pulls in torch and MONAI: imported on first use, so `import monai_sr` (and the CLI's
    # start-up, which reads __version__) stays light.
    if name in ("enhance", "enhance_image", "load_bundle", "Bundle"):
        from monai_sr import api

        return getattr(api, name)
    raise AttributeError(f"module 'monai_sr' has no attribute {name!r}")
