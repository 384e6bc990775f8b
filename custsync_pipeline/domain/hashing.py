"""64-bit hashes of rows, and as text: the hex digests stored for entry keys, entry
digests and record hashes, formatted in numpy (``format(h, "016x")`` per row costs a
second a million)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# pandas' own hashing engine and key, and below its finalizer (``_spread``): private
# names, the same values as ``hash_pandas_object`` — test_row_hashes.py compares them
# value for value, so a pandas that changes them fails there, not in a stored digest
from pandas._libs.hashing import hash_object_array
from pandas.core.util.hashing import _default_hash_key, combine_hash_arrays, hash_array

# pandas' hash of a missing value in a column it factorizes first
_MISSING = np.uint64(np.iinfo(np.uint64).max)

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


def _spread(vals: np.ndarray) -> np.ndarray:
    """The mixing pandas' ``hash_array`` applies to each raw 64-bit hash (splitmix64's
    finalizer), in place."""
    vals ^= vals >> np.uint64(30)
    vals *= np.uint64(0xBF58476D1CE4E5B9)
    vals ^= vals >> np.uint64(27)
    vals *= np.uint64(0x94D049BB133111EB)
    vals ^= vals >> np.uint64(31)
    return vals


def _column_hashes(values: pd.Series) -> np.ndarray:
    """``hash_array`` of one column as pandas' default gives it, text hashed value by value
    (pandas factorizes each text column first: a sort-free pass that costs more than the
    hashing itself when most values differ, as ids and e-mail addresses do). An object
    column is hashed as it lies (no copy); its missing values are found in one pass."""
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        if values.dtype == object:
            objects = values.to_numpy()
        else:
            objects = values.to_numpy(dtype=object, na_value=None)
        try:  # text and missing values only (pandas' own hashing engine refuses others)
            out = _spread(hash_object_array(objects, _default_hash_key, "utf8"))
        except TypeError:  # mixed values (5 and "5", True and 1, pd.NA): as pandas does
            return hash_array(values._values)
        # a string column knows its missing values (Arrow's: a bitmap, 20x faster than a
        # pass over a million Python objects)
        missing = values.isna().to_numpy() if values.dtype != object else pd.isna(objects)
        if missing.any():
            out[missing] = _MISSING  # as a factorized column hashes it
        return out
    return hash_array(values._values)


def row_hashes64(values: pd.DataFrame | pd.Series) -> np.ndarray:
    """``pd.util.hash_pandas_object(values, index=False)``, the same 64-bit hash per row
    (stored hashes and digests stay valid), in about half the time on text. One
    difference: pandas' factorize takes text up to a NUL character (``"Ann"`` and
    ``"Ann\\x00x"`` are one value to it); this hashes the whole text, so a value holding a
    NUL hashes as itself (its stored hash is rewritten once)."""
    if isinstance(values, pd.Series):
        return _column_hashes(values)
    width = values.shape[1]
    if width == 0:  # as pandas: nothing to hash
        return pd.util.hash_pandas_object(values, index=False).to_numpy()
    return combine_hash_arrays((_column_hashes(values.iloc[:, j]) for j in range(width)), width)
