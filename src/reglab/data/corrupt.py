"""The error for a dataset file that exists but cannot be read."""

from __future__ import annotations

from ..errors import DataMissingError


class CorruptFileError(DataMissingError):
    """A dataset file is present but damaged or not in the expected format.

    It is a DataMissingError because the usable data is missing all the same: the CLI reports
    it as one message and the user fixes it the same way (replace the file).
    """
