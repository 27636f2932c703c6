"""Errors a user causes and can fix (data missing or damaged, weights not at hand): the message names the fix.

``python -m vitstudy`` prints them as one line and exits 2; a notebook shows them with its traceback.
"""

from __future__ import annotations


class DataNotFound(FileNotFoundError):
    """A data set is not where it was asked for, or nowhere it is looked for; the message says what to do."""


class CorruptImageError(RuntimeError):
    """An image file could not be decoded; the message names the file.

    Raised in a DataLoader worker, it comes back re-created from torch's text "Caught CorruptImageError in
    DataLoader worker ... Original Traceback ...": the constructor keeps only the original message's last line,
    so the user reads one line naming the file, not the worker's traceback inside the message.
    """

    def __init__(self, message: str) -> None:
        name = type(self).__name__
        if message.startswith(f"Caught {name} in DataLoader worker"):
            message = message.rstrip().rsplit(f"{name}: ", 1)[-1]
        super().__init__(message)


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but are neither in the hub cache nor given as a local file."""
