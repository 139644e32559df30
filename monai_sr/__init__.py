"""monai_sr: MRI super-resolution and denoising as a MONAI plugin."""

__version__ = "0.1.0"
