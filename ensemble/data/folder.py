"""Image folders as data: a folder of images (ids = file stems), optionally a folder of masks.

Opening a folder reads only the file headers (size, channels) and stats; pixels are decoded batch
by batch by a small thread pool, so memory stays bounded at any number of files. Images and masks
are paired by stem; a missing or extra file is one error naming the files. The folder's `sha256`
fingerprints its listing (each file's name, size and modification time), so a changed file changes
it without reading every file on every command.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.imagefiles import SUFFIXES, ImageHeader, read_header, read_image, read_mask
from ensemble.data.readpool import read_batches, read_chunks, read_each
from ensemble.data.sizes import SizeGroup, size_groups
from ensemble.errors import EnsError
from ensemble.files.hashing import file_sha256

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
READER = "2"  # how files become pixels; 2: images turned by their EXIF orientation (cached results redone)
_CANONICAL_INT = re.compile(r"0|[1-9][0-9]{0,11}")
_SEPARATOR = re.compile('[,"\x00-\x1f\x7f-\x9f\u2028\u2029]')  # CSV field or line breakers, controls
FORMULA_STARTS = "=+-@"  # spreadsheets run a cell starting with one of these as a formula


@dataclass(frozen=True)
class FolderData:
    """A validated image folder (and its masks folder); pixels are read on demand."""

    path: Path
    masks_path: Path | None
    stems: tuple[str, ...]
    image_files: tuple[Path, ...]
    mask_files: tuple[Path, ...] | None
    sizes: np.ndarray
    channels: np.ndarray
    sha256: str

    @property
    def n_images(self) -> int:
        return len(self.stems)

    @property
    def has_masks(self) -> bool:
        return self.mask_files is not None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """The one image size, or None when sizes are mixed."""
        groups = self.groups()
        return groups[0].shape if len(groups) == 1 else None

    @property
    def channel_counts(self) -> frozenset[int]:
        return frozenset(int(c) for c in np.unique(self.channels))

    def groups(self, positions: np.ndarray | None = None) -> tuple[SizeGroup, ...]:
        return size_groups(self.sizes, positions)

    def ids(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The stems (image ids) at `positions`, all by default."""
        stems = np.array(self.stems, dtype=str)
        return stems if positions is None else stems[np.asarray(positions, np.int64)]

    def content_sha256(self) -> str:
        """sha256 of every image's and mask's name and content: unlike `sha256` (the listing), it
        changes when a file is edited in place with its size and modification time kept. Reads
        every file once, so it is what a resumed run keys on, not what every command computes."""
        return content_fingerprint([*self.image_files, *(self.mask_files or ())])

    def input_paths(self) -> dict[str, Path]:
        """The folders a run reads, for the overwrite guard (which covers every file in them)."""
        folders = {"--data": self.path}
        if self.masks_path is not None:
            folders["--masks"] = self.masks_path
        return folders

    def iter_images(self, positions: Sequence[int], channels: int, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 batches of the images at `positions` (all of one size): (B, H, W), or (B, H, W, 3)
        with `channels` 3 (grayscale images replicated)."""
        files = [self.image_files[int(p)] for p in positions]
        yield from read_batches(files, lambda path: read_image(path, channels), batch_size)

    def read_masks(self, positions: Sequence[int], n_classes: int | None = None) -> np.ndarray:
        """uint8 (B, H, W) masks of images of one size at `positions`."""
        self._require_masks()
        files = [self.mask_files[int(p)] for p in positions]
        batches = list(read_batches(files, lambda path: read_mask(path, n_classes), max(len(files), 1)))
        return batches[0] if batches else np.empty((0, 0, 0), np.uint8)

    def iter_masks(self, n_classes: int | None = None, batch_size: int = 256) -> Iterator[list[np.ndarray]]:
        """Every mask in stem order, in lists of up to `batch_size` (sizes may differ)."""
        self._require_masks()
        yield from read_chunks(lambda path: read_mask(path, n_classes), self.mask_files, batch_size)

    def _require_masks(self) -> None:
        if self.mask_files is None:
            raise EnsError(
                f"image folder {str(self.path)!r} was given without masks; pass --masks DIR, a folder of "
                "single-channel PNG masks named like the images"
            )


def open_folder(images: str | os.PathLike, masks: str | os.PathLike | None = None) -> FolderData:
    """List, pair and check an image folder (and masks folder); reads headers, not pixels."""
    images = Path(images)
    image_files = _listing(images, "--data", SUFFIXES)
    stems = sort_stems(list(image_files))
    files = tuple(image_files[stem] for stem in stems)
    headers = _headers(files)
    mask_files = None
    if masks is not None:
        masks = Path(masks)
        found = _listing(masks, "--masks", SUFFIXES)
        _check_pairs(images, masks, image_files, found)
        mask_files = tuple(found[stem] for stem in stems)
        _check_masks(mask_files, headers)
    sizes = np.array([(h.height, h.width) for h in headers], np.int64).reshape(-1, 2)
    channels = np.array([h.channels for h in headers], np.int64)
    listing = [*files, *(mask_files or ())]
    return FolderData(images, masks, tuple(stems), files, mask_files, sizes, channels, fingerprint(listing))


def sort_stems(stems: list[str]) -> list[str]:
    """Stems in id order: numerically when every stem is a plain integer, else as text.

    >>> sort_stems(["10", "9", "0"]), sort_stems(["b", "a10", "a9"])
    (['0', '9', '10'], ['a10', 'a9', 'b'])
    """
    if stems and all(_CANONICAL_INT.fullmatch(stem) for stem in stems):
        return sorted(stems, key=int)
    return sorted(stems)


def integer_ids(stems: Sequence[str]) -> bool:
    """Whether every stem is a plain non-negative integer (no sign, no leading zeros)."""
    return all(_CANONICAL_INT.fullmatch(stem) for stem in stems)


def id_problem(text: str) -> str | None:
    """Why `text` cannot be an image id in a CSV row (a comma, quote, control or line separator,
    outer space, or a spreadsheet formula's first character), or None.

    >>> id_problem("img_1"), id_problem("a\\u2028b")[:12]
    (None, 'holds U+2028')
    >>> id_problem("=1+1")
    "starts with '=', which spreadsheets run as a formula"
    """
    if not text:
        return "is empty"
    found = _SEPARATOR.search(text)
    if found:
        return f"holds U+{ord(found[0]):04X}, a comma, quote, control or line-separator character"
    if text != text.strip():
        return "has outer space"
    if text[0] in FORMULA_STARTS:
        return f"starts with {text[0]!r}, which spreadsheets run as a formula"
    return None


def fingerprint(files: Sequence[Path]) -> str:
    """sha256 of how pixels are read (READER) and each file's name, size and modification time, in order."""
    digest = hashlib.sha256(f"{READER}\n".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.parent.name}/{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_fingerprint(files: Sequence[Path]) -> str:
    """sha256 of each file's name and content hash, in order (the files hashed by a few threads)."""
    digest = hashlib.sha256()
    for path, sha in zip(files, read_each(file_sha256, files), strict=True):
        digest.update(f"{path.parent.name}/{path.name}\t{sha}\n".encode())
    return digest.hexdigest()


def _listing(folder: Path, option: str, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Image files of `folder` by stem (hidden files and other suffixes are not images)."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise EnsError(f"{option} {str(folder)!r} {what}; pass a folder of images, or a course npz file")
    found: dict[str, Path] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(".") or path.suffix.lower() not in suffixes or not entry.is_file():
                continue
            stem = path.stem
            if stem in found:
                raise EnsError(
                    f"{option} {str(folder)!r} holds {found[stem].name!r} and {path.name!r} with the same "
                    "stem; image ids are file stems, so keep one file per stem"
                )
            problem = id_problem(stem)
            if problem:
                raise EnsError(
                    f"{option} file {path.name!r}: its stem {problem}; image ids are file stems and go "
                    "into CSV rows, so rename the file"
                )
            found[stem] = path
    if not found:
        raise EnsError(
            f"{option} folder {str(folder)!r} holds no images ({', '.join(suffixes)}); pass the folder "
            "that holds them (subfolders are not searched)"
        )
    return found


def _check_pairs(images: Path, masks: Path, image_files: dict, mask_files: dict) -> None:
    missing = sorted(set(image_files) - set(mask_files))
    extra = sorted(set(mask_files) - set(image_files))
    if missing:
        raise EnsError(
            f"{len(missing)} image(s) of {str(images)!r} have no mask in {str(masks)!r}: "
            f"{_few([image_files[s].name for s in missing])}; every image needs a mask with the same stem"
        )
    if extra:
        raise EnsError(
            f"{len(extra)} mask(s) of {str(masks)!r} have no image in {str(images)!r}: "
            f"{_few([mask_files[s].name for s in extra])}; remove them or add their images"
        )


def _check_masks(mask_files: tuple[Path, ...], image_headers: list[ImageHeader]) -> None:
    lossy = next((p for p in mask_files if p.suffix.lower() not in MASK_SUFFIXES), None)
    if lossy is not None:
        raise EnsError(
            f"mask {str(lossy)!r} is a JPEG, whose lossy compression changes class indices; save masks "
            "as PNG (or TIFF, BMP)"
        )
    for path, header, image in zip(
        mask_files, _headers(mask_files, turned=False), image_headers, strict=True
    ):
        if (header.height, header.width) != (image.height, image.width):
            raise EnsError(
                f"mask {str(path)!r} is {header.height}x{header.width} but its image is "
                f"{image.height}x{image.width}; a mask has its image's size"
            )


def _headers(files: Sequence[Path], turned: bool = True) -> list[ImageHeader]:
    """Headers of `files`, sizes after the EXIF orientation unless `turned` is False (masks)."""
    return list(read_each(lambda path: read_header(path, turned), files))


def _few(names: list[str], shown: int = 5) -> str:
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
