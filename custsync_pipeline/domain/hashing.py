"""64-bit hashes as text: the hex digests stored for entry keys, entry digests and record
hashes, formatted in numpy (``format(h, "016x")`` per row costs a second a million)."""

from __future__ import annotations

import numpy as np

HEX_DIGITS = np.array(list("0123456789abcdef"))
_CHUNK = 250_000  # rows per pass: a (rows, 16) nibble matrix stays a few tens of MB


def hex16(hashes: np.ndarray) -> np.ndarray:
    """Each 64-bit hash as 16 lower-case hex digits (``format(h, "016x")``), as an object
    array of str."""
    values = np.asarray(hashes).astype(np.uint64, copy=False)
    out = np.empty(len(values), dtype=object)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    for start in range(0, len(values), _CHUNK):
        part = values[start : start + _CHUNK]
        nibbles = ((part[:, None] >> shifts) & np.uint64(0xF)).astype(np.intp)
        chars = np.ascontiguousarray(HEX_DIGITS[nibbles])
        out[start : start + len(part)] = chars.view("<U16").ravel()
    return out
