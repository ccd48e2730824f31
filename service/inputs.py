"""Request bodies that are not JSON numbers: ``.npy`` arrays, base64 images and multipart forms.

Each raises ``BadRequest`` (400) for bytes that cannot be parsed and ``InvalidInput`` (422) for
parsed content that cannot be used, with a message that says which.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
import tokenize

import numpy as np
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData, State

from shared.preprocess import format_by_signature

from .errors import BadRequest, InvalidInput, PayloadTooLarge, as_sentence, fewer_vectors

NPY_HEADER_LIMIT = 10_000
# What str.split() splits on (no character above U+3000 is whitespace), which base64 text may hold: line breaks
# above all. Deleted with str.translate: "".join(text.split()) made an object of each piece between two, 1.7 GB
# for the 63 MiB of {"images": ["AB AB AB ..."]}, past the memory compose gives the whole service.
WHITESPACE = dict.fromkeys(code for code in range(0x3001) if chr(code).isspace())
FORM_STEP = 64 * 1024  # bytes of a form the decoder takes at a time
# A part's headers are held until its blank line and kept as objects of ~220 bytes a line: 3 million lines (24 MB)
# took a worker 654 MB. A client writes two or three; Gunicorn takes at most 100 header fields in a request.
MAX_PART_HEADER_BYTES = 64 * 1024
MAX_PART_HEADER_LINES = 100
# .npy format version -> (struct format of its header length, numpy's header reader)
NPY_HEADER_READERS = {(1, 0): ("<H", np.lib.format.read_array_header_1_0),
                      (2, 0): ("<I", np.lib.format.read_array_header_2_0)}


def read_npy(body: bytes, settings) -> np.ndarray:
    """A ``.npy`` file's bytes -> its array, without copying the data (``allow_pickle`` never).

    The header is checked first: object arrays are refused and ``settings.max_vector_values`` is
    enforced before any data is touched."""
    # The header comes first and is short; BytesIO would copy a bytearray body whole (30 MB).
    stream = io.BytesIO(bytes(memoryview(body)[:NPY_HEADER_LIMIT + 16]))
    try:
        version = np.lib.format.read_magic(stream)
        if version not in NPY_HEADER_READERS:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (use 1.0 or 2.0)")
        length_format, read_header = NPY_HEADER_READERS[version]
        if len(body) >= stream.tell() + struct.calcsize(length_format):
            declared, = struct.unpack_from(length_format, body, stream.tell())
            if declared > NPY_HEADER_LIMIT:
                raise BadRequest(f"The .npy header is {declared} bytes long; at most {NPY_HEADER_LIMIT} are accepted "
                                 "(numpy.save writes a header of about a hundred bytes).", code="malformed_npy")
        shape, fortran_order, dtype = read_header(stream, max_header_size=NPY_HEADER_LIMIT)
    except tokenize.TokenError:  # numpy reads the header's Python literal with tokenize first
        raise BadRequest("The body is not a readable .npy file: its header has an unclosed bracket; write the "
                         "array with numpy.save.", code="malformed_npy") from None
    except (RecursionError, MemoryError):  # ast.literal_eval on a literal nested thousands deep
        raise BadRequest("The body is not a readable .npy file: its header is nested too deeply to be the dictionary "
                         "of plain values that numpy.save writes.", code="malformed_npy") from None
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        if str(e).startswith("malformed node or string"):  # ast.literal_eval's words for code in the header
            e = "its header holds code, not the dictionary of plain values that numpy.save writes"
        elif str(e).startswith("the magic string is not correct") and (stored_as := _stored_as(body)):
            e = stored_as
        raise BadRequest(as_sentence(f"The body is not a readable .npy file: {e}"), code="malformed_npy") from None
    if any(type(size) is not int for size in shape):  # numpy lets booleans through: (True, 11)
        raise BadRequest(f"The .npy header's shape {list(shape)} must hold whole numbers.", code="malformed_npy")
    if any(size < 0 for size in shape):
        raise BadRequest(f"The .npy header's shape {list(shape)} has a negative dimension.", code="malformed_npy")
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "iuf":
        raise InvalidInput(f"The .npy array holds {dtype}; send real numbers (float32 is fastest).",
                           code="invalid_npy_dtype")
    count = math.prod(shape)
    if count > (max_values := settings.max_vector_values):
        raise PayloadTooLarge(f"The .npy array holds {count} numbers; the limit is {max_values} per request: "
                              f"{fewer_vectors(settings, shape[-1] if len(shape) == 2 else count)}.",
                              code="too_many_values")
    offset = stream.tell()
    expected = count * dtype.itemsize
    if len(body) - offset != expected:
        raise BadRequest(f"The .npy body has {len(body) - offset} bytes of data; its header {list(shape)} "
                         f"{dtype} needs {expected}.", code="malformed_npy")
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    try:
        return array.reshape(shape, order="F" if fortran_order else "C")
    except ValueError as e:  # a shape numpy cannot make: over 64 dimensions, or one over 2**63 beside a 0
        raise BadRequest(f"The .npy header's shape {list(shape)} cannot be made into an array: {e}.",
                         code="malformed_npy") from None


def _stored_as(body: bytes) -> str | None:
    """What a body sent as ``.npy`` is instead, and how to send it, when its first bytes tell."""
    if body[:4] == b"PK\x03\x04":
        return ("it is a zip archive, such as numpy.savez writes: send one array as numpy.save writes it "
                "(np.save(f, batch)) instead of an .npz")
    if image_format := format_by_signature(body):
        return f"it is a {image_format} image: send it with Content-Type image/{image_format.lower()}"
    if bytes(body[:1]) in (b"{", b"["):
        return "it looks like JSON: send it with Content-Type application/json"
    return None


def decode_base64_image(text: str, index: int, where: str | None = None) -> bytes:
    """One base64 image (a ``data:image/...;base64,`` URL prefix is accepted) -> its bytes. Errors
    name it ``where`` (by default ``images[<index>]``, the native API's field)."""
    where = where or f"images[{index}]"
    if not isinstance(text, str):
        raise InvalidInput(f"{where} must be a base64 string.", code="invalid_base64", details=[{"image": index}])
    if text[:5].lower() == "data:":  # URL schemes are case-insensitive, and so is ;base64
        header, _, text = text.partition(",")
        if not header.lower().endswith(";base64"):
            raise BadRequest(f"{where} is a data URL without ';base64'.", code="invalid_base64",
                             details=[{"image": index}])
    # The standard alphabet, or the URL-safe one (TF Serving clients often send it), padding optional.
    cleaned = text.translate(WHITESPACE).replace("-", "+").replace("_", "/")
    if len(cleaned.rstrip("=")) % 4 == 1:  # no padding completes that: a character lost or one too many
        raise BadRequest(f"{where} is not valid base64: its length is one character over a whole number of "
                         "4-character groups, so it was cut or has a stray character.", code="invalid_base64",
                         details=[{"image": index}])
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        data = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where} is not valid base64.", code="invalid_base64",
                         details=[{"image": index}]) from None
    if not data:
        raise InvalidInput(f"{where} is empty.", code="invalid_base64", details=[{"image": index}])
    return data


class PartHeadersTooLarge(Exception):
    """A part of a form has more header lines or bytes than MAX_PART_HEADER_LINES or MAX_PART_HEADER_BYTES."""


class FormDecoder(MultipartDecoder):
    """werkzeug's multipart decoder, which gave up on the whole form over one part header that is
    not UTF-8 (a file name in a legacy encoding: curl sends the name's bytes as they are); such a
    header is read as Latin-1 instead. A part's headers are held to MAX_PART_HEADER_BYTES and
    MAX_PART_HEADER_LINES."""

    def next_event(self):
        event = super().next_event()
        if self.state == State.PART and isinstance(event, NeedData) and len(self.buffer) > MAX_PART_HEADER_BYTES:
            raise PartHeadersTooLarge  # no blank line yet: all of it is headers
        return event

    def _parse_headers(self, data):
        if len(data) > MAX_PART_HEADER_BYTES or len(data.splitlines()) > MAX_PART_HEADER_LINES:
            raise PartHeadersTooLarge
        try:
            return super()._parse_headers(data)
        except UnicodeDecodeError:
            return super()._parse_headers(bytes(data).decode("latin-1").encode())


def is_file(part: Field | File) -> bool:
    """A file part: it has a file name, or a Content-Type that is not text (the file name is optional,
    RFC 7578 section 4.2, and clients such as aiohttp leave it out; a part without a Content-Type
    is text/plain)."""
    if isinstance(part, File):
        return True
    content_type = part.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    return bool(content_type) and not content_type.startswith("text/")


def read_form(body: bytes, boundary: str, *, max_parts: int,
              max_field_bytes: int) -> tuple[list[bytes], dict[str, list[str]]]:
    """A ``multipart/form-data`` body -> (the files' contents, ``{name: [text, ...]}`` of its other
    fields, each value of a repeated field in order)."""
    try:
        decoder = FormDecoder(boundary.encode("latin-1"), max_parts=max_parts)
    except UnicodeEncodeError:
        raise BadRequest(f"The multipart boundary {boundary!r} is not ASCII.", code="malformed_multipart") from None
    too_large = PayloadTooLarge(f"The form is too large: at most {max_parts} parts (files and fields) and "
                                f"{max_field_bytes} bytes per text field; send fewer files per request, or the "
                                "pictures as files, not text fields.", code="form_too_large")
    delimiter = b"--" + boundary.encode("latin-1")
    # The decoder finds the first delimiter with a pattern that starts with an optional line break, which the
    # regular expression engine tries at every byte (about 0.15 s a MB: a 64 MiB body without one kept a thread
    # busy for 12 s); one that starts with the delimiter itself is found as fast as bytes.find finds it. What
    # comes before it is the preamble, which the decoder skips.
    opening = re.compile(re.escape(delimiter) + rb"(?:--|[^\S\n\r]*(?:\r\n|\n|\r))").search(body)
    if opening is None:
        raise BadRequest(f"The body holds no part of a multipart form with the boundary {boundary!r} of its "
                         "Content-Type.", code="malformed_multipart")
    view = memoryview(body)[opening.start():]
    pieces = [view[start:start + FORM_STEP] for start in range(0, len(view), FORM_STEP)]
    parts: list[tuple[Field | File, io.BytesIO]] = []
    try:
        # In steps, as werkzeug feeds it: given the whole body, the decoder would copy all of it.
        for piece in [*pieces, None]:  # None: the end
            decoder.receive_data(piece)
            while not isinstance(event := decoder.next_event(), (NeedData, Epilogue)):
                if isinstance(event, Data):
                    parts[-1][1].write(event.data)
                elif isinstance(event, (Field, File)):
                    parts.append((event, io.BytesIO()))
    except RequestEntityTooLarge:
        raise too_large from None
    except PartHeadersTooLarge:
        raise PayloadTooLarge(f"Part {len(parts) + 1} of the form has too many headers: at most "
                              f"{MAX_PART_HEADER_LINES} lines and {MAX_PART_HEADER_BYTES} bytes; send the form as an "
                              "HTTP client builds it (curl -F file=@digit.png).", code="form_too_large") from None
    except ValueError as e:
        if "Content-Disposition" in str(e):
            raise BadRequest(f"Part {len(parts) + 1} of the form has no Content-Disposition header; send the form "
                             "as an HTTP client builds it (curl -F file=@digit.png).",
                             code="malformed_multipart") from None
        if not parts:
            # The boundary opens a part, but werkzeug found no headers after it ending in a blank line.
            raise BadRequest("Part 1 of the form has no headers, or they are cut off: each part needs a "
                             "Content-Disposition header and a blank line after its headers; send the form as an "
                             "HTTP client builds it (curl -F file=@digit.png).", code="malformed_multipart") from None
        raise BadRequest(f"The form ends without its closing boundary --{boundary}--: the body is cut off or "
                         "malformed.", code="malformed_multipart") from None
    files, fields = [], {}
    for part, content in parts:
        if is_file(part):
            files.append(content.getvalue())  # BytesIO hands over its buffer: no copy
        elif content.tell() > max_field_bytes:
            raise too_large
        else:
            fields.setdefault(part.name or "", []).append(content.getvalue().decode("utf-8", "replace"))
    return files, fields
