"""Prediction responses as JSON bytes, built with whole-array NumPy operations.

A 10,000-row batch would cost tens of milliseconds as Python dicts through ``json.dumps``; here
every row is assembled as a row of a byte matrix instead. Each piece of a row (a label's
prefix, a formatted probability, punctuation) is a fixed-width column padded with zero bytes,
the columns are concatenated, and the zero bytes are dropped in one pass at the end. A zero
byte never occurs in JSON text, whose control characters are escaped, so it is a safe marker.
"""

from __future__ import annotations

import json

import numpy as np

DECIMALS = 6  # probabilities are written with at most 6 decimals: 0.993121


def _table(strings: list[bytes]) -> np.ndarray:
    """Strings as the rows of a (len(strings), longest) uint8 matrix, zero-padded."""
    width = max(len(s) for s in strings)
    table = np.zeros((len(strings), width), dtype=np.uint8)
    for i, s in enumerate(strings):
        table[i, :len(s)] = np.frombuffer(s, dtype=np.uint8)
    return table


def _constant(text: bytes, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text, dtype=np.uint8), (n, len(text)))


def _decimal_tables() -> tuple[np.ndarray, np.ndarray]:
    """Text of a probability's integer part and first three decimals (bytes 0-4 of 8), with
    trailing zeros ([0]) and without ([1], keeping one: ``0.5``, ``1.0``), and of its last three
    decimals without trailing zeros (bytes 5-7; no text at all for ``000``). Each text is eight
    zero-padded bytes read as one uint64, so a probability's text is one OR of two lookups."""
    full = [f"{h / 1000:.3f}" for h in range(1001)]
    short = [t.rstrip("0") + ("0" if t.rstrip("0").endswith(".") else "") for t in full]
    tail = [f"{low:03d}".rstrip("0") for low in range(1000)]
    heads = np.zeros((2, 1001, 8), dtype=np.uint8)
    heads[0, :, :5], heads[1, :, :5] = _table([t.encode() for t in full]), _table([t.encode() for t in short])
    tails = np.zeros((1000, 8), dtype=np.uint8)
    tails[:, 5:] = _table([t.encode() for t in tail])
    return heads.view(np.uint64)[..., 0], tails.view(np.uint64)[:, 0]


_HEADS, _TAILS = _decimal_tables()


def _probabilities(p: np.ndarray) -> np.ndarray:
    """Probabilities of shape (n,) -> (n, 8) uint8 text such as ``0.993121``, ``0.5``, ``1.0``."""
    q = np.rint(np.clip(p.astype(np.float64), 0.0, 1.0) * 10 ** DECIMALS).astype(np.int64)
    head, low = np.divmod(q, 1000)
    text = _HEADS[(low == 0).view(np.int8), head] | _TAILS[low]
    return text.view(np.uint8).reshape(len(q), 8)


def _json_string(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode("utf-8")


INFINITY_BITS = 0x7F800000  # float32 +inf read as an integer


def _ranked(probabilities: np.ndarray, ranked: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``ranked`` class indices by falling probability, ties to the lower index,
    and their probabilities: ``(order, values)``, both of shape (n, ranked).

    Float32 probabilities are sorted as int64 keys: the float's bits (which order as the numbers
    do, from +0 up) taken from infinity's, so that the larger sorts first, above the class index.
    NumPy sorts rows of integers about 3x faster than it argsorts rows of floats (0.6 ms against
    1.8 on 10,000 rows of 10), and as every key is unique the sort need not be stable. This holds
    for values from +0 up, as a softmax's are (and the forward pass refuses NaN): -0, a negative
    number or NaN would sort out of the numbers' order."""
    if probabilities.dtype != np.float32:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :ranked]
        return order, np.take_along_axis(probabilities, order, axis=1)
    classes = probabilities.shape[1]
    shift = max(classes - 1, 1).bit_length()
    keys = probabilities.view(np.int32).astype(np.int64)
    np.subtract(INFINITY_BITS, keys, out=keys)
    keys <<= shift
    keys |= np.arange(classes)
    keys = np.sort(keys, axis=1)[:, :ranked]
    values = (INFINITY_BITS - (keys >> shift)).astype(np.int32).view(np.float32)
    return keys & ((1 << shift) - 1), values


def classification_rows(probabilities: np.ndarray, labels: list[str], top_k: int) -> bytes:
    """``[{"label", "index", "confidence", "top_k": [{"label", "probability"}...]}, ...]`` as JSON bytes.

    ``probabilities``: (n, classes). ``top_k`` 0 leaves the ``top_k`` list out. Ties go to the
    lower class index, as ``argmax`` does.
    """
    n, classes = probabilities.shape
    if n == 0:
        return b"[]"
    ranked = max(top_k, 1)
    order, values = _ranked(probabilities, ranked)
    # Every probability written, formatted in one call: the confidence is the first of each row.
    texts = _probabilities(values.ravel()).reshape(n, ranked, 8)
    heads = _table([b'{"label":' + _json_string(label) + b',"index":' + str(i).encode() + b',"confidence":'
                    for i, label in enumerate(labels)])
    pieces = [heads[order[:, 0]], texts[:, 0]]
    if top_k:
        entries = _table([b'{"label":' + _json_string(label) + b',"probability":' for label in labels])
        pieces.append(_constant(b',"top_k":[', n))
        for j in range(top_k):
            pieces += [entries[order[:, j]], texts[:, j], _constant(b"}," if j < top_k - 1 else b"}]", n)]
    pieces.append(_constant(b"},", n))
    body = np.concatenate(pieces, axis=1).tobytes().replace(b"\0", b"")
    return b"".join((b"[", memoryview(body)[:-1], b"]"))  # one copy: the last row's comma dropped


def regression_rows(values: np.ndarray) -> bytes:
    """``[{"value": v}, ...]``, each value the float32 the model computed: 9 significant digits read back
    as exactly that float32 (7 did not), at C speed (NumPy's shortest text of each took twice as long)."""
    return ("[" + ",".join(['{"value":%.9g}' % v for v in values.astype(np.float64).tolist()]) + "]").encode()


def prediction_response(name: str, version: int, rows: bytes) -> bytes:
    head = b'{"model":{"name":' + _json_string(name) + b',"version":' + str(int(version)).encode() + b'},"predictions":'
    return b"".join((head, rows, b"}"))  # the rows (1.6 MB for 10,000 of them) copied once
