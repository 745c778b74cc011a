"""Handcrafted image features (scikit-image, SciPy, NumPy): each "layer" is a named feature family.

`model_name` is a free label; `output_layers` picks families (all when empty); settings go in `params`:
`bins` (16, histogram bins), `colors` (5, k of the dominant colours), `max_side` (512). Every file is decoded
with `decode_image` (8-bit RGB) and, when its longer side exceeds `max_side`, shrunk (Pillow bilinear, aspect
kept) so that side is `max_side`: features are computed on that image, which bounds the time per record.
Grey levels are `skimage.color.rgb2gray`. All values are float32; lengths depend only on the params.

=================  ==========  ==============================================================================
family             dimension   computed with
=================  ==========  ==============================================================================
rgb_histogram      3*bins      `numpy.histogram` per R, G, B channel over [0, 256), each normalised to sum 1
hsv_histogram      3*bins      `skimage.color.rgb2hsv`, `numpy.histogram` per H, S, V over [0, 1], sum 1 each
color_moments      9           mean, std (`numpy`), skewness (`scipy.stats.skew`; 0 for a flat channel) of
                               R, G, B in [0, 1]: [mean R G B, std R G B, skew R G B]
dominant_colors    4*colors    `scipy.cluster.vq.kmeans2` (k-means++, seed 0) on at most 20000 pixels (a fixed
                               seeded sample), every pixel assigned by `scipy.cluster.vq.vq`; rows (R, G, B in
                               [0, 1], share) sorted by share; an image with <= k colours gives them exactly,
                               padded with zero rows
edges              1+bins      `skimage.feature.canny` (sigma 1) edge density, then the histogram (sum 1) of
                               gradient orientations (`skimage.filters.sobel_h`/`sobel_v`, mod pi) at edge pixels
hog                1764        `skimage.feature.hog` on the grey image resized (`skimage.transform.resize`,
                               anti-aliased) to 128x128: 9 orientations, 16x16 cells, 2x2 blocks, L2-Hys
                               (7*7 blocks * 2*2 cells * 9 = 1764)
lbp                10          `skimage.feature.local_binary_pattern` (P=8, R=1, uniform) on the 8-bit grey
                               image, histogram of its 10 codes, sum 1
glcm               6           `skimage.feature.graycomatrix` (32 grey levels, distance 1, angles 0, 45, 90,
                               135 degrees, symmetric, normed) and `graycoprops` contrast, dissimilarity,
                               homogeneity, energy, correlation, ASM, each averaged over the 4 angles
shape              5           width/height, foreground fraction (`skimage.filters.threshold_otsu`; background
                               is the Otsu class covering most of the border), log1p(number of foreground
                               regions, `skimage.measure.label`, 8-connected), eccentricity and solidity of the
                               largest region (`skimage.measure.regionprops`; 0 when there is none)
=================  ==========  ==============================================================================
"""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..config.schema import VisualModelSpec
from .handcrafted_common import (
    Family,
    HandcraftedExtractor,
    Param,
    choose_layers,
    compute_families,
    read_params,
    reject_unused,
    require,
)

PARAMS = {
    "bins": Param(16, 2, "histogram bins"),
    "colors": Param(5, 1, "number of dominant colours"),
    "max_side": Param(512, 16, "longer image side in pixels before features"),
}
HOG_SIDE = 128
HOG_OPTIONS = {"orientations": 9, "pixels_per_cell": (16, 16), "cells_per_block": (2, 2), "block_norm": "L2-Hys"}
HOG_LENGTH = 7 * 7 * 2 * 2 * 9
GLCM_LEVELS = 32
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
KMEANS_SAMPLE = 20000
SEED = 0


def load_image(path: Any, max_side: int = PARAMS["max_side"].default) -> np.ndarray:
    """(H, W, 3) uint8 RGB as the features see it: decoded, then shrunk so the longer side is <= max_side."""
    from PIL import Image

    from ..media.image import decode_image

    image = decode_image(path)
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


class Picture:
    """One decoded image and the grey versions several families share (computed once)."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    @cached_property
    def gray(self) -> np.ndarray:
        from skimage.color import rgb2gray

        return rgb2gray(self.rgb)

    @cached_property
    def gray_u8(self) -> np.ndarray:
        from skimage.util import img_as_ubyte

        return img_as_ubyte(self.gray)


def _histograms(channels: np.ndarray, bins: int, top: float) -> np.ndarray:
    """Normalised histograms of each channel of an (H, W, C) array over [0, top]."""
    pixels = channels.shape[0] * channels.shape[1]
    return np.concatenate([np.histogram(channels[..., c], bins=bins, range=(0, top))[0] / pixels
                           for c in range(channels.shape[-1])])


def rgb_histogram(picture: Picture, params: dict[str, int]) -> np.ndarray:
    return _histograms(picture.rgb, params["bins"], 256)


def hsv_histogram(picture: Picture, params: dict[str, int]) -> np.ndarray:
    from skimage.color import rgb2hsv

    return _histograms(rgb2hsv(picture.rgb), params["bins"], 1.0)


def color_moments(picture: Picture, params: dict[str, int]) -> np.ndarray:
    from scipy.stats import skew

    pixels = picture.rgb.reshape(-1, 3) / 255.0
    std = pixels.std(axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        skewness = np.where(std > 1e-12, skew(pixels, axis=0), 0.0)
    return np.concatenate([pixels.mean(axis=0), std, np.nan_to_num(skewness)])


def _few_colors(pixels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(colours, counts) when the image has at most k distinct colours, else None."""
    packed = (pixels[:, 0].astype(np.int32) << 16) | (pixels[:, 1].astype(np.int32) << 8) | pixels[:, 2]
    codes, counts = np.unique(packed, return_counts=True)
    if len(codes) > k:
        return None
    return np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1).astype(np.float64), counts


def _kmeans_colors(pixels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means centroids on a seeded sample of the pixels, and how many pixels each one gets."""
    from scipy.cluster.vq import kmeans2, vq

    rng = np.random.default_rng(SEED)
    data = pixels.astype(np.float64)
    sample = data[rng.choice(len(data), KMEANS_SAMPLE, replace=False)] if len(data) > KMEANS_SAMPLE else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "One of the clusters is empty": such a centroid gets no pixel below
        centroids, _ = kmeans2(sample, k, minit="++", seed=rng)
    labels, _ = vq(data, centroids)
    return centroids, np.bincount(labels, minlength=k)


def dominant_colors(picture: Picture, params: dict[str, int]) -> np.ndarray:
    k = params["colors"]
    pixels = picture.rgb.reshape(-1, 3)
    colors, counts = _few_colors(pixels, k) or _kmeans_colors(pixels, k)
    order = sorted(range(len(colors)), key=lambda i: (-counts[i], *colors[i]))
    rows = np.zeros((k, 4))
    for row, i in enumerate(order):
        rows[row] = (*np.clip(colors[i], 0, 255) / 255.0, counts[i] / len(pixels))
    return rows.ravel()


def edges(picture: Picture, params: dict[str, int]) -> np.ndarray:
    from skimage.feature import canny
    from skimage.filters import sobel_h, sobel_v

    found = canny(picture.gray, sigma=1.0)
    histogram = np.zeros(params["bins"])
    if found.any():
        angles = np.mod(np.arctan2(sobel_h(picture.gray)[found], sobel_v(picture.gray)[found]), np.pi)
        histogram = np.histogram(angles, bins=params["bins"], range=(0, np.pi))[0] / found.sum()
    return np.concatenate([[found.mean()], histogram])


def hog(picture: Picture, params: dict[str, int]) -> np.ndarray:
    from skimage.feature import hog as skimage_hog
    from skimage.transform import resize

    small = resize(picture.gray, (HOG_SIDE, HOG_SIDE), anti_aliasing=True)
    return skimage_hog(small, feature_vector=True, **HOG_OPTIONS)


def lbp(picture: Picture, params: dict[str, int]) -> np.ndarray:
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(picture.gray_u8, P=8, R=1, method="uniform")
    return np.histogram(codes, bins=10, range=(0, 10))[0] / codes.size


def glcm(picture: Picture, params: dict[str, int]) -> np.ndarray:
    from skimage.feature import graycomatrix, graycoprops

    levels = (picture.gray_u8 // (256 // GLCM_LEVELS)).astype(np.uint8)
    matrix = graycomatrix(levels, [1], list(GLCM_ANGLES), levels=GLCM_LEVELS, symmetric=True, normed=True)
    return np.array([graycoprops(matrix, prop).mean() for prop in GLCM_PROPS])


def foreground(gray: np.ndarray) -> np.ndarray:
    """The Otsu class that is not the background; the background is the class covering most of the border."""
    from skimage.filters import threshold_otsu

    above = gray > threshold_otsu(gray)
    border = np.concatenate([above[0], above[-1], above[:, 0], above[:, -1]])
    return ~above if border.mean() > 0.5 else above


def shape(picture: Picture, params: dict[str, int]) -> np.ndarray:
    from skimage.measure import label, regionprops

    height, width = picture.gray.shape
    mask = foreground(picture.gray)
    regions = label(mask, connectivity=2)
    count = int(regions.max())
    eccentricity = solidity = 0.0
    if count:
        largest = max(regionprops(regions), key=lambda region: region.area)
        eccentricity, solidity = float(largest.eccentricity), float(largest.solidity)
    return np.array([width / height, mask.mean(), np.log1p(count), eccentricity, solidity])


FAMILIES: dict[str, Family] = {
    "rgb_histogram": Family(lambda p: 3 * p["bins"], rgb_histogram, "numpy.histogram"),
    "hsv_histogram": Family(lambda p: 3 * p["bins"], hsv_histogram, "skimage.color.rgb2hsv + numpy.histogram"),
    "color_moments": Family(lambda p: 9, color_moments, "numpy mean/std + scipy.stats.skew"),
    "dominant_colors": Family(lambda p: 4 * p["colors"], dominant_colors, "scipy.cluster.vq.kmeans2 + vq"),
    "edges": Family(lambda p: 1 + p["bins"], edges, "skimage.feature.canny + skimage.filters.sobel_h/sobel_v"),
    "hog": Family(lambda p: HOG_LENGTH, hog, "skimage.feature.hog on 128x128 grey"),
    "lbp": Family(lambda p: 10, lbp, "skimage.feature.local_binary_pattern(P=8, R=1, uniform)"),
    "glcm": Family(lambda p: len(GLCM_PROPS), glcm, "skimage.feature.graycomatrix + graycoprops"),
    "shape": Family(lambda p: 5, shape, "skimage.filters.threshold_otsu + skimage.measure.label/regionprops"),
}


def image_features(rgb: np.ndarray, names: tuple[str, ...] | list[str], params: dict[str, int]) -> dict[str, Any]:
    """The requested families of an already decoded (H, W, 3) uint8 image."""
    return compute_families(Picture(rgb), names, FAMILIES, params)


@dataclass(frozen=True)
class ImageFamiliesLoader:
    """Runs in worker processes: decodes one file and computes every requested family."""

    families: tuple[str, ...]
    params: dict[str, int] = field(default_factory=dict)

    def __call__(self, path: Any) -> dict[str, np.ndarray]:
        full = {**{k: p.default for k, p in PARAMS.items()}, **self.params}
        return image_features(load_image(path, full["max_side"]), self.families, full)


UNUSED = {"weights": None, "reshape": None, "preprocessing": None, "mean": None, "std": None, "pooling": None,
          "image_processor_name": None}


def _checked(spec: VisualModelSpec) -> tuple[dict[str, int], str]:
    params = read_params(spec.params, PARAMS, "handcrafted image")
    reject_unused(spec, UNUSED)
    layers = choose_layers(spec.output_layers, FAMILIES)
    version = require("skimage", "scikit-image")
    return params, f"handcrafted image features (scikit-image {version}): {', '.join(x.name for x in layers)}"


class HandcraftedImage(HandcraftedExtractor):
    """Handcrafted image features; see the module docstring for the families."""

    families = FAMILIES

    @staticmethod
    def check(spec: VisualModelSpec) -> str:
        return _checked(spec)[1]

    def __init__(self, spec: VisualModelSpec, device: str) -> None:
        params, _ = _checked(spec)
        super().__init__(spec, params)
        self.libraries = _versions()
        self.loader = ImageFamiliesLoader(tuple(layer.name for layer in self.layers), params)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_facts("image"),
                "preprocessing": {"decode": "decode_image (8-bit RGB, alpha on white)",
                                  "resize": f"longer side shrunk to <= {self.params['max_side']} px (Pillow "
                                            "bilinear, aspect kept)", **self.params}}


def _versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("scikit-image", "scipy", "numpy", "pillow")}
