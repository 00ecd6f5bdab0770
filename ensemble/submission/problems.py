"""What is wrong with a file: line-numbered one-line problems, collected up to a limit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file; `line` is 1-based (the header is line 1), None for the whole file."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


class Problems:
    """Collects problems; vectorised checks add only the first few of many and count the rest."""

    def __init__(self, limit: int = 10) -> None:
        self.limit = limit
        self.found: list[Problem] = []
        self.total = 0

    def add(self, line: int | None, message: str) -> None:
        self.total += 1
        if len(self.found) < 4 * self.limit:
            self.found.append(Problem(line, message))

    def add_rows(
        self, bad: np.ndarray, lines: Sequence[int] | np.ndarray, describe: Callable[[int], str]
    ) -> None:
        """Add a problem for every True in `bad` (one per row), describing the first few in full."""
        rows = np.flatnonzero(bad)
        for row in rows[: self.limit]:
            self.add(int(lines[row]), describe(int(row)))
        self.count_more(rows.size - self.limit)

    def count_more(self, n: int) -> None:
        """Count `n` further problems without describing them."""
        self.total += max(n, 0)

    def __bool__(self) -> bool:
        return self.total > 0

    def first(self) -> list[Problem]:
        """The earliest problems by line (file-wide ones first), at most `limit`."""
        ordered = sorted(self.found, key=lambda p: -1 if p.line is None else p.line)
        return ordered[: self.limit]

    @property
    def n_hidden(self) -> int:
        return self.total - len(self.first())
