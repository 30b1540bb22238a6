"""The one base class of the errors a user fixes, shared by every layer (it imports nothing of the project).

A setting, a dataset folder in the wrong layout, an unreadable audio file, a checkpoint of another model, a
study file, an export target: each failure the user can fix raises a subclass of :class:`UserError` with a
message that names the problem and the fix. The commands (``ex_*.py``, ``study.py``, ``python -m
datasets.prepare``) print that message without a traceback and exit with status 1; ``--debug`` shows the
traceback. Every other exception is a defect of frito and keeps its traceback.
"""


class UserError(Exception):
    """An error the user fixes; its message names the problem and the fix."""


class ConfigurationError(UserError, ValueError):
    """A config key or value that no component accepts."""


class OutputExistsError(UserError, FileExistsError):
    """An output file or folder that exists and would be overwritten."""
