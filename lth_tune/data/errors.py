"""Errors raised by :mod:`lth_tune.data`."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not on disk (and were not, or could not be, downloaded).

    The message is one line naming the dataset, the directory the files must be in, and the fix.
    """
