"""One image or mask file read with Pillow: PNG, JPEG, TIFF and BMP, 8 or 16 bits per channel.

Images become uint8 (H, W) for one channel or (H, W, 3) for colour, as the member contract takes
raw 0..255 pixels: 16-bit values v are mapped to round(v / 257), so 8-bit values stored in 16 bits
come back unchanged. Alpha is dropped, palettes are expanded, and an image is turned by its EXIF
orientation (as viewers show it, and as masks are drawn on it). Masks are single-channel class
indices, read as stored. Every decoding failure is one EnsError naming the file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ensemble.errors import EnsError, first_line

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "La")
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
MAX_PIXELS = 1 << 26  # 8192x8192: refuse larger images before decoding them
_ORIENTATION = 0x0112  # EXIF tag: how the stored pixels are turned for display
_TURNED = (5, 6, 7, 8)  # orientations that swap height and width
_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding its pixels."""

    height: int
    width: int
    channels: int


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith(".")


def read_header(path: Path, turned: bool = True) -> ImageHeader:
    """Size and channel count (1 or 3) of an image file; the size as displayed (after the EXIF
    orientation, as `read_image` reads it) unless `turned` is False (masks, read as stored)."""
    with _opened(path) as image:
        height, width = image.height, image.width
        if turned and _orientation(image, path) in _TURNED:
            height, width = width, height
        return ImageHeader(height, width, _channels(image, path))


def read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) pixels as displayed (turned by the file's EXIF orientation, as
    people see the image they draw masks on); `channels` 3 replicates a grayscale image, 1 refuses
    colour."""
    with _opened(path) as image:
        found = _channels(image, path)
        try:
            if _orientation(image, path) not in (None, 1):
                image = ImageOps.exif_transpose(image)
            pixels = _gray(image) if found == 1 else np.asarray(image.convert("RGB"), np.uint8)
        except _ERRORS as exc:
            raise _unreadable(path, exc) from exc
    if channels == 3 and found == 1:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if channels == 1 and found == 3:
        raise _refuse_colour(path)
    return pixels


def read_mask(path: Path, n_classes: int | None = None) -> np.ndarray:
    """uint8 (H, W) class indices of a single-channel mask file (8 or 16 bits, values < 256)."""
    with _opened(path) as image:
        if image.mode not in GRAY_MODES or image.mode in ("LA", "La"):
            raise EnsError(
                f"mask {str(path)!r} is a {image.mode} image; masks are single-channel PNGs of class "
                "indices (mode L or I;16), not colour pictures; save the label map itself"
            )
        try:
            values = np.asarray(image if image.mode != "1" else image.convert("L"))
        except _ERRORS as exc:
            raise _unreadable(path, exc) from exc
    top = 255 if n_classes is None else n_classes - 1
    if values.size and (int(values.max()) > top or int(values.min()) < 0):
        bad = int(values.max()) if int(values.max()) > top else int(values.min())
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(values == bad)), values.shape))
        raise EnsError(
            f"mask {str(path)!r}: labels must lie in 0..{top}, found {bad} at pixel {where}; hint: "
            "masks hold class indices; check the class count of your members"
        )
    return values.astype(np.uint8)


def _orientation(image: Image.Image, path: Path) -> int | None:
    """The EXIF orientation tag (1..8) of an image, None when it has none."""
    try:
        value = image.getexif().get(_ORIENTATION)
    except _ERRORS as exc:
        raise _unreadable(path, exc) from exc
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("1", "LA", "La"):
        image = image.convert("L")
    values = np.asarray(image)
    if values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    wide = values.astype(np.int64)  # I;16 (uint16) or I (int32) images
    return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)


def _channels(image: Image.Image, path: Path) -> int:
    if image.mode in GRAY_MODES:
        return 1
    if image.mode in COLOUR_MODES:
        return 3
    raise EnsError(
        f"image {str(path)!r} has pixel mode {image.mode!r} (float or multi-band), which ens does not "
        "read; save it as 8- or 16-bit grayscale or RGB (PNG, JPEG, TIFF or BMP)"
    )


class _opened:
    """`Image.open` as a context manager whose failures are one EnsError naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> Image.Image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self.image = Image.open(self.path)
                if self.image.width * self.image.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(
                        f"{self.image.width}x{self.image.height} pixels, more than {MAX_PIXELS:,}"
                    )
        except (*_ERRORS, Image.DecompressionBombWarning) as exc:
            raise _unreadable(self.path, exc) from exc
        return self.image

    def __exit__(self, *exc_info) -> None:
        self.image.close()


def _unreadable(path: Path, exc: BaseException) -> EnsError:
    return EnsError(
        f"cannot read image {str(path)!r} ({type(exc).__name__}: {first_line(exc, 120)}); the file is "
        "damaged or not a PNG, JPEG, TIFF or BMP image; replace it or remove it from the folder"
    )


def _refuse_colour(path: Path) -> EnsError:
    return EnsError(
        f"image {str(path)!r} is in colour but the members take 1 channel (grayscale); use members "
        "exported with --channels 3, or convert the images to grayscale"
    )
