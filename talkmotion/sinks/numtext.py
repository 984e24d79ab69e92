"""Numbers as text for the text writers, a block of rows at a time instead of one Python call per value.

The characters are exactly Python's: `fixed` gives f"{v:.{d}f}" and `rounded_repr`
gives repr(round(v, d)), the numbers the CSV and JSON writers wrote value by
value before. Each value becomes an integer count of 10^-d first, rounded half
to even as Python rounds (x * 10^d is exact for float32 values; the rare float64
value within rounding error of a tie is rounded by Python itself); the text is
then built from digits in a byte matrix, one row per value, padded with NUL
bytes that `join` drops.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

PAD = 0                           # a byte no number contains: padding, dropped when rows are joined
ZERO, DOT, MINUS = ord("0"), ord("."), ord("-")
LARGEST = 1e15                    # beyond this, Python's repr switches to exponents: formatted by Python
TIE_TOLERANCE = 4e-16             # relative error of x * 10^d in float64, for spotting near-ties


def _counts(x: np.ndarray, decimals: int, exact: bool) -> np.ndarray:
    """|x| in units of 10^-decimals, rounded half to even as Python's formatting rounds.

    exact: x came from float32 values, so x * 10^d has no rounding error and rint is
    Python's rounding; otherwise values within rounding error of a tie ask Python.
    """
    scaled = np.abs(x) * 10.0 ** decimals
    counts = np.rint(scaled)
    if not exact:
        near_tie = np.abs(scaled - np.floor(scaled) - 0.5) <= TIE_TOLERANCE * scaled
        for k in np.flatnonzero(near_tie):
            counts[k] = int(f"{abs(float(x[k])):.{decimals}f}".replace(".", ""))
    return counts.astype(np.int32 if counts.max(initial=0) < 2 ** 31 else np.int64)


@lru_cache(maxsize=None)
def _kept_decimals(decimals: int) -> np.ndarray:
    """For every fraction 0 .. 10^d - 1: the decimals repr keeps (trailing zeros dropped, one kept)."""
    frac = np.arange(10 ** decimals)
    trailing = sum((frac % 10 ** k == 0).astype(np.int8) for k in range(1, decimals))
    return np.where(frac == 0, 1, decimals - trailing).astype(np.int8)


def _number_text(x: np.ndarray, counts: np.ndarray, decimals: int, keep: np.ndarray | None) -> np.ndarray:
    """(N, W) text: sign, integer part, '.', the first keep[i] decimals (all without keep); PAD elsewhere.

    Built a character position at a time over all values (rows of a (W, N) matrix),
    which keeps every numpy operation on contiguous memory.
    """
    whole, frac = np.divmod(counts, 10 ** decimals)
    width = len(str(int(whole.max(initial=0))))
    text = np.empty((1 + width + 1 + decimals, x.size), np.uint8)
    text[0] = np.where(np.signbit(x), MINUS, PAD)
    length = 1 + sum((whole >= 10 ** k).astype(np.int8) for k in range(1, width))   # digits before the point
    rest = whole
    for j in range(width, 0, -1):                    # integer digits, last first; leading zeros blank
        rest, digit = np.divmod(rest, 10)
        text[j] = np.where(width - j < length, digit + ZERO, PAD)
    text[1 + width] = DOT
    rest = frac
    for k in range(decimals - 1, -1, -1):            # decimals, last first
        rest, digit = np.divmod(rest, 10)
        text[2 + width + k] = digit + ZERO if keep is None else np.where(k < keep, digit + ZERO, PAD)
    return text.T


def fixed(values: np.ndarray, decimals: int) -> np.ndarray:
    """f"{v:.{decimals}f}" of every value (finite), as a (N, W) byte matrix padded with PAD."""
    values = np.asarray(values)
    x = values.astype(np.float64).reshape(-1)
    if x.size and np.abs(x).max() >= LARGEST:
        return _python_text([f"{v:.{decimals}f}" for v in x.tolist()])
    return _number_text(x, _counts(x, decimals, values.dtype == np.float32), decimals, None)


def rounded_repr(values: np.ndarray, decimals: int) -> np.ndarray:
    """repr(round(v, decimals)) of every value (finite), as a (N, W) byte matrix padded with PAD.

    repr writes the shortest decimal that reads back as the same float: for a
    rounded value that is its digits without trailing zeros (one kept after the
    point), switching to an exponent below 1e-4 ("1e-05").
    """
    values = np.asarray(values)
    x = values.astype(np.float64).reshape(-1)
    if x.size and np.abs(x).max() >= LARGEST:
        return _python_text([repr(round(v, decimals)) for v in x.tolist()])
    counts = _counts(x, decimals, values.dtype == np.float32)
    text = _number_text(x, counts, decimals, _kept_decimals(decimals)[counts % 10 ** decimals])
    tiny = (counts > 0) & (counts < 10 ** max(decimals - 4, 0))
    if tiny.any():                                   # e.g. 3e-05: too small for repr's fixed notation
        text = _with_exponents(text, x, counts, decimals, tiny)
    return text


def _with_exponents(text: np.ndarray, x: np.ndarray, counts: np.ndarray, decimals: int,
                    tiny: np.ndarray) -> np.ndarray:
    """Rows of `tiny` rewritten as repr writes them: "3e-05" (a digit, 'e-', the exponent in two digits)."""
    if counts[tiny].max() >= 10:                     # several digits ("1.5e-06"): rare, Python writes them
        rows = _python_text([repr(round(float(v), decimals)) for v in x[tiny]])
    else:
        exponent = np.frombuffer(f"e-{decimals:02d}".encode(), np.uint8)
        rows = np.empty((int(tiny.sum()), 2 + exponent.size), np.uint8)
        rows[:, 0] = np.where(np.signbit(x[tiny]), MINUS, PAD)
        rows[:, 1] = counts[tiny] + ZERO
        rows[:, 2:] = exponent
    widest = max(text.shape[1], rows.shape[1])
    out = np.zeros((text.shape[0], widest), np.uint8)
    out[:, :text.shape[1]] = text
    out[tiny, :rows.shape[1]] = rows
    out[tiny, rows.shape[1]:] = PAD
    return out


def integers(n: np.ndarray, width: int) -> np.ndarray:
    """f"{n:0{width}d}" of non-negative integers (wider where a number needs it), as a (N, W) byte matrix
    padded with PAD."""
    n = np.asarray(n, np.int64).reshape(-1)
    widest = max(width, len(str(int(n.max(initial=0)))))
    length = np.maximum(width, 1 + sum((n >= 10 ** k).astype(np.int8) for k in range(1, widest)))
    text = np.empty((widest, n.size), np.uint8)
    rest = n
    for j in range(widest - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        text[j] = np.where(widest - j <= length, digit + ZERO, PAD)
    return text.T


def literal(text: str, rows: int) -> np.ndarray:
    """The same text on every row, as a (rows, len(text)) byte matrix."""
    return np.broadcast_to(np.frombuffer(text.encode("ascii"), np.uint8), (rows, len(text)))


def _python_text(strings: list[str], width: int | None = None) -> np.ndarray:
    """Strings → (N, width) byte matrix padded with PAD."""
    width = width or max((len(s) for s in strings), default=1)
    out = np.zeros((len(strings), width), np.uint8)
    for i, s in enumerate(strings):
        out[i, :len(s)] = np.frombuffer(s.encode("ascii"), np.uint8)
    return out


def join(fields: np.ndarray, columns: int, separator: bytes, row_start: bytes = b"", row_end: bytes = b"\n",
         first_columns: list[np.ndarray] | None = None) -> bytes:
    """Byte-matrix fields, `columns` per row, as text: row_start, fields between separators, row_end.

    first_columns: byte matrices of one field per row put before the others (a time column).
    """
    rows = fields.shape[0] // columns if columns else 0
    cells = fields.reshape(rows, columns, -1)
    if first_columns:
        width = max(cells.shape[2], *(c.shape[1] for c in first_columns))
        cells = np.concatenate([_widen(c, width)[:, None] for c in first_columns] + [_widen(cells, width)], axis=1)
    count, width = cells.shape[1], cells.shape[2]
    sep = np.frombuffer(separator, np.uint8)
    gap = np.zeros((rows, count, len(sep)), np.uint8)
    gap[:, :-1] = sep
    start = np.broadcast_to(np.frombuffer(row_start, np.uint8), (rows, len(row_start)))
    end = np.broadcast_to(np.frombuffer(row_end, np.uint8), (rows, len(row_end)))
    body = np.concatenate([cells, gap], axis=2).reshape(rows, count * (width + len(sep)))
    flat = np.concatenate([start, body, end], axis=1).reshape(-1)
    return flat[flat != PAD].tobytes()


def _widen(cells: np.ndarray, width: int) -> np.ndarray:
    pad = width - cells.shape[-1]
    return cells if pad == 0 else np.concatenate([cells, np.zeros((*cells.shape[:-1], pad), np.uint8)], -1)
