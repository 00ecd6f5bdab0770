"""`--data` as given: a course npz file, or a folder of images (with `--masks`, a folder of masks)."""

from __future__ import annotations

import os
from pathlib import Path

from ensemble.data.datafile import DataFile, open_data
from ensemble.data.folder import FolderData, open_folder
from ensemble.errors import EnsError

Dataset = DataFile | FolderData


def open_dataset(data: str | os.PathLike, masks: str | os.PathLike | None = None) -> Dataset:
    """An image folder (paired with `masks` when given) or a course npz file."""
    data = Path(data)
    if data.is_dir():
        return open_folder(data, masks)
    if masks is not None:
        raise EnsError(
            f"--masks {str(masks)!r} pairs with an image folder, but --data {str(data)!r} is not a folder; "
            "a course npz holds its own masks, so drop --masks, or pass the images folder as --data"
        )
    return open_data(data)
