"""``domain.hashing.row_hashes64`` gives pandas' own row hash (``hash_pandas_object``),
value for value, for every kind of column the state DB and the steps hash: stored row
hashes and digests made before it stay valid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custsync_pipeline.domain.hashing import row_hashes64


def _frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 500
    words = np.array(
        ["anna", "Åsa", "", "o'brien", "x@example.com", "+4670", "ünï ✓"], dtype=object
    )
    text = words[rng.integers(0, len(words), n)].astype(object)
    text[rng.random(n) < 0.3] = None
    ids = np.array([f"id-{i}" for i in rng.permutation(n)], dtype=object)
    with_nan = text.copy()
    with_nan[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "ids": ids,
            "text": text,
            "nan_and_none": with_nan,
            "arrow": pd.array(text, dtype="string[pyarrow]"),
            "pandas_text": pd.array(text, dtype="string"),
            "ints": rng.integers(-5, 5, n),
            "floats": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "bools": pd.Series(rng.random(n) < 0.5, dtype=object).where(rng.random(n) < 0.8),
            "times": pd.Series(pd.to_datetime(rng.integers(0, 10**9, n), unit="s", utc=True)),
            "mixed": pd.Series([1, "1", True, 2.5, None] * (n // 5), dtype=object),
            "category": pd.Categorical(words[rng.integers(0, 3, n)]),
            "bytes": pd.Series([b"\x00\x01", b"", None, b"ab", b"\xff"] * (n // 5), dtype=object),
            "text_and_na": pd.Series(["a", pd.NA, None, "b", "a"] * (n // 5), dtype=object),
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_hashes_are_pandas_own(seed: int) -> None:
    frame = _frame(seed)
    assert (row_hashes64(frame) == pd.util.hash_pandas_object(frame, index=False)).all()
    for name in frame.columns:
        column = frame[name]
        want = pd.util.hash_pandas_object(column, index=False).to_numpy()
        assert (row_hashes64(column) == want).all(), name
    # a part of the rows and of the columns
    part = frame.iloc[7:99, [0, 2, 4]]
    assert (row_hashes64(part) == pd.util.hash_pandas_object(part, index=False)).all()


def test_row_hashes_tell_rows_apart() -> None:
    """Missing, empty and the text "None" are three values; column order counts."""
    frame = pd.DataFrame({"a": [None, "", "None", "x"], "b": ["x", "x", "x", None]})
    hashes = row_hashes64(frame)
    assert len(set(hashes.tolist())) == 4
    assert (row_hashes64(frame[["b", "a"]]) != hashes).any()


def test_text_holding_a_nul_hashes_as_itself() -> None:
    """pandas' factorize reads text up to a NUL (``"Ann"`` and ``"Ann\\x00"`` become one
    value, and the second takes the first's hash); each hashes as itself here."""
    column = pd.Series(["Ann", "Ann\x00", "Ann\x00x"], dtype=object)
    hashes = row_hashes64(column)
    assert len(set(hashes.tolist())) == 3
    alone = pd.Series(["Ann\x00x"], dtype=object)  # no partner to take the hash of
    assert row_hashes64(alone)[0] == pd.util.hash_pandas_object(alone, index=False)[0]
    assert row_hashes64(alone)[0] == hashes[2]
