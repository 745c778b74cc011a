"""`ducho.media.image.decode_image`: every case is an image built with Pillow in `tmp_path` at test time."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ducho.media.image import IMAGE_SUFFIXES, MAX_PIXELS, DecodeError, decode_image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 3) -> bool:
    """True when every channel is within `tolerance` of the expected value."""
    return len(actual) == len(expected) and all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def saved(image: Image.Image, path: Path, **params: object) -> Path:
    """Save `image` to `path` (format from the suffix) and return the path."""
    image.save(path, **params)
    return path


def noise_rgb(size: int = 64) -> Image.Image:
    """A deterministic RGB noise image (compresses badly, so half a file is missing real data)."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def decode_error(path: Path, **kwargs: object) -> str:
    """Return the message of the `DecodeError` that decoding `path` must raise."""
    with pytest.raises(DecodeError) as info:
        decode_image(path, **kwargs)
    return str(info.value)


# --- suffixes ---------------------------------------------------------------------------------------------------


def test_constants() -> None:
    assert MAX_PIXELS == 89_478_485
    assert {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"} <= IMAGE_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)
    assert IMAGE_SUFFIXES <= set(Image.registered_extensions())


@pytest.mark.parametrize("suffix", sorted(IMAGE_SUFFIXES))
def test_every_suffix_round_trips(tmp_path: Path, suffix: str) -> None:
    path = saved(Image.new("RGB", (16, 16), WHITE), tmp_path / f"white{suffix}")
    image = decode_image(path)
    assert image.mode == "RGB"
    assert image.size == (16, 16)
    assert close_to(image.getpixel((8, 8)), WHITE)


# --- modes ------------------------------------------------------------------------------------------------------


def test_plain_rgb_jpeg_is_exactly_pillows_rgb(tmp_path: Path) -> None:
    path = saved(noise_rgb(), tmp_path / "noise.jpg", quality=90)
    image = decode_image(path)
    with Image.open(path) as reference:
        expected = reference.convert("RGB")
    assert (image.mode, image.size) == (expected.mode, expected.size)
    assert image.tobytes() == expected.tobytes()


def test_grayscale(tmp_path: Path) -> None:
    path = saved(Image.new("L", (4, 4), 77), tmp_path / "gray.png")
    image = decode_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (77, 77, 77)


def test_one_bit(tmp_path: Path) -> None:
    bits = Image.new("1", (4, 4), 0)
    bits.putpixel((0, 0), 1)
    image = decode_image(saved(bits, tmp_path / "bits.png"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((3, 3)) == (0, 0, 0)


def palette_image() -> Image.Image:
    """A 4x4 palette image: index 0 is red, index 1 is blue; the left column is index 1."""
    image = Image.new("P", (4, 4), 0)
    image.putpalette([*RED, *BLUE])
    for y in range(4):
        image.putpixel((0, y), 1)
    return image


def test_palette_without_transparency(tmp_path: Path) -> None:
    image = decode_image(saved(palette_image(), tmp_path / "palette.png"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == BLUE
    assert image.getpixel((3, 3)) == RED


def test_palette_with_transparency_is_white(tmp_path: Path) -> None:
    path = saved(palette_image(), tmp_path / "palette_t.png", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") == 0
    image = decode_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == WHITE
    assert image.getpixel((0, 0)) == BLUE


def test_gray_alpha_on_white(tmp_path: Path) -> None:
    gray = Image.new("LA", (4, 4), (0, 0))
    gray.putpixel((0, 0), (0, 255))
    image = decode_image(saved(gray, tmp_path / "la.png"))
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == WHITE
    assert image.getpixel((0, 0)) == (0, 0, 0)


def test_rgba_transparent_is_white_and_half_red_is_pink(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (*RED, 128))
    rgba.putpixel((1, 0), (*BLUE, 255))
    image = decode_image(saved(rgba, tmp_path / "rgba.png"))
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == WHITE
    assert close_to(image.getpixel((0, 0)), (255, 128, 128), tolerance=2)
    assert image.getpixel((1, 0)) == BLUE


def test_cmyk_jpeg_colours(tmp_path: Path) -> None:
    path = saved(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), tmp_path / "cyan.jpg")
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    image = decode_image(path)
    assert image.mode == "RGB"
    assert close_to(image.getpixel((4, 4)), (0, 255, 255))


# --- more than 8 bits -------------------------------------------------------------------------------------------


def test_sixteen_bit_ramp_stays_a_ramp(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    path = saved(Image.fromarray(np.tile(ramp, (2, 1))), tmp_path / "ramp16.png")
    with Image.open(path) as check:
        assert check.mode == "I;16"
    image = decode_image(path)
    assert image.mode == "RGB"
    row = [image.getpixel((x, 0))[0] for x in range(256)]
    assert row == list(range(256))
    assert all(len(set(image.getpixel((x, 1)))) == 1 for x in range(256))


@pytest.mark.parametrize(
    ("name", "dtype", "mode"),
    [("wide.png", np.uint16, "I;16"), ("wide.pgm", np.uint16, "I"), ("wide.tif", np.float32, "F")],
)
def test_wide_samples_scale_by_sixteen_bit_range(tmp_path: Path, name: str, dtype: type, mode: str) -> None:
    values = np.array([[0, 32768, 65535, 255]], dtype=dtype)
    path = saved(Image.fromarray(values), tmp_path / name)
    with Image.open(path) as check:
        assert check.mode == mode
    image = decode_image(path)
    assert [image.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (128,) * 3, WHITE, (1, 1, 1)]


def test_thirty_two_bit_int_scales_and_clips(tmp_path: Path) -> None:
    values = np.array([[-5, 32768, 65535, 1_000_000]], dtype=np.int32)
    path = saved(Image.fromarray(values), tmp_path / "int32.tif")
    with Image.open(path) as check:
        assert check.mode == "I"
    image = decode_image(path)
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 255]


# --- orientation, progressive, animation ------------------------------------------------------------------------


def corner_marked(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """A blue image with a red 10x10 block in its top-left corner."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, 10, 10))
    return image


@pytest.mark.parametrize(("orientation", "red_at"), [(6, (15, 5)), (8, (5, 35)), (3, (35, 15))])
def test_exif_orientation_applied(tmp_path: Path, orientation: int, red_at: tuple[int, int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = saved(corner_marked(), tmp_path / f"o{orientation}.jpg", exif=exif, quality=95)
    image = decode_image(path)
    assert image.size == ((40, 20) if orientation == 3 else (20, 40))
    assert close_to(image.getpixel(red_at), RED, tolerance=12)
    assert close_to(image.getpixel((5, 5)), BLUE, tolerance=12)


def test_progressive_jpeg(tmp_path: Path) -> None:
    path = saved(corner_marked(), tmp_path / "progressive.jpg", progressive=True, quality=95)
    with Image.open(path) as check:
        assert check.info.get("progressive")
    image = decode_image(path)
    assert image.size == (40, 20)
    assert close_to(image.getpixel((5, 5)), RED, tolerance=12)
    assert close_to(image.getpixel((30, 15)), BLUE, tolerance=12)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    first, second = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)
    path = saved(first, tmp_path / "anim.gif", save_all=True, append_images=[second], duration=100)
    with Image.open(path) as check:
        assert check.n_frames == 2
    image = decode_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == RED


# --- decompression bombs ----------------------------------------------------------------------------------------


def test_larger_than_limit_raises_with_both_numbers(tmp_path: Path) -> None:
    path = saved(Image.new("RGB", (20, 20)), tmp_path / "big.png")
    message = decode_error(path, max_pixels=100)
    assert "larger than the limit" in message
    assert "400" in message and "100" in message


def test_exactly_at_limit_decodes(tmp_path: Path) -> None:
    path = saved(Image.new("RGB", (10, 10)), tmp_path / "ten.png")
    assert decode_image(path, max_pixels=100).size == (10, 10)


def test_limit_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(Image.new("RGB", (20, 20)), tmp_path / "big.png")
    loads: list[object] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or real_load(self))
    decode_error(path, max_pixels=100)
    assert loads == []


@pytest.mark.parametrize("pillow_limit", [300, 150])  # 400 pixels: Pillow warns above 300, errors above 2 * 150
def test_pillows_own_bomb_check_becomes_decode_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pillow_limit: int
) -> None:
    path = saved(Image.new("RGB", (20, 20)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    message = decode_error(path)
    assert "larger than" in message and "400" in message


def test_no_global_state_changes(tmp_path: Path) -> None:
    filters = list(warnings.filters)
    limit, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    decode_image(saved(Image.new("RGB", (4, 4)), tmp_path / "ok.png"))
    decode_error(saved(Image.new("RGB", (20, 20)), tmp_path / "big.png"), max_pixels=100)
    assert list(warnings.filters) == filters
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (limit, truncated) == (MAX_PIXELS, False)


# --- broken files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    buffer = io.BytesIO()
    noise_rgb().save(buffer, format=Image.registered_extensions()[suffix])
    data = buffer.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in decode_error(path)


def test_non_image_bytes_with_image_suffix(tmp_path: Path) -> None:
    path = tmp_path / "text.jpg"
    path.write_bytes(b"this is not an image at all\n" * 10)
    assert "not a recognised image" in decode_error(path)


def test_formats_outside_the_suffix_list_are_not_tried(tmp_path: Path) -> None:
    path = tmp_path / "postscript.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with Image.open(path) as check:
        assert check.format == "EPS"
    assert "not a recognised image" in decode_error(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert decode_error(path) == "empty file"


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in decode_error(tmp_path / "missing.png")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert "not a regular file" in decode_error(folder)


# --- the result travels -----------------------------------------------------------------------------------------


def open_paths() -> set[str]:
    """Paths this process holds open, read from /proc/self/fd."""
    fd_dir = Path("/proc/self/fd")
    paths = set()
    for entry in fd_dir.iterdir():
        try:
            paths.add(os.readlink(entry))
        except OSError:
            continue
    return paths


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("name", ["plain.jpg", "anim.gif", "plain.png"])
def test_result_is_loaded_and_file_closed(tmp_path: Path, name: str) -> None:
    path = saved(Image.new("RGB", (8, 8), RED), tmp_path / name)
    image = decode_image(path)
    assert str(path) not in open_paths()
    path.unlink()
    assert close_to(image.getpixel((4, 4)), RED)
    copy = pickle.loads(pickle.dumps(image))
    assert (copy.mode, copy.size, copy.tobytes()) == (image.mode, image.size, image.tobytes())


def test_decode_in_worker_process(tmp_path: Path) -> None:
    paths = [saved(Image.new("RGBA", (6, 6), (0, 0, 0, 0)), tmp_path / "clear.png"), tmp_path / "missing.png"]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(decode_image, p) for p in paths]
        image = futures[0].result(timeout=60)
        with pytest.raises(DecodeError, match="not found"):
            futures[1].result(timeout=60)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == WHITE
