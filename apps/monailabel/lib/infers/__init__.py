"""Infer tasks of the monai_sr MONAI Label app."""
