"""A stop signal that arrives while an atomic write creates its temp file leaves no file behind."""

from __future__ import annotations

import os
import signal

import pytest

from ensemble.files.atomic import write_bytes


class Stop(BaseException):
    """What the stop handler raises, like `ens`'s own for SIGTERM."""


def _raise_stop(signum, frame):
    raise Stop(signum)


def test_a_stop_signal_while_the_temp_file_is_created_leaves_no_file(tmp_path, monkeypatch):
    real_open = os.open

    def open_then_signal(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives the instant the temp file exists
        return fd

    monkeypatch.setattr(os, "open", open_then_signal)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with pytest.raises(Stop):
            write_bytes(tmp_path / "out.bin", b"data")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def test_a_new_file_takes_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_bytes(tmp_path / "out.bin", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o640


def test_the_write_still_lands_without_a_signal(tmp_path):
    write_bytes(tmp_path / "out.bin", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert (tmp_path / "out.bin").read_bytes() == b"data"
