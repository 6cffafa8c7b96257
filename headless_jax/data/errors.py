"""The exceptions the data layer raises for bad input: one line naming the file (or setting) and the fix."""


class DataError(ValueError):
    """Bad data or data configuration; the message names the file or setting at fault and how to fix it."""


class MissingDataError(DataError, FileNotFoundError):
    """A configured file, glob or dataset that does not exist."""
