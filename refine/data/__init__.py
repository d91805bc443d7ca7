"""Datasets: 2-D Gaussian mixtures (:mod:`refine.data.toy2d`) and image datasets from a local root."""

from .images import IMAGE_DATASETS, ImageData, is_image_spec, load_images, parse_data_spec
from .toy2d import MIXTURES, Mixture, get_mixture, list_mixtures

__all__ = [
    "Mixture",
    "MIXTURES",
    "get_mixture",
    "list_mixtures",
    "IMAGE_DATASETS",
    "ImageData",
    "load_images",
    "parse_data_spec",
    "is_image_spec",
]
