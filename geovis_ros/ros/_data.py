"""Filling the ``uint8[] data`` field of a message with exactly one copy.

Jazzy's generated ``data`` setter copies its argument into a new ``array.array('B')``
(even when given one), so ``msg.data = arr.tobytes()`` copies the payload twice. Extending
the (empty) array that a fresh message already holds, in place, copies it once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def copy_into_data(msg: Any, values: NDArray[Any]) -> None:
    """Append the bytes of ``values`` (C order) to ``msg.data``: one copy of the payload.

    ``msg`` is a freshly constructed message whose ``data`` field is empty.
    """
    if values.flags.c_contiguous:
        msg.data.frombytes(values.reshape(-1).view(np.uint8))
    else:
        np.copyto(allocate_data(msg, values.nbytes).view(values.dtype).reshape(values.shape), values)


def allocate_data(msg: Any, nbytes: int) -> NDArray[np.uint8]:
    """Grow the empty ``msg.data`` to ``nbytes`` zero bytes; returns a writable uint8 view of it."""
    msg.data.frombytes(bytes(nbytes))
    return np.frombuffer(msg.data, dtype=np.uint8)
