"""Exceptions for expected problems: the CLI prints their message and exits 1."""


class DftrainError(Exception):
    """An expected problem the user can fix: bad input, missing file, bad configuration."""


class ConfigError(DftrainError):
    """An invalid option or combination of options, detected before any compute."""


class MissingDependencyError(DftrainError):
    """An optional package, model file or data file is not installed or not found."""
