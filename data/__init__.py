"""Data sources. Each loader raises DataError with one sentence that says what to do."""


class DataError(Exception):
    """Missing, corrupt or wrong-format data; the message names the file and the fix."""
