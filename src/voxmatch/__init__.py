"""voxmatch: open speaker identification."""

from voxmatch._version import __version__

__all__ = ["__version__"]
