"""lsqface: unsupervised 3D face reconstruction with a differentiable linear least-squares 3DMM fit."""

from lsqface.errors import LsqfaceError

__version__ = "0.1.0"
__all__ = ["LsqfaceError", "__version__"]
