"""The root of every geovis_ros exception, and the one the ``geovis`` commands print.

A leaf module: every layer may import it. Each layer's own errors derive from
:class:`GeovisError` (and, where callers expect it, from the built-in they refine, e.g.
``ValueError``), so ``except GeovisError`` catches every failure this package raises on purpose.
"""

from __future__ import annotations


class GeovisError(Exception):
    """Root of the exceptions geovis_ros raises on purpose (bad input, bad files, unusable models)."""


class CommandError(GeovisError):
    """A user-facing failure of a ``geovis`` command: printed as ``geovis <cmd>: error: <message>``, exit status 2."""
