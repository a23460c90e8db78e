"""Arrow arrays and scalars built from Python values without pyarrow importing pandas.

How it works:
- `pa.array(...)` and `pa.scalar(...)` ask pyarrow's pandas shim whether the input is a pandas
  object, and the shim imports pandas to answer: 0.5-1.5 s of start-up here, paid by `check`
  and before `pack` writes its first shard byte, for a library neither uses.
- `int_array` wraps the bytes of a stdlib `array.array` as the Arrow buffer instead (no nulls,
  native byte order, which is Arrow's little-endian on every platform pyarrow ships for);
  `column` adds strings (offsets + UTF-8 data) and a validity bitmap for None; scalars
  (`int_scalar`, `null_scalar`, `FALSE`) are taken from such arrays. Compute calls
  given a plain Python literal (`pc.greater(x, 1)`) convert it with `pa.scalar`: pass these.
"""

from __future__ import annotations

import array
import itertools
import sys
from collections.abc import Iterable, Sequence

import pyarrow as pa

# Arrow type -> stdlib array typecode of the same width.
_CODES = {pa.int8(): "b", pa.int16(): "h", pa.int32(): "i", pa.int64(): "q"}
INT64 = pa.int64()


def int_array(values: Iterable[int], typ: pa.DataType = INT64) -> pa.Array:
    """`pa.array(list(values), typ)` for non-null integers, without importing pandas."""
    data = array.array(_CODES[typ], values)
    if sys.byteorder != "little":
        data.byteswap()
    return pa.Array.from_buffers(typ, len(data), [None, pa.py_buffer(data)])


def column(values: Sequence[int | str | bytes | None], typ: pa.DataType) -> pa.Array:
    """`pa.array(values, typ)` for integers, strings or bytes, None as null, without pandas."""
    n = len(values)
    validity = None
    if None in values:
        bits = bytearray((n + 7) // 8)
        for i, value in enumerate(values):
            if value is not None:
                bits[i >> 3] |= 1 << (i & 7)
        validity = pa.py_buffer(bits)
    if pa.types.is_string(typ) or pa.types.is_binary(typ):
        data = [b"" if v is None else v if isinstance(v, bytes) else v.encode("utf-8")
                for v in values]  # type: ignore[union-attr]
        offsets = array.array("i", [0])
        offsets.extend(itertools.accumulate(map(len, data)))
        if sys.byteorder != "little":
            offsets.byteswap()
        buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
        return pa.Array.from_buffers(typ, n, buffers)
    ints = int_array((0 if v is None else v for v in values), typ)  # type: ignore[misc]
    return pa.Array.from_buffers(typ, n, [validity, ints.buffers()[1]])


def int_scalar(value: int, typ: pa.DataType = INT64) -> pa.Scalar:
    """`pa.scalar(value, typ)`: compute functions given a plain int would convert it that way."""
    return int_array([value], typ)[0]


def null_scalar(typ: pa.DataType) -> pa.Scalar:
    """`pa.scalar(None, typ)` without importing pandas."""
    return pa.nulls(1, typ)[0]


FALSE = pa.Array.from_buffers(pa.bool_(), 1, [None, pa.py_buffer(b"\0")])[0]
