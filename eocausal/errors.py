"""Exceptions for problems in a user's inputs.

Every class subclasses the matching built-in (as ``rasterio.errors`` does) so callers can
catch ``ValueError``/``OSError`` as usual, and :class:`EocausalError` so the CLI can tell a
user's mistake (printed as one message, exit code 2) from a bug (a traceback).
Messages say what is wrong, the value received, and what to change.
"""

from __future__ import annotations

__all__ = [
    "EocausalError",
    "InputFileError",
    "MissingColumnError",
    "UnitsError",
    "CRSMissingError",
    "RasterReadError",
    "NoUsableUnitsError",
    "ConfigError",
    "EstimationError",
    "EncoderError",
    "RunLockedError",
    "OutputPathError",
]


class EocausalError(Exception):
    """Base class for errors caused by a user's inputs or settings."""


class InputFileError(EocausalError, FileNotFoundError):
    """An input file is missing or cannot be opened."""


class MissingColumnError(EocausalError, KeyError):
    """A table lacks a column the configuration names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnitsError(EocausalError, ValueError):
    """Unit rows are invalid: duplicate or missing ids, bad values, bad geometry."""


class CRSMissingError(EocausalError, ValueError):
    """A raster or a units file has no coordinate reference system."""


class RasterReadError(EocausalError, OSError):
    """A raster cannot be read (truncated, corrupt, or not a raster)."""


class NoUsableUnitsError(EocausalError, ValueError):
    """No unit got a usable chip, so nothing downstream can run."""


class ConfigError(EocausalError, ValueError):
    """A run configuration is invalid."""


class EstimationError(EocausalError, ValueError):
    """Inputs to an estimator cannot identify an effect (constant treatment, NaN outcome...)."""


class EncoderError(EocausalError, ValueError):
    """An encoder cannot be built or applied (unknown name, wrong weights, band mismatch)."""


class RunLockedError(EocausalError, RuntimeError):
    """Another live run holds the run directory."""


class OutputPathError(EocausalError, ValueError):
    """An output path would overwrite something eocausal did not create."""
