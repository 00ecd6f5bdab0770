"""The helpers that now serve several callers: the read pool of image folders and the refusal of text ids
that the flat format cannot number."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.data.readpool import read_chunks, read_each
from ensemble.errors import EnsError
from ensemble.submission.io import read_submission, write_submission
from ensemble.submission.textids import refuse_flat_text_ids


def test_read_chunks_keeps_order_and_chunk_size(tmp_path):
    files = []
    for index in range(7):
        path = tmp_path / f"{index}.txt"
        path.write_text(str(index * index))
        files.append(path)
    chunks = list(read_chunks(lambda path: int(path.read_text()), files, 3))
    assert chunks == [[0, 1, 4], [9, 16, 25], [36]]
    assert list(read_each(lambda path: path.name, files)) == [f"{i}.txt" for i in range(7)]
    assert list(read_chunks(str, [], 3)) == []


@pytest.mark.parametrize("bad", ["007", "img_1", "1e3", "1.0"])
def test_flat_refuses_text_ids_that_are_not_plain_integers(tmp_path, bad):
    message = (
        f"the flat format numbers images with integers, but image id {bad!r} is not a plain non-negative "
        "integer; name the image files 0.png, 1.png, ... or write --format rle"
    )
    with pytest.raises(EnsError) as raised:
        refuse_flat_text_ids(["3", bad])
    assert str(raised.value) == message
    labels = np.ones((2, 2, 3), np.uint8)
    with pytest.raises(EnsError) as raised:
        write_submission(tmp_path / "sub.csv", np.array(["3", bad]), labels, "flat", 5)
    assert str(raised.value) == message
    assert not (tmp_path / "sub.csv").exists()


def test_flat_takes_plain_integer_text_ids(tmp_path):
    refuse_flat_text_ids(["0", "12"])
    labels = np.array([[[1, 2, 3]], [[4, 1, 1]]], np.uint8)
    write_submission(tmp_path / "sub.csv", np.array(["0", "12"]), labels, "flat", 5)
    ids, back, fmt = read_submission(tmp_path / "sub.csv", (1, 3), 5)
    assert (ids.tolist(), fmt) == ([0, 12], "flat")
    assert (back == labels).all()
