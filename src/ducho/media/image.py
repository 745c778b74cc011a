"""Decoding of image files into 8-bit RGB images, with every failure turned into a `DecodeError`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_WANTED_SUFFIXES = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".ico",
)  # fmt: skip
_EXTENSIONS = Image.registered_extensions()

IMAGE_SUFFIXES: frozenset[str] = frozenset(s for s in _WANTED_SUFFIXES if s in _EXTENSIONS)
MAX_PIXELS: int = 89_478_485

# Only these formats are tried, whatever the file's suffix: no EPS (Ghostscript) or other exotic decoders.
_FORMATS: tuple[str, ...] = tuple(sorted({_EXTENSIONS[s] for s in IMAGE_SUFFIXES}))
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_WIDE_MAX = 65535  # Pillow keeps 16-bit samples (PNG, TIFF, PGM) in these modes
_WHITE = (255, 255, 255, 255)


class DecodeError(Exception):
    """A file that cannot give an image; str(error) is the reason written to failures.tsv."""


def decode_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decode a file into an 8-bit RGB image as the model should see it."""
    path = Path(path)
    _check_file(path)
    with _pillow_bomb_as_error():
        image = _read(path, max_pixels)
    return _to_rgb(image)


def _check_file(path: Path) -> None:
    """Raise `DecodeError` for a path that is missing, not a regular file, or empty."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if not path.is_file():
        raise DecodeError("not a regular file")
    if stat.st_size == 0:
        raise DecodeError("empty file")


@contextmanager
def _pillow_bomb_as_error() -> Iterator[None]:
    """Turn Pillow's own decompression-bomb warning and error into `DecodeError` (filters restored on exit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise DecodeError(f"image is larger than Pillow's limit: {exc}") from None


def _read(path: Path, max_pixels: int) -> Image.Image:
    """Open, size-check and fully decode the first frame, upright; the file is closed on return."""
    try:
        with Image.open(path, formats=_FORMATS) as image:
            _check_size(image.size, max_pixels)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # upright without copying an image that already is
            return image
    except (DecodeError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image") from None
    except EOFError:
        raise DecodeError("image file is truncated") from None
    except OSError as exc:
        raise DecodeError(exc.strerror or str(exc) or type(exc).__name__) from None
    except Exception as exc:  # Pillow's plugins raise many kinds on malformed data
        raise DecodeError(f"{type(exc).__name__}: {exc}") from None


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    """Raise `DecodeError` when the header's width * height exceeds `max_pixels`."""
    width, height = size
    if width * height > max_pixels:
        raise DecodeError(
            f"image is larger than the limit: {width}x{height} = {width * height} pixels > {max_pixels} pixels"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy: wide samples rescaled, alpha composited on white."""
    if image.mode in _WIDE_MODES:
        image = _wide_to_l(image)
    if image.has_transparency_data:
        return _on_white(image)
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise DecodeError(f"cannot convert mode {image.mode} to RGB: {exc}") from None


def _wide_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit I/F) samples to 8 bit over 0..65535, instead of Pillow's clipping convert."""
    values = np.asarray(image, dtype=np.float64)
    scaled = np.rint(np.clip(values, 0, _WIDE_MAX) * (255 / _WIDE_MAX))
    return Image.fromarray(scaled.astype(np.uint8))


def _on_white(image: Image.Image) -> Image.Image:
    """Composite an image with alpha (or a transparent colour) on a white background."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")
