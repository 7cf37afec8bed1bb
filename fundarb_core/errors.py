"""The project's own user-error types: one line that names the file / venue / symbol / field / argument and
says what to do.

Why a separate hierarchy: the command line must tell a user's mistake (a bad path, an empty period, a database
held by another process) from a bug.  Anything raising a :class:`FundarbError` is the former: every command prints
its message as one line on stderr and exits with its ``exit_code``; any other exception is a bug and keeps its
traceback.  Dagster assets re-raise these as ``dg.Failure`` with the same message, so a run shows the same line.
"""

from __future__ import annotations


class FundarbError(Exception):
    """A user error; ``str()`` is the whole message, one line."""

    exit_code = 1


class BadArgumentError(FundarbError, ValueError):
    """A command-line argument (a time, a period, a mode) that cannot be used as given."""

    exit_code = 2


class DataFileError(FundarbError):
    """A data file or directory that cannot be read: missing, empty, truncated, not parquet, missing columns."""

    exit_code = 3


class NothingToDoError(FundarbError):
    """Nothing valid to work on: every row rejected, no rows in the period asked for."""

    exit_code = 4


class DatabaseError(FundarbError):
    """The DuckDB file is missing or its location cannot be used."""

    exit_code = 5


class BusyError(FundarbError):
    """Another process held a resource (the DuckDB file, the Dagster pool slot) past the waiting limit."""

    exit_code = 6


ERROR_TYPES: dict[str, type[FundarbError]] = {
    cls.__name__: cls for cls in (FundarbError, BadArgumentError, DataFileError, NothingToDoError, DatabaseError,
                                  BusyError)
}
"""By class name: a Dagster step failure carries only the name of the exception it wrapped."""
