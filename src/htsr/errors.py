"""Errors raised by htsr.

Every error htsr raises on purpose derives from :class:`HtsrError`, so one
``except htsr.HtsrError`` catches them all::

    HtsrError                     base; message names the path, layer and shape involved
    ├── SourceError               a model, file or folder that cannot be read
    │   └── UnsafeFileError       a file that would need code execution to load (a full pickle)
    ├── LayerError                one layer's weights cannot be analyzed (caught per layer by the engine)
    ├── OptionError               a bad option value (also a ``ValueError``) or unknown keyword (``TypeError``)
    └── CheckpointError           a checkpoint file from another run (options, model, version) or corrupt
"""

from __future__ import annotations


class HtsrError(Exception):
    """Base class of every error htsr raises on purpose."""


class SourceError(HtsrError):
    """A model object, file or folder that htsr cannot read."""


class UnsafeFileError(SourceError):
    """A file that cannot be read without executing code from it."""


class LayerError(HtsrError):
    """One layer's weights cannot be analyzed."""


class OptionError(HtsrError, ValueError):
    """An option value that is out of range or of the wrong kind."""


class UnknownOptionError(HtsrError, TypeError):
    """A keyword argument htsr does not know."""


class CheckpointError(HtsrError):
    """A checkpoint file that does not belong to this run, or cannot be read or written."""


__all__ = [
    "HtsrError",
    "SourceError",
    "UnsafeFileError",
    "LayerError",
    "OptionError",
    "UnknownOptionError",
    "CheckpointError",
]
