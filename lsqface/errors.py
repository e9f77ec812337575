"""Errors a user can cause.

Every error that bad input can trigger is an ``LsqfaceError`` subclass whose
message is one sentence saying what went wrong and what to do. The command
line prints that sentence and exits non-zero; library code never exits.
"""


class LsqfaceError(Exception):
    """Base class of every error a user can cause."""


class FaceModelError(LsqfaceError):
    """A face-model source (ICT-FaceKit, BFM 2017) is missing, unreadable or malformed."""


class CacheError(LsqfaceError):
    """A cached file (UV-3DMM, checkpoint) is cut short or does not match."""


class ImageError(LsqfaceError):
    """An input image or video cannot be read or is unusable."""


class DatasetError(ImageError):
    """A dataset folder (CelebA, MAFL, AFLW, MTFL) lacks a file it needs, or an annotation file is malformed.

    A subclass of :class:`ImageError`: code that handles unreadable images
    handles unusable datasets too.
    """


class SolverError(LsqfaceError):
    """A least-squares system cannot be solved (for example, not positive definite)."""


class ConfigError(LsqfaceError):
    """A configuration file or option is invalid."""


class CheckpointError(LsqfaceError):
    """A network checkpoint is missing, cut short or belongs to another model."""
