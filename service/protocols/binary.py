"""The V2 binary tensor data extension and HTTP compression, as plain functions.

A binary body is a JSON header followed by the raw bytes of tensors, in the order the header
lists them; the ``Inference-Header-Content-Length`` header gives the JSON part's length and each
binary tensor's ``parameters.binary_data_size`` its byte count. Numbers are little-endian and
row-major; a BYTES tensor is its elements one after the other, each a 4-byte little-endian
length followed by that many bytes.

Bodies may be compressed (``Content-Encoding: gzip`` or ``deflate`` on a request,
``Accept-Encoding`` asking for one of them on a response); a compressed request is inflated
with the same size limit as a plain body, so a small bomb cannot blow up in memory.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib

import numpy as np

from shared.text import counted

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, byte_count, send_less

HEADER_LENGTH = "Inference-Header-Content-Length"
ENCODINGS = ("gzip", "deflate")
ALIASES = {"x-gzip": "gzip"}  # RFC 9110 section 8.4.1.3: a recipient takes x-gzip as gzip

DTYPES = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPES = tuple(DTYPES) + ("BYTES",)
_LENGTH = struct.Struct("<I")


# BYTES tensors ---------------------------------------------------------------------------------


def encode_bytes(items: list[bytes]) -> bytes:
    """Elements -> the binary form of a BYTES tensor."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def decode_bytes(raw: bytes | memoryview, what: str, most: int) -> list[bytes]:
    """The binary form of a BYTES tensor -> its elements, of which its shape holds ``most``; ``what``
    names the tensor in errors. Bytes left after the last element the shape holds are refused there:
    read on, 60 MB of empty elements for a tensor of shape [1] took 15 s to count."""
    raw = memoryview(raw)
    items, offset = [], 0
    while offset < len(raw):
        if len(items) == most:
            raise BadRequest(f"{what} holds more than the {counted(most, 'element')} its shape needs: "
                             f"{len(raw) - offset} bytes follow the last.", code="unexpected_size")
        if offset + 4 > len(raw):
            raise BadRequest(f"{what} ends inside the 4-byte length of element {len(items)}.", code="malformed_tensor")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"Element {len(items)} of {what} announces {length} bytes but only "
                             f"{len(raw) - offset} remain.", code="malformed_tensor")
        items.append(bytes(raw[offset:offset + length]))
        offset += length
    return items


# request bodies --------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """``(JSON header, binary part)`` of a body; without ``header_length`` it is all JSON."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view):]
    text = header_length.strip()
    # ASCII digits only (str.isdigit also takes '²'), and few enough for int(): any body length fits in 18.
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or int(text) > len(view):
        raise BadRequest(f"{HEADER_LENGTH} is {header_length!r}; it must be the length in bytes of the JSON part "
                         f"of the {len(view)}-byte body.", code="malformed_header_length")
    size = int(text)
    if size == 0 and len(view):  # Triton reads 0 as a raw binary request (one unnamed input), not taken here
        raise BadRequest(f"{HEADER_LENGTH} is 0, but the JSON part of the body cannot be empty: give its length in "
                         "bytes, or leave the header out when the whole body is JSON.", code="malformed_header_length")
    return view[:size], view[size:]


class BinaryChunks:
    """Hands out consecutive slices of the binary part of a body, one per binary tensor."""

    def __init__(self, data: memoryview, json_length: int | None = None):
        self.data = data
        self.json_length = json_length  # as the header gave it; None: no header, the body is all JSON
        self.offset = 0

    def take(self, size: int, what: str) -> memoryview:
        if self.offset + size > len(self.data):
            if not len(self.data) and self.json_length is None:
                raise BadRequest(f"{what} has binary_data_size {size}, but the body has no binary part: send the "
                                 f"length of its JSON part in the {HEADER_LENGTH} header.", code="malformed_tensor")
            if not len(self.data):
                raise BadRequest(f"{what} has binary_data_size {size}, but the body ends with its {self.json_length}-"
                                 f"byte JSON part ({HEADER_LENGTH}): its binary data is missing.",
                                 code="malformed_tensor")
            raise BadRequest(f"{what} has binary_data_size {size} but only {len(self.data) - self.offset} bytes of "
                             "binary data remain in the body.", code="malformed_tensor")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def check_used(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise BadRequest(f"The body has {left} bytes of binary data that no input claims (check the "
                             "binary_data_size parameters).", code="malformed_tensor")


# compression -----------------------------------------------------------------------------------


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes | bytearray:
    """A request body decoded per its ``Content-Encoding`` (gzip, deflate or none), at most ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    encoding = ALIASES.get(encoding, encoding)
    if encoding not in ENCODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {encoding} is not supported; use gzip, deflate or none.",
                                   code="unsupported_encoding", headers={"Accept-Encoding": ", ".join(ENCODINGS)})
    # gzip: its own header; deflate: the zlib format HTTP means by it, or a bare deflate stream.
    attempts = (16 + zlib.MAX_WBITS,) if encoding == "gzip" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for wbits in attempts:
        try:
            return _inflate(body, encoding, wbits, limit)
        except zlib.error:
            continue
    raise BadRequest(f"The body is not valid {encoding} data.", code="malformed_encoding")


INFLATE_CHUNK = 1 << 14  # input handed to zlib at once: what it sets aside after a stream's end stays small
MAX_GZIP_MEMBERS = 10_000  # a 64 MiB body of bgzip's 64 KiB blocks has about 1,030
_NOT_ZERO = re.compile(rb"[^\0]")


def _inflate(body: bytes, encoding: str, wbits: int, limit: int) -> bytearray:
    """The data ``body`` compresses, at most ``limit`` bytes; zlib.error when it is not compressed
    that way. A gzip body is a series of members (RFC 1952 section 2.2, as gunzip reads it), which
    zero bytes may pad; anything else after the compressed data is refused, not dropped."""
    view = memoryview(body)
    data, offset, members = bytearray(), 0, 0
    while True:
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if offset == len(view):
                raise zlib.error("the compressed data ends early")
            chunk = view[offset:offset + INFLATE_CHUNK]
            offset += len(chunk)
            data += inflater.decompress(chunk, limit - len(data) + 1)
            if len(data) > limit:
                raise PayloadTooLarge(f"The request body inflates to more than the limit of {byte_count(limit)}: "
                                      f"{send_less('')}.", code="payload_too_large")
        offset -= len(inflater.unused_data)
        members += 1
        if encoding == "gzip":
            found = _NOT_ZERO.search(body, offset)
            offset = found.start() if found else len(view)
        if offset == len(view):
            return data
        if encoding != "gzip" or view[offset:offset + 2] != b"\x1f\x8b":
            raise BadRequest(f"The body is not valid {encoding} data: {len(view) - offset} bytes follow the end of "
                             "its compressed data.", code="malformed_encoding")
        if members == MAX_GZIP_MEMBERS:
            raise BadRequest(f"The gzip body has more than {MAX_GZIP_MEMBERS:,} members; compress it as one stream.",
                             code="malformed_encoding")


def compress(body: bytes, encoding: str) -> bytes:
    # Level 1: most of the gain for a fraction of the time; responses are mostly numbers.
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=1)
    return zlib.compress(body, 1)
