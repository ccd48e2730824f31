"""Turn what users send into the network's input vectors (SPEC §4), the same way for the trainer
and the service. Images become 784 floats in [0, 1], light ink on a dark field like MNIST; numeric
vectors are checked and returned as float32 batches. Normalisation (mean/std) is not applied here.

An image goes through one pipeline whatever its format or mode:

1. decode: only PNG, JPEG, WEBP, BMP, GIF (first frame) and TIFF; the declared pixel count is
   checked against ``max_pixels`` (and, for a batch, the images' total against
   ``max_total_pixels``) before any pixel is decoded; EXIF orientation is applied.
2. grey: luminance in [0, 1] (1 = white) with transparency composited on white; 16-bit and
   32-bit images are scaled to [0, 1], never clipped. Large images are box-reduced to a working
   size of at most ``2 * WORKING_SIDE`` on their longer side, a strip far wider than tall (or
   taller than wide) only as far as keeps ``STRIP_SIDE`` px of its short side, within as many
   pixels as a square image keeps.
3. ink and fit (shared/ink.py): the paper is told from the ink, what is not the item is set
   aside, and the item is fitted into the field as the model's dataset has it.
"""
import binascii
import io
import itertools
import math
import numbers
import re
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pyspng
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import ImageTooLarge, InvalidInput, ScratchnetError, TooManyPixels, UnsupportedImage
from shared.ink import Zoom, grey_to_vector
from shared.text import shortened

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
# How files in the accepted formats begin, to tell one that cannot be read (a damaged header, a pixel
# layout Pillow does not decode) from a file in another format. BMP's two letters prove too little.
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "TIFF", b"MM\x00+": "TIFF"}
DEFAULT_MAX_PIXELS = 40_000_000
SHRINK = "crop or shrink the picture and send it again"  # what to do about an image over the pixel limit
# An image whose longer side is under this many pixels that shows no item is too small to show one (an
# icon, a thumbnail, a placeholder); told so, not that its ink is too faint.
TINY_SIDE = 8
FITS = ("digit", "garment")
# Images of twice this side or more are box-reduced by an integer factor first: a digit needs
# far fewer pixels than a canvas or a photo has (MNIST's are 20 px), and every later step is
# cheaper on fewer pixels.
WORKING_SIDE = 128
# A strip (10000x28: a digit at the end of a long scan) reduced by its longer side alone becomes a
# row or two, each pixel the mean of a whole column of it, where the digit's ink fades below the
# contrast of a blank image: its short side keeps this many pixels, as far as the working pixels allow.
STRIP_SIDE = 32
BITS_PER_SAMPLE, SAMPLE_FORMAT = 258, 339  # TIFF tags
# Float pixels up to this are 0..1 (resampling overshoots 1 a little); beyond, 0..255 or wider. A
# picture in 0..255 whose values all stay below it would be blank anyway: under 1 % contrast.
UNIT_OVERSHOOT = 2.0
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"
# libjpeg goes over every block of the image in each scan, however few bytes the scan is: a progressive
# JPEG repeating a scan of a few bytes costs a thousand decodes in 150 kB. Encoders write about 10 scans
# (libjpeg's progressive photo) to 18 (its CMYK), and 64 scans of the largest picture cost about 0.1 s.
MAX_JPEG_SCANS = 64
# Pillow reads a PNG's chunks one at a time in Python, keeping each private one: 2 million empty chunks
# (24 MB) took 5 s and 250 MB. Files keep a few chunks of metadata, and their pixels in chunks of 8 kB
# or more (libpng's), about 8,000 in a body of the largest size.
MAX_PNG_METADATA_CHUNKS = 1_000
MAX_PNG_PIXEL_CHUNKS = 100_000
# Pillow makes a Python object of each strip or tile of a TIFF as it opens it, and decodes each on its own:
# a 1x1,000,000 TIFF of a strip a row (8 MB, every strip the same bytes) took 5.6 s and 293 MB. A strip is
# a row or more, a tile 16x16 or more, so a TIFF may have one for every TIFF_PIXELS_PER_PART pixels (and
# MIN_TIFF_PARTS in any case): what they cost grows with the pixels that a request may declare.
TIFF_PIXELS_PER_PART = 256
MIN_TIFF_PARTS = 256
TIFF_WIDTH, TIFF_HEIGHT, TIFF_STRIP_OFFSETS, TIFF_TILE_OFFSETS = 256, 257, 273, 324
# Pillow reads a TIFF's directory (and an EXIF block's, which is one) an entry at a time in Python: 65,000
# entries (780 kB) took 1.8 s. Cameras and scanners write a few dozen.
MAX_DIRECTORY_ENTRIES = 1_000
# Pillow reads a GIF's extensions before its first image a block of at most 255 bytes at a time in Python,
# keeping each block of a comment: 1 million comments of a byte (5 MB) took 187 MB. A loop count, a
# comment, an ICC profile or XMP take a few blocks to a few thousand.
MAX_GIF_METADATA_BLOCKS = 10_000
# A picture whose lightest pixel is at most this share of white is nearly black throughout; 12-bit
# samples read as 16-bit stay below 4095 / 65535 = 6.25 %.
NEARLY_BLACK = 0.0625
# Blocks walked to find whether a GIF has a second image (only to word a refusal): the first image's own
# blocks of pixels (255 bytes each, 16,000 in 4 MB) and the extensions after it; ~20 ms.
MAX_GIF_WALK_BLOCKS = 200_000


# --------------------------------------------------------------------------- public API


def image_to_vector(data: bytes, preprocessing: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> ndarray of shape (h*w,), float32 in [0, 1], light ink on dark.

    Raises UnsupportedImage (not a decodable image in an accepted format), ImageTooLarge (more
    than ``max_pixels`` declared) or InvalidInput (no bytes, or no ink found)."""
    size, fit = parse_image_spec(preprocessing)
    return _image_vector(data, size, fit, max_pixels, None)


def images_to_batch(images: list[bytes], preprocessing: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                    max_total_pixels: int | None = None, item_name: str = "image {}",
                    before_decode: Callable[[int], None] | None = None) -> np.ndarray:
    """Several encoded images -> ndarray of shape (n, h*w); an error names the image (0-based) as
    ``item_name.format(index)``, so a protocol can name it the way its request does. With
    ``max_total_pixels``, the images together may declare at most that many pixels
    (TooManyPixels, raised before the image that would exceed it is decoded). ``before_decode`` is
    called with the pixels each decode is about to make (fewer than declared where the decoder
    reduces as it decodes), so that a server can bound the memory of the decodes it runs at once."""
    if len(images) == 0:
        raise InvalidInput("no images given: send at least one image")
    budget = PixelBudget(max_total_pixels) if max_total_pixels is not None else None
    return _to_batch(images, lambda data, size, fit: _image_vector(data, size, fit, max_pixels, budget, before_decode),
                     preprocessing, item_name, "image")


class PixelBudget:
    """The pixels the images of one request may still declare, all together."""

    def __init__(self, limit: int):
        self.limit = self.left = limit

    def spend(self, size: tuple[int, int]) -> None:
        pixels = size[0] * size[1]
        if pixels > self.left:
            raise TooManyPixels(f"the images of one request may declare at most {self.limit:,} pixels in all, "
                                f"and this one ({size[0]}x{size[1]}) brings them over it: send fewer or smaller "
                                "images per request")
        self.left -= pixels


def arrays_to_batch(arrays: list, preprocessing: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                    max_total_pixels: int | None = None, item_name: str = "pixel array {}") -> np.ndarray:
    """Several raw pixel tensors (as :func:`array_to_vector` takes them) -> ndarray of shape
    (n, h*w), within the same pixel limits as ``images_to_batch``; an error names the array as
    ``images_to_batch`` names an image."""
    budget = PixelBudget(max_total_pixels) if max_total_pixels is not None else None
    return _to_batch(arrays, lambda pixels, size, fit: _vector_of(
        _array_to_grey(pixels, size, max_pixels, budget), None, size, fit), preprocessing, item_name, "pixels")


def _to_batch(items: list, to_vector, preprocessing: dict, item_name: str, key: str) -> np.ndarray:
    """``to_vector(item, size, fit)`` (the model's input vector) of each item, one row each; an error in
    one of several items is prefixed with ``item_name.format(index)`` and detailed as ``{key: index}``."""
    size, fit = parse_image_spec(preprocessing)
    batch = np.empty((len(items), size[0] * size[1]), dtype=np.float32)
    for i, item in enumerate(items):
        try:
            batch[i] = to_vector(item, size, fit)
        except ScratchnetError as err:
            if len(items) == 1:
                raise
            raise type(err)(f"{item_name.format(i)}: {err.message}", [{key: i}, *err.details]) from err
    return batch


def _image_vector(data: bytes, size: tuple[int, int], fit: str, max_pixels: int, budget: PixelBudget | None,
                  before_decode: Callable[[int], None] | None = None) -> np.ndarray:
    """An encoded image's input vector. Where no item is found, the error says why when the picture
    tells: a few pixels cannot show one, and of an animation or a TIFF of several pages only the
    first frame is read, which may be the blank one."""
    grey, zoom = _decoded_with_zoom(data, max_pixels, budget, before_decode)
    try:
        return _vector_of(grey, zoom, size, fit)
    except InvalidInput as err:
        if max(grey.shape) < TINY_SIDE:
            raise InvalidInput(f"the image is only {grey.shape[1]}x{grey.shape[0]} pixels, too few to show a digit "
                               "or a garment: send the picture at its full size", err.details) from err
        if not _has_several_frames(data):
            raise
        raise InvalidInput(f"{err.message}. The picture is an animation or has several pages, and only its first "
                           "frame (or page) is read: save the one with the item on it as a picture of its own",
                           err.details) from err


def _vector_of(grey: np.ndarray, zoom, size: tuple[int, int], fit: str) -> np.ndarray:
    """``grey_to_vector``; where no item is found in a picture dark throughout, the error says so: 10- or
    12-bit samples stored as 16-bit (a camera's or a scanner's raw values) read as nearly black."""
    try:
        return grey_to_vector(grey, zoom, size=size, fit=fit)
    except InvalidInput as err:
        lightest = float(grey.max())
        if lightest > NEARLY_BLACK or lightest == float(grey.min()):  # a uniform field is blank, whatever its shade
            raise
        raise InvalidInput(f"{err.message}. The picture is nearly black throughout (its lightest pixel is "
                           f"{lightest:.1%} of white): if its values are 10- or 12-bit samples stored as 16-bit "
                           "(up to 1023 or 4095 of 65535), scale them to the full range (x64 or x16) or to 0..255; "
                           "else, brighten it", err.details) from err


def array_to_vector(pixels: np.ndarray, preprocessing: dict) -> np.ndarray:
    """A raw pixel tensor -> ndarray of shape (h*w,), through the same pipeline as an image.

    ``pixels``: (H, W), (H, W, C) with C in 1..4 (grey, grey+alpha, RGB, RGBA), size-1 leading
    axes, or a flat array of ``h*w`` values for the field size. uint8 counts 0..255, uint16
    0..65535, floats 0..1 (or 0..255); either polarity."""
    size, fit = parse_image_spec(preprocessing)
    return _vector_of(_array_to_grey(pixels, size), None, size, fit)


def _batch_over(n: int, max_batch: int) -> str:
    return f"batch has {n} vectors; the limit is {max_batch}: split it into batches of at most {max_batch}"


def validate_vectors(values, input_size: int, *, what: str = "model", max_batch: int | None = None,
                     known_finite: bool = False) -> np.ndarray:
    """One vector or a list of vectors -> float32 ndarray of shape (n, input_size), C-contiguous.

    Raises InvalidInput naming the position of the first problem: wrong length, a value that is
    not a number (string, boolean, null), NaN or Infinity, ragged or too-deep nesting, an empty
    batch, more than ``max_batch`` vectors. ``known_finite``: the caller has read every value
    already (``float32_within``), so a float32 array is not read again."""
    if isinstance(values, (list, tuple)) and max_batch is not None and len(values) > max_batch:
        if values and _is_sequence(values[0]):
            raise InvalidInput(_batch_over(len(values), max_batch))
    array = _fast_numeric_array(values)
    if array is None:
        _explain_vectors(values, input_size, what)
        raise InvalidInput("expected a vector of numbers or a list of vectors")  # not reached
    if array.ndim == 1 and array.size == 0:
        raise InvalidInput(f"no input: send a vector of {input_size} numbers or a list of such vectors")
    if array.ndim == 1:
        array = array[np.newaxis]
    if array.ndim != 2:
        raise InvalidInput(f"expected a vector or a list of vectors; got {array.ndim} levels of nesting (shape "
                           f"{list(array.shape)}): send each vector as one flat list of {input_size} numbers")
    n, length = array.shape
    if n == 0:
        raise InvalidInput(f"no input: send a vector of {input_size} numbers or a list of such vectors")
    if max_batch is not None and n > max_batch:
        raise InvalidInput(_batch_over(n, max_batch))
    if length != input_size:
        where = "vector" if n == 1 else "every vector"
        raise InvalidInput(f"{where} has {_values(length)}; {what} expects {input_size}")
    if array.dtype.kind == "f" and not (known_finite and array.dtype == np.float32) and not _all_finite(array):
        row, col = np.argwhere(~np.isfinite(array))[0]
        raise InvalidInput(f"value at {_position(row, col, n)} is {_non_finite_name(array[row, col])}; values must be finite numbers")
    if array.dtype == np.float32:
        return np.ascontiguousarray(array)  # checked finite above
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(array, dtype=np.float32)
    if not _all_finite(out):
        row, col = np.argwhere(~np.isfinite(out))[0]
        raise InvalidInput(f"value at {_position(row, col, n)} ({array[row, col]}) is too large for float32; send "
                           f"values within ±{FLOAT32_MAX:.3g}")
    return out


# --------------------------------------------------------------------------- vectors


def float32_within(values, high: float) -> bool:
    """Whether ``values`` is a float32 array whose every value lies from +0 to ``high`` (finite,
    then), read in one pass that allocates nothing. Read as unsigned integers, float32 bit
    patterns from +0 up keep the order of the numbers they stand for, and every negative number
    (-0 included), infinity and NaN reads as more than any finite positive one. False says only
    that the full checks must decide."""
    if not isinstance(values, np.ndarray) or values.dtype != np.float32 or values.size == 0:
        return False
    bound = np.float32(high)
    if float(bound) > high:  # rounded up to the nearest float32: the one below is the largest within
        bound = np.nextafter(bound, np.float32(0))
    return int(values.view(np.uint32).max()) <= int(bound.view(np.uint32))


def _all_finite(array: np.ndarray) -> bool:
    """Whether no value is NaN or infinite, read in two passes that allocate nothing: NaN carries
    through min and max, and an infinity is one of them. ``np.isfinite(array).all()`` built a
    boolean copy of the array first (7.8 MB for a 10,000-row batch, fresh pages every time)."""
    return array.size == 0 or bool(np.isfinite(array.min()) and np.isfinite(array.max()))


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _fast_numeric_array(values) -> np.ndarray | None:
    """``values`` as an int or float ndarray when it plainly is one, else None (explain why)."""
    if not _is_sequence(values) or (not isinstance(values, np.ndarray) and holds_any(values, TEXT_AND_TRUTH)):
        return None  # NumPy would turn True into 1, and numbers beside a string into strings
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind not in "iuf":
        return None
    return array


TEXT = frozenset((str, bytes))
TEXT_AND_TRUTH = TEXT | {bool}
MAX_DIMENSIONS = 64  # NumPy's
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the network computes in float32


def holds_any(values, types: frozenset, depth: int = 1) -> bool:
    """Whether nested lists hold a value of one of ``types``, or nest deeper than NumPy's arrays
    (MAX_DIMENSIONS), read before NumPy reads them. Beside numbers, NumPy turns True into 1, and one
    string into an array of strings as long as it of every value: 2.4 GB for 77 characters in a batch
    of 10,000 vectors, and a MemoryError for a longer one."""
    if len(values) and isinstance(values[0], (list, tuple)):
        return depth >= MAX_DIMENSIONS or any(
            holds_any(row, types, depth + 1) if isinstance(row, (list, tuple)) else type(row) in types
            for row in values)
    return not types.isdisjoint(map(type, values))


def _explain_vectors(values, input_size: int, what: str) -> None:
    """Walk ``values`` in Python and raise InvalidInput for the first problem found."""
    if isinstance(values, np.ndarray):
        kind = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes", "O": "objects"}
        raise InvalidInput(f"values must be real numbers; the array holds {kind.get(values.dtype.kind, values.dtype)}")
    if not _is_sequence(values):
        raise InvalidInput(f"expected a list of numbers, got {json_type_name(values)}")
    if len(values) == 0:
        raise InvalidInput(f"no input: send a vector of {input_size} numbers or a list of such vectors")
    nested = [_is_sequence(v) for v in values]
    if any(nested) and not all(nested):
        first_number = nested.index(False)
        raise InvalidInput(f"mixes numbers and lists: item {first_number} is {json_type_name(values[first_number])} "
                           "but other items are lists; send one vector or a list of vectors")
    rows = values if all(nested) else [values]
    n = len(rows)
    for i, row in enumerate(rows):
        if len(row) == input_size and _plain_numbers(row):
            continue  # nothing to explain in it, found at C speed: a whole batch took 9 s to walk value by value
        for j, value in enumerate(row):
            if _is_sequence(value):
                raise InvalidInput(f"value at {_position(i, j, n)} is a list; expected a vector or a list of vectors, not deeper nesting")
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidInput(f"value at {_position(i, j, n)} is {json_type_name(value)}, not a number")
            try:
                finite = math.isfinite(value)
            except OverflowError:
                finite = False
            if not finite:
                raise InvalidInput(f"value at {_position(i, j, n)} is {_non_finite_name(value)}; values must be finite numbers")
        if len(row) != input_size:
            where = "vector" if n == 1 else f"vector {i}"
            raise InvalidInput(f"{where} has {_values(len(row))}; {what} expects {input_size}")


def _plain_numbers(row) -> bool:
    """Whether ``row`` holds finite ints and floats alone (a boolean is no such int)."""
    try:
        return PLAIN_NUMBERS.issuperset(map(type, row)) and all(map(math.isfinite, row))
    except (OverflowError, TypeError):  # an int past a float's range; a list among them
        return False


PLAIN_NUMBERS = frozenset((int, float))


def _values(count: int) -> str:
    return "1 value" if count == 1 else f"{count} values"


def _position(row: int, col: int, n_rows: int) -> str:
    return f"position {col}" if n_rows == 1 else f"vector {row}, position {col}"


def _non_finite_name(value) -> str:
    try:
        value = float(value)
    except OverflowError:
        return "too large"
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def json_type_name(value) -> str:
    """What ``value``, parsed from JSON, is in JSON's words: 'null', 'a number (7)', 'an array'..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({shortened(value, 20)!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, float) or (isinstance(value, int) and abs(value) < 10**20):
        return f"a number ({value})"
    if isinstance(value, (int, np.number)):
        return "a number"
    kind = type(value).__name__
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


# --------------------------------------------------------------------------- decoding


def parse_image_spec(preprocessing: dict) -> tuple[tuple[int, int], str]:
    """The manifest's preprocessing spec -> ((height, width), fit); ValueError says what is wrong
    with a bad one (shared.model_file refuses such a model)."""
    if not isinstance(preprocessing, dict) or preprocessing.get("type", "image") != "image":
        raise ValueError(f"not an image preprocessing spec: {preprocessing!r}")
    size = preprocessing.get("size", [28, 28])
    fit = preprocessing.get("fit", "digit")
    polarity = preprocessing.get("polarity", "light_on_dark")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 4 <= s <= 1024 for s in size)):
        raise ValueError(f"preprocessing size must be [height, width] of ints in 4..1024, got {size!r}")
    if fit not in FITS:
        raise ValueError(f"preprocessing fit must be one of {', '.join(FITS)}, got {fit!r}")
    if polarity != "light_on_dark":
        raise ValueError(f"preprocessing polarity must be 'light_on_dark', got {polarity!r}")
    return (size[0], size[1]), fit


def decode_grey(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, budget: PixelBudget | None = None) -> np.ndarray:
    """Encoded image -> luminance, float32 ndarray (H, W) in [0, 1], 1 = white.

    EXIF orientation applied, transparency composited on white, reduced to the working size.
    The declared size is checked against ``max_pixels`` and spent from ``budget`` before decoding."""
    return _decode(data, max_pixels, budget)[0]


def _decode(data: bytes, max_pixels: int, budget: PixelBudget | None,
            region: tuple[float, float, float, float] | None = None,
            before_decode: Callable[[int], None] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_grey`, and the image's declared size (width, height). ``region`` (top, bottom,
    left, right as fractions of the upright image): only that part, decoded at full size before its
    reduction (a zoom, see shared.ink.grey_to_vector). ``before_decode``: see images_to_batch."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InvalidInput("the image is empty (0 bytes)")
    image_format = ""
    stored_as = format_by_signature(data)
    if stored_as == "PNG":
        _check_png_chunks(data)
    elif stored_as == "TIFF":
        _check_tiff_parts(data)
    elif stored_as == "GIF":
        _check_gif_blocks(data)
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            image_format, declared = image.format or image_format, image.size
            _check_pixels(declared, max_pixels)
            if budget is not None:
                budget.spend(declared)
            if image.format in ("JPEG", "MPO"):
                _check_jpeg_scans(data)
            part = 1.0 if region is None else _region_part(region, declared)
            upright = _upright(_loaded(image, data, part, before_decode), image.format)
            if region is not None:
                upright = upright.crop(_pixel_box(region, upright.size))
            return _image_to_grey(upright, _unsigned_read_as_signed(image)), declared
    except UnidentifiedImageError as err:
        raise _unidentified_image_error(data, stored_as) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own guard fires inside Image.open, before ours, for sizes far above the usual
        # limits (its warning is an exception only where warnings are errors): the same refusal.
        declared = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(declared[1]):,} pixels" if declared else "more pixels than can be decoded safely"
        raise ImageTooLarge(f"the image declares {pixels}; the limit is {max_pixels:,} pixels: {SHRINK}") from err
    except ScratchnetError:
        raise
    except Exception as err:  # noqa: BLE001 - anything a decoder raises on untrusted bytes means "undecodable"
        # a WebP cut short fails in Image.open, before its format is set
        raise _undecodable_image_error(err, image_format or stored_as) from err


def _unidentified_image_error(data: bytes, stored_as: str | None) -> UnsupportedImage:
    """Why Pillow found no image in ``data`` (``stored_as``: the accepted format its signature says, if any)."""
    if stored_as:
        return UnsupportedImage(f"the {stored_as} image could not be decoded: its header is damaged, or it stores "
                                "its pixels in a way that cannot be read (such as 16-bit grey with alpha, or "
                                "floating-point colour); save it as an 8-bit PNG or JPEG")
    accepted = ", ".join(ACCEPTED_FORMATS)
    encoded = _base64_image_format(data)
    if encoded:
        return UnsupportedImage(f"the data is the base64 text of a {encoded} image, not the image itself: decode "
                                "it and send the bytes it stands for")
    other = other_format_by_signature(data)
    if other:
        return UnsupportedImage(f"the data is {other}, in none of the accepted formats ({accepted}): "
                                "convert it to PNG or JPEG")
    return UnsupportedImage(f"the data is not an image in an accepted format ({accepted}): send a picture saved "
                            "as one of them, such as a PNG or JPEG file")


def _undecodable_image_error(err: Exception, image_format: str | None) -> UnsupportedImage:
    """What a decoder's ``err`` on an image of ``image_format`` (empty or None: not known) tells the client."""
    if "MAX_TEXT_CHUNK" in str(err):  # Pillow's words, which name its internals and no way out
        return UnsupportedImage("the PNG holds a text chunk of metadata that inflates past 1 MB, which is not "
                                "read: save the image again without its metadata")
    what = f"the {image_format} image" if image_format else "the image"
    return UnsupportedImage(f"{what} could not be decoded, the file may be truncated or corrupt: "
                            f"{err or type(err).__name__}; save or download it again, and send the whole file")


def _loaded(image: Image.Image, data: bytes, part: float = 1.0,
            before_decode: Callable[[int], None] | None = None) -> Image.Image:
    """``image`` decoded, reduced while decoded where the format can (so that ``part`` of its
    longer side, the whole by default, still spans the working size), or, for a JPEG that lacks
    only its end-of-image marker (some cameras write none; an upload can be cut by the marker's
    two bytes), the decode of ``data`` with the marker put back."""
    if image.info.get("default_image") and image.format == "PNG" and image.n_frames > 1:
        # An APNG whose default image is not one of its frames: that image is for viewers without
        # animation, and browsers show the animation's first frame, the picture the user saw.
        image.seek(1)
    _request_reduced_decode(image, part)
    if before_decode is not None:
        before_decode(image.size[0] * image.size[1])
    _match_colour_key(image)
    with_alpha = _bmp_with_alpha(image, data)
    if with_alpha is not None:
        return with_alpha
    by_libspng = _plain_png_by_libspng(image, data)
    if by_libspng is not None:
        return by_libspng
    try:
        image.load()
        return image
    except OSError:
        whole = _jpeg_lacking_only_its_end(image, data)
        if whole is None:
            raise
        return whole


def _bmp_with_alpha(image: Image.Image, data: bytes) -> Image.Image | None:
    """A 32-bit BMP's pixels with the fourth byte of each as its alpha, when any of those bytes is not
    0. The format calls the byte reserved and Pillow drops it, but Pillow writes an RGBA image's alpha
    there, and browsers show it as alpha unless it is 0 throughout (an opaque image, byte left 0)."""
    if image.format != "BMP" or image.info.get("compression") != 0 or len(image.tile) != 1:
        return None
    codec, _, offset, (raw_mode, stride, direction) = image.tile[0]
    if codec != "raw" or raw_mode != "BGRX" or len(data) < offset + stride * image.size[1]:
        return None  # not 32-bit, or truncated: Pillow's decode says so
    pixels = Image.frombuffer("RGBA", image.size, memoryview(data)[offset:], "raw", "BGRA", stride, direction)
    return pixels if pixels.getextrema()[3][1] > 0 else None


JPEG_EOI = b"\xff\xd9"
# Bytes that are never a marker (no 0xFF), put where a scan cut short would go on: its decode
# changes with them, while a complete scan's decode skips them.
_SCAN_FILLERS = [bytes(np.random.default_rng(seed).integers(0, 0xFF, 256, dtype=np.uint8)) for seed in (0, 1)]


# Chunks after the pixels that Pillow's decode would read into ``info``, where EXIF orientation is looked for.
_PNG_METADATA_CHUNKS = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")
# libspng holds the GIL while it decodes, where Pillow's decoder lets the worker's other threads run: a PNG
# larger than a big canvas (1200x1200) is Pillow's, or a 4000x4000 screenshot would hold them up 130 ms.
LIBSPNG_MAX_PIXELS = 1 << 21


def _plain_png_by_libspng(image: Image.Image, data: bytes) -> Image.Image | None:
    """An 8-bit RGB or RGBA PNG of one frame, of at most LIBSPNG_MAX_PIXELS, not interlaced, without a
    colour key, EXIF or metadata after its pixels (what a browser canvas exports), decoded by libspng:
    the same pixels as Pillow's decoder, in half the time (Pillow inflates with the system's zlib).
    None for any other PNG, or one libspng refuses: Pillow decodes those, and says what is wrong with a
    broken one. (libspng's image has no ``info``: an EXIF orientation read before the pixels would be lost.)"""
    data = bytes(data)
    if (image.format != "PNG" or image.mode not in ("RGB", "RGBA") or len(image.tile) != 1
            or image.size[0] * image.size[1] > LIBSPNG_MAX_PIXELS
            or image.tile[0].args != image.mode or "transparency" in image.info or _has_exif(image)
            or image.n_frames != 1 or image.info.get("interlace")
            or not _plain_chunks_to_the_end(data, image.tile[0].offset - 8)):
        return None
    try:
        pixels = pyspng.load(data, image.mode)
    except Exception:  # noqa: BLE001 - anything libspng refuses goes to Pillow, which names the fault
        return None
    return Image.fromarray(pixels) if pixels.shape[1::-1] == image.size else None


def _plain_chunks_to_the_end(data: bytes, start: int) -> bool:
    """Whether the PNG chunks from ``start`` (the first with pixels) to the end of ``data`` match their
    CRCs, hold no metadata Pillow would read, and end with an empty IEND chunk, the last bytes. pyspng has
    libspng skip the CRCs, and libspng reads the last row without the zlib stream's checksum: bytes damaged
    on the way would be read as pixels, where Pillow's inflate finds the damage. (0.07 ms for a canvas of
    300 kB.)"""
    while start + 12 <= len(data):
        length = int.from_bytes(data[start:start + 4], "big")
        kind, end = data[start + 4:start + 8], start + 8 + length
        if (end + 4 > len(data) or kind in _PNG_METADATA_CHUNKS
                or zlib.crc32(data[start + 4:end]) != int.from_bytes(data[end:end + 4], "big")):
            return False
        if kind == b"IEND":
            return length == 0 and end + 4 == len(data)
        start = end + 4
    return False


def _check_png_chunks(data: bytes) -> None:
    """Refuse a PNG of more than MAX_PNG_METADATA_CHUNKS chunks besides its pixel data (its header
    counted), or more than MAX_PNG_PIXEL_CHUNKS of pixel data, among those Pillow reads: up to the end,
    or to the second frame of an animation. Only their lengths and names are read."""
    pos, metadata, pixels = 8, 0, 0
    while pos + 8 <= len(data):
        kind = bytes(data[pos + 4:pos + 8])
        if kind == b"IEND" or (kind == b"fcTL" and pixels):
            return
        if kind == b"IDAT":
            pixels += 1
        else:
            metadata += 1
        if metadata > MAX_PNG_METADATA_CHUNKS:
            raise ImageTooLarge(f"the PNG has more than {MAX_PNG_METADATA_CHUNKS:,} chunks of metadata, each read on "
                                "its own (an ordinary PNG has a few): save it again without them")
        if pixels > MAX_PNG_PIXEL_CHUNKS:
            raise ImageTooLarge(f"the PNG has its pixels in more than {MAX_PNG_PIXEL_CHUNKS:,} chunks, each read on "
                                "its own (an ordinary PNG has them in chunks of 8 kB or more): save it again")
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")


def _check_tiff_parts(data: bytes) -> None:
    """Refuse a TIFF whose first image is in more strips or tiles than TIFF_PIXELS_PER_PART and
    MIN_TIFF_PARTS allow, counted in its first directory before Pillow opens it. A directory that
    cannot be read is left to Pillow, which says what is wrong with it."""
    directory = _first_directory(data)
    if directory is None:
        return
    order, big, start, count = directory
    _check_directory_entries(count, "the TIFF's")
    try:
        first = start + (8 if big else 2)
        entries = bytes(data[first:first + count * (20 if big else 12)])
        fields = {}
        for tag, kind, values, value in struct.iter_unpack(order + ("HHQ8s" if big else "HHI4s"), entries):
            if tag in (TIFF_WIDTH, TIFF_HEIGHT):
                fields[tag] = struct.unpack_from(order + {3: "H", 16: "Q"}.get(kind, "I"), value)[0]
            elif tag in (TIFF_STRIP_OFFSETS, TIFF_TILE_OFFSETS):
                fields[tag] = values
    except struct.error:
        return
    width, height = fields.get(TIFF_WIDTH, 0), fields.get(TIFF_HEIGHT, 0)
    parts = fields.get(TIFF_TILE_OFFSETS, fields.get(TIFF_STRIP_OFFSETS, 0))
    most = max(MIN_TIFF_PARTS, width * height // TIFF_PIXELS_PER_PART)
    if parts > most:
        raise ImageTooLarge(f"the TIFF stores its {width}x{height} pixels in {parts:,} strips or tiles, each read "
                            f"on its own, and at most {most:,} are read (one for every {TIFF_PIXELS_PER_PART} "
                            "pixels): save it again with larger strips, or as PNG")


def _first_directory(tiff: bytes) -> tuple[str, bool, int, int] | None:
    """A TIFF header's byte order (``<`` or ``>``), whether it is a BigTIFF's (8-byte counts and
    offsets), and its first directory's offset and number of entries; None where they cannot be read."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    big = tiff[2:4] in (b"+\x00", b"\x00+")
    if order is None:
        return None
    try:
        start = struct.unpack_from(order + ("Q" if big else "I"), tiff, 8 if big else 4)[0]
        return order, big, start, struct.unpack_from(order + ("Q" if big else "H"), tiff, start)[0]
    except struct.error:
        return None


def _check_directory_entries(count: int, whose: str) -> None:
    if count > MAX_DIRECTORY_ENTRIES:
        raise ImageTooLarge(f"{whose} first directory of tags has {count:,} entries, each read on its own, and at "
                            f"most {MAX_DIRECTORY_ENTRIES:,} are read (a camera writes a few dozen): save the image "
                            "again without its metadata")


def _check_exif_entries(exif: bytes) -> None:
    """Refuse an EXIF block (a TIFF header and directories, after ``Exif\\0\\0`` in some formats) whose
    first directory has more than MAX_DIRECTORY_ENTRIES entries."""
    directory = _first_directory(exif[6:] if exif[:6] == b"Exif\x00\x00" else exif)
    if directory is not None:  # unreadable EXIF is left to Pillow, and then ignored
        _check_directory_entries(directory[3], "the EXIF block's")


def _check_gif_blocks(data: bytes) -> None:
    """Refuse a GIF of more than MAX_GIF_METADATA_BLOCKS extensions and blocks of them before its first
    image, counted before Pillow reads them."""
    pos, blocks = _gif_after_screen(data), 0
    while pos + 1 < len(data) and data[pos] == 0x21:
        pos += 2  # the introducer and the label, then blocks up to an empty one
        while True:
            blocks += 1
            if blocks > MAX_GIF_METADATA_BLOCKS:
                raise ImageTooLarge(f"the GIF has more than {MAX_GIF_METADATA_BLOCKS:,} extensions and blocks of "
                                    "them before its first image, each read on its own (an ordinary GIF has a few): "
                                    "save it again without them")
            if pos >= len(data) or not data[pos]:
                break
            pos += 1 + data[pos]
        pos += 1


def _gif_after_screen(data: bytes) -> int:
    """Where a GIF's first block begins: after its header, logical screen and global colour table."""
    return 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)


def _has_several_frames(data: bytes) -> bool:
    """Whether the image in ``data`` has more than one frame: an animated GIF, PNG or WebP (an APNG's
    default image outside its animation not counted), or a TIFF of several pages. Read from headers."""
    if format_by_signature(data) == "GIF":
        return _gif_has_second_image(data)
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            if image.format == "TIFF":
                return image.is_animated  # whether a second directory follows: n_frames would read them all
            return getattr(image, "n_frames", 1) - bool(image.info.get("default_image")) > 1
    except Exception:  # noqa: BLE001 - it decoded before; a header read again that fails says nothing more
        return False


def _gif_has_second_image(data: bytes) -> bool:
    """Whether a GIF has a second image after its first, found by walking its blocks (MAX_GIF_WALK_BLOCKS
    at most: past those, no); a cut or malformed block stream has none."""
    pos, images, blocks = _gif_after_screen(data), 0, 0
    while pos < len(data) and blocks < MAX_GIF_WALK_BLOCKS:
        if data[pos] == 0x2C:  # an image: its descriptor, its local colour table, its LZW code size
            images += 1
            if images == 2:
                return True
            flags = data[pos + 9] if pos + 9 < len(data) else 0
            pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        elif data[pos] == 0x21:  # an extension: its introducer and label
            pos += 2
        else:
            return False  # the trailer, or bytes that are no block
        while pos < len(data) and data[pos] and blocks < MAX_GIF_WALK_BLOCKS:  # data blocks up to an empty one
            blocks += 1
            pos += 1 + data[pos]
        pos += 1
    return False


def _jpeg_lacking_only_its_end(image: Image.Image, data: bytes) -> Image.Image | None:
    """The decode of ``data`` with its end-of-image marker put back, when all it lacks is the marker:
    its data ends in the last of its scans, which is whole. None when more is missing."""
    scans = bytes(data).rstrip(b"\xff")  # a marker's first byte, or fill bytes before it
    if image.format not in ("JPEG", "MPO") or scans.endswith(JPEG_EOI) or not _ends_in_its_last_scan(scans):
        return None
    try:
        whole = _decoded_jpeg(scans + JPEG_EOI)
        cut_short = any(whole.tobytes() != _decoded_jpeg(scans + filler + JPEG_EOI).tobytes()
                        for filler in _SCAN_FILLERS)
    except OSError:
        return None
    return None if cut_short else whole


def _decoded_jpeg(data: bytes) -> Image.Image:
    """``data`` decoded as ``decode_grey`` decodes a JPEG: reduced while decoded, if large."""
    image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    _request_reduced_decode(image)
    image.load()
    return image


_FRAME_MARKERS = (0xC0, 0xC1, 0xC2)  # Huffman-coded: baseline, extended, progressive
_MARKER_AFTER_SCAN = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")  # not a stuffed 0xFF, not a restart
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def _jpeg_segments(data: bytes):
    """Each marker segment of JPEG ``data``, as ``(marker, segment, after, to_the_end)``: its bytes after
    its length, where what follows it begins (a scan's coded data), and whether that scan's coded data
    runs to the end of ``data``. The walk stops at the end marker, at a segment cut short, and after a
    scan that runs to the end; a scan's coded data is passed over to the marker after it."""
    pos = 2 if data.startswith(b"\xff\xd8") else len(data)
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xD9:
            return
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # a fill byte, a marker without a length
            pos += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos + 4:pos + 2 + length]
        pos += 2 + length
        if length < 2 or len(segment) < length - 2:  # cut in a header
            return
        after = _MARKER_AFTER_SCAN.search(data, pos) if marker == 0xDA else None
        yield marker, segment, pos, marker == 0xDA and after is None
        if after is not None:
            pos = after.end() - 2


def _ends_in_its_last_scan(data: bytes) -> bool:
    """Whether JPEG ``data`` ends in the coded data of a scan that holds all its restart intervals
    and after which no scan is missing: every coefficient of every component has come at full
    precision (a progressive JPEG refines them over several scans)."""
    frame, restart_interval, done = None, 0, set()
    for marker, segment, pos, to_the_end in _jpeg_segments(data):
        if marker in _FRAME_MARKERS:
            frame = _frame(segment)
        elif marker == 0xDD:
            restart_interval = int.from_bytes(segment[:2], "big")
        elif marker == 0xDA:
            count = segment[0] if segment else 0
            components = list(segment[1:1 + 2 * count:2])
            if not frame or len(segment) < 4 + 2 * count or not set(components) <= frame["sampling"].keys():
                return False
            first, last, low_bit = segment[1 + 2 * count], segment[2 + 2 * count], segment[3 + 2 * count] & 0x0F
            if low_bit == 0:
                done |= {(c, k) for c in components for k in range(first, last + 1)}
            if to_the_end:
                intervals = math.ceil(_mcus(frame, components) / restart_interval) if restart_interval else 1
                # Counted up to one too many: a list of every marker in a flood of them took over 40 bytes each.
                restarts = sum(1 for _ in itertools.islice(_RESTART.finditer(data, pos), intervals))
                return restarts == intervals - 1 and done == {(c, k) for c in frame["sampling"] for k in range(64)}
    return False


def _check_jpeg_scans(data: bytes) -> None:
    """Refuse a JPEG of more than MAX_JPEG_SCANS scans (start-of-scan markers before its end marker),
    counted in its markers before any is decoded."""
    scans = (marker for marker, *_ in _jpeg_segments(data) if marker == 0xDA)
    if sum(1 for _ in itertools.islice(scans, MAX_JPEG_SCANS + 1)) > MAX_JPEG_SCANS:  # stops at the first too many
        raise ImageTooLarge(f"the JPEG has more than {MAX_JPEG_SCANS} scans, each of which is decoded over "
                            "the whole image (a progressive photo has about 10): save it again as an "
                            "ordinary JPEG")


def _frame(segment: bytes) -> dict | None:
    """A frame header's image size and the sampling factors of each component (by its id)."""
    if len(segment) < 6 or len(segment) < 6 + 3 * segment[5]:
        return None
    height, width, fields = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[6:]
    sampling = {fields[i]: (fields[i + 1] >> 4, fields[i + 1] & 0x0F) for i in range(0, 3 * segment[5], 3)}
    if not height or not width or not sampling or 0 in {factor for both in sampling.values() for factor in both}:
        return None  # no size (it comes later, in a DNL segment), or no component to decode
    return {"height": height, "width": width, "sampling": sampling}


def _mcus(frame: dict, components: list[int]) -> int:
    """How many MCUs a scan of ``components`` codes: the 8x8 blocks of one component, or the
    interleaved units of several."""
    h_max = max(h for h, _ in frame["sampling"].values())
    v_max = max(v for _, v in frame["sampling"].values())
    if len(components) == 1:
        h, v = frame["sampling"][components[0]]
        return (math.ceil(math.ceil(frame["width"] * h / h_max) / 8)
                * math.ceil(math.ceil(frame["height"] * v / v_max) / 8))
    return math.ceil(frame["width"] / (8 * h_max)) * math.ceil(frame["height"] / (8 * v_max))


def format_by_signature(data: bytes) -> str | None:
    """The accepted format ``data`` begins like, if any."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for signature, name in SIGNATURES.items() if head.startswith(signature)), None)


# Formats users' pictures often come in that are not accepted, by how their files begin, so that a refusal
# names the format to convert from rather than saying the data is no image. HEIF and AVIF files open with an
# ISO "ftyp" box whose brands say which.
OTHER_SIGNATURES = {b"\x00\x00\x01\x00": "an ICO icon", b"%PDF-": "a PDF document", b"8BPS": "a Photoshop (PSD) file",
                    b"\x00\x00\x00\x0cjP  \r\n\x87\n": "a JPEG 2000 image", b"\xffO\xffQ": "a JPEG 2000 image",
                    b"\x00\x00\x00\x0cJXL \r\n\x87\n": "a JPEG XL image"}
AVIF_BRANDS = {b"avif", b"avis"}
SVG_HEAD = 2048  # bytes of a file looked at for an <svg> element after a prologue
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def other_format_by_signature(data: bytes) -> str | None:
    """What ``data`` is, in words ("a HEIC photo"), when it begins like a file in a format not accepted."""
    head = bytes(data[:64])
    if head[4:8] == b"ftyp":
        box = head[8:min(len(head), int.from_bytes(head[:4], "big"))]
        brands = {box[i:i + 4] for i in range(0, len(box) - 3, 4)}  # the major one, a version, the compatible ones
        if brands & AVIF_BRANDS:
            return "an AVIF image"
        if brands & HEIF_BRANDS:
            return "a HEIC photo (an iPhone's default format)"
    if _is_svg(data):
        return "an SVG drawing"
    return next((name for signature, name in OTHER_SIGNATURES.items() if head.startswith(signature)), None)


def _base64_image_format(data: bytes) -> str | None:
    """The accepted format of the image whose base64 text (standard or URL-safe, or in a data: URL)
    ``data`` begins with, if it is one: a client that sent the text in place of the bytes."""
    text = bytes(data[:256]).lstrip()
    if text[:5].lower() == b"data:":
        text = text.partition(b",")[2]
    try:
        head = binascii.a2b_base64(text[:24].replace(b"-", b"+").replace(b"_", b"/"), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return format_by_signature(head)


def _is_svg(data: bytes) -> bool:
    """Whether ``data`` begins like an SVG file: its <svg> element first, or after an XML declaration,
    comments or a doctype (Inkscape and Illustrator write a few hundred bytes of those)."""
    text = bytes(data[:SVG_HEAD]).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in text)


def _upright(image: Image.Image, stored_as: str | None) -> Image.Image:
    """The image, decoded from a file in format ``stored_as``, turned as its EXIF orientation tag
    says; unreadable EXIF is ignored, since it is metadata and the pixels decoded fine. (``image``
    may be pixels decoded outside Pillow, which have no format: a PNG's by libspng, which never
    has EXIF, or a BMP's with its alpha.)"""
    if stored_as in ("PNG", "GIF", "BMP") and not _has_exif(image):
        return image  # no EXIF block to read (the usual case for these formats)
    if isinstance(image.info.get("exif"), bytes):
        _check_exif_entries(image.info["exif"])
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - any failure parsing untrusted metadata
        return image


def _has_exif(image: Image.Image) -> bool:
    """Whether Pillow has read an EXIF block of ``image`` into its ``info`` (a PNG's eXIf chunk, or
    ImageMagick's "Raw profile type exif" text, before its pixels)."""
    return any("exif" in key.lower() for key in image.info)


def _region_part(region: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """The longer side of ``region`` (fractions of the upright image) as a part of the longer side
    of an image of ``size``, as stored. A stored image may be turned a quarter (EXIF orientation 5
    to 8), its sides swapped: the smaller of the two readings, so that the region is never reduced
    below the working size."""
    top, bottom, left, right = region
    tall, wide = bottom - top, right - left
    width, height = size
    return min(max(tall * height, wide * width), max(tall * width, wide * height)) / max(size)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise UnsupportedImage(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} = {width * height:,} pixels; "
                            f"the limit is {max_pixels:,} pixels: {SHRINK}")


def _request_reduced_decode(image: Image.Image, part: float = 1.0) -> None:
    """Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding a large photo, as far as
    ``part`` of its longer side keeps the working size."""
    factor = _reduction_factor(image.size, part)
    if image.format in ("JPEG", "MPO") and factor >= 2:
        # At least a pixel a side: Pillow divides by the size asked for, which must not be 0.
        image.draft(None, (max(1, image.size[0] // factor), max(1, image.size[1] // factor)))


def _reduction_factor(size: tuple[int, int], part: float = 1.0) -> int:
    """The factor an image of ``size`` is box-reduced by (under 2: not at all): as far as ``part`` of its
    longer side keeps WORKING_SIDE px, and for a strip, its short side STRIP_SIDE px, unless that would
    leave it more pixels than a square image's working size has."""
    longer = int(part * max(size))
    shorter = min(*size, longer)
    factor = longer // WORKING_SIDE
    if shorter // STRIP_SIDE >= factor:
        return factor  # not a strip (at most 4 times as long as wide): the longer side decides
    return max(shorter // STRIP_SIDE, math.isqrt(longer * shorter) // (2 * WORKING_SIDE))


# PNG pixel layouts Pillow decodes to 8 bits, rescaling 2- and 4-bit grey and keeping the high byte
# of 16-bit RGB, while it leaves the tRNS colour key as stored: the key at the decoded depth.
_PNG_KEY_TO_8_BITS = {"L;2": lambda level: level * 85, "L;4": lambda level: level * 17,
                      "RGB;16B": lambda level: level >> 8}


def _match_colour_key(image: Image.Image) -> None:
    """Bring a PNG's colour key to the depth its pixels are decoded to, so that the paper it makes
    transparent still matches it (in 16-bit RGB, so do the colours within 1/256 of it)."""
    key = image.info.get("transparency")
    if image.format != "PNG" or key is None or not image.tile:
        return
    to_8_bits = _PNG_KEY_TO_8_BITS.get(image.tile[0].args)
    if to_8_bits is not None:
        image.info["transparency"] = tuple(map(to_8_bits, key)) if isinstance(key, tuple) else to_8_bits(key)


# Modes Pillow can reduce and that we read directly; everything else is converted first.
_CANONICAL = {"1": "L", "P": "RGBA", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB",
              "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def _decoded_with_zoom(data: bytes, max_pixels: int, budget: PixelBudget | None,
                       before_decode: Callable[[int], None] | None = None) -> tuple[np.ndarray, Zoom | None]:
    """The image's grey at working size and, when it was reduced by half or more to get there, its
    zoom: a region of it decoded again, at full size before the reduction (see
    shared.ink.grey_to_vector). ``budget`` counts what images declare, so the zoom spends nothing
    from it: it decodes at most its image again, and a request at most twice its budget, while a
    zoom never leaves a later image of the request without budget."""
    grey, declared = _decode(data, max_pixels, budget, before_decode=before_decode)
    if max(declared) < 2 * max(grey.shape):
        return grey, None
    return grey, lambda region: _decode(data, max_pixels, None, region, before_decode)[0]


def _pixel_box(region: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) fractions -> Pillow's (left, upper, right, lower) box in an image of ``size``."""
    top, bottom, left, right = region
    width, height = size
    return (math.floor(left * width), math.floor(top * height), math.ceil(right * width), math.ceil(bottom * height))


def _unsigned_read_as_signed(image: Image.Image) -> bool:
    """Whether Pillow read a TIFF's unsigned 32-bit grey samples as signed (mode I), so that those of
    2**31 and over wrapped round to negative values."""
    tags = getattr(image, "tag_v2", None)
    return (image.mode == "I" and tags is not None
            and tags.get(SAMPLE_FORMAT, (1,))[0] == 1 and tags.get(BITS_PER_SAMPLE, (0,))[0] == 32)


def _image_to_grey(image: Image.Image, unsigned: bool = False) -> np.ndarray:
    mode = image.mode
    if unsigned:  # see _unsigned_read_as_signed; float32 keeps 24 of the 32 bits, plenty for grey
        image = Image.fromarray(np.asarray(image).view(np.uint32).astype(np.float32), "F")
        mode = "F"
    if mode.startswith("I;16"):
        full_scale = 65535.0  # 16-bit: scale down, never clip
        key = image.info.get("transparency")
        image = image.convert("I")
        if isinstance(key, int):  # a colour key (tRNS): those pixels are white paper
            pixels = np.asarray(image)
            image = Image.fromarray(np.where(pixels == key, 65535, pixels).astype(np.int32), "I")
    elif mode in ("I", "F"):
        full_scale = None  # decided from the values below
    else:
        if "transparency" in image.info and mode in ("1", "L", "RGB"):
            mode = "RGBA"  # a colour key (tRNS) is transparency too
        target = _CANONICAL.get(mode, mode)
        if mode == "P" and "transparency" not in image.info and getattr(image.palette, "mode", None) == "RGB":
            target = "L"  # an opaque palette: straight to grey, a quarter of RGBA's memory
        if target != image.mode:
            image = image.convert(target)
        if target == "RGBA" and max(image.size) >= 2 * WORKING_SIDE:
            # A large image with alpha (a browser canvas): composite on white and reduce in
            # Pillow (its grey pasted through the alpha mask), several times faster than
            # reducing alpha-premultiplied channels and compositing floats, at the cost of
            # rounding the grey to 8 bits, as the source is. Pillow reads an RGBA mask's alpha
            # band itself, without the copy of it that getchannel("A") makes.
            grey = Image.new("L", image.size, 255)
            grey.paste(image.convert("L"), mask=image)
            image = grey
        full_scale = 255.0
    factor = _reduction_factor(image.size)
    if factor >= 2:
        image = image.reduce(factor)
    if full_scale is None:
        return _wide_to_unit(np.asarray(image, dtype=np.float32))
    # The integer pixels are scaled inside the compositing, so only the channels it uses become floats.
    return _composite_on_white(np.asarray(image), np.float32(full_scale))


def _wide_to_unit(pixels: np.ndarray) -> np.ndarray:
    """32-bit int or float pixels -> [0, 1] by the range they evidently use."""
    if not np.isfinite(pixels).all():
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(pixels.min()), float(pixels.max())
    if low >= 0 and high <= UNIT_OVERSHOOT:  # 0..1, a little over after resampling: clipped
        return np.minimum(pixels, np.float32(1)) if high > 1 else pixels
    if low >= 0 and high <= 255:
        return pixels / np.float32(255)
    if low >= 0 and high <= 65535:
        return pixels / np.float32(65535)
    if high == low:  # one value throughout, outside every range (all -1, all 70000): a blank field, not 0 / 0
        return np.zeros_like(pixels)
    return (pixels - low) / np.float32(high - low)


def _composite_on_white(pixels: np.ndarray, full_scale: np.float32 = np.float32(1)) -> np.ndarray:
    """(H, W) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB, (H, W, 4) RGBA whose values divided by
    ``full_scale`` are in [0, 1] -> grey on white, float32. Divided, not multiplied by 1 / full_scale,
    so a decoded picture's values are those of the same pixels given as an array (training on an npz)."""
    if pixels.ndim == 2:
        return np.divide(pixels, full_scale, dtype=np.float32)
    channels = pixels.shape[2]
    pixels = (pixels.astype(np.float32, copy=False) if full_scale == 1
              else np.divide(pixels, full_scale, dtype=np.float32))
    if channels <= 2:
        grey = pixels[..., 0].copy()
    else:  # a weighted sum of three planes: twice as fast as a product with LUMA over the last axis
        grey = pixels[..., 0] * LUMA[0]
        grey += pixels[..., 1] * LUMA[1]
        grey += pixels[..., 2] * LUMA[2]
    if channels in (2, 4):
        alpha = pixels[..., -1]
        grey *= alpha
        grey += 1 - alpha
    return grey


def _array_to_grey(pixels, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS,
                   budget: PixelBudget | None = None) -> np.ndarray:
    try:
        pixels = np.asarray(pixels)
    except (ValueError, TypeError):  # ragged nested lists
        raise InvalidInput("pixel array is not a regular array: its rows differ in length; send each row with as "
                           "many pixels as the others") from None
    while pixels.ndim > 2 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim == 1 and pixels.size == size[0] * size[1]:
        pixels = pixels.reshape(size)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] > 4) or pixels.size == 0:
        raise InvalidInput(f"pixel array has shape {list(pixels.shape)}; expected [height, width] or "
                           f"[height, width, channels] with 1 to 4 channels, or {size[0] * size[1]} values")
    if pixels.dtype.kind not in "biuf":
        raise InvalidInput(f"pixel array must hold numbers, not {pixels.dtype}")
    height, width = pixels.shape[:2]
    if height * width > max_pixels:
        raise ImageTooLarge(f"the pixel array is {width}x{height} = {height * width:,} pixels; "
                            f"the limit is {max_pixels:,} pixels: send it resized to fewer pixels")
    if budget is not None:
        budget.spend((width, height))
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise InvalidInput("pixel array holds NaN or Infinity; send finite pixels, from 0 to 1, 0 to 255 or 0 to "
                           "65535")
    if pixels.dtype == np.uint8 or pixels.dtype.kind == "b":
        unit = pixels.astype(np.float32) / np.float32(1 if pixels.dtype.kind == "b" else 255)
    elif pixels.dtype == np.uint16:
        unit = pixels.astype(np.float32) / np.float32(65535)
    else:
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes infinite: refused below
            wide = pixels.astype(np.float32)
        if not np.isfinite(wide).all():
            raise InvalidInput(f"pixel array holds values beyond float32's range (±{FLOAT32_MAX:.3g}); send pixels "
                               "from 0 to 1, 0 to 255 or 0 to 65535")
        unit = _wide_to_unit(wide)
    unit = _composite_on_white(unit)
    factor = _reduction_factor(unit.shape)
    return _box_reduce(unit, factor) if factor >= 2 else unit


def _box_reduce(grey: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor`` x ``factor`` boxes (the last partial row and column of boxes dropped);
    along a side shorter than ``factor`` (a strip of a few pixels) a box spans the whole side, which
    becomes one pixel, so it never vanishes."""
    fy, fx = min(factor, grey.shape[0]), min(factor, grey.shape[1])
    h, w = (grey.shape[0] // fy) * fy, (grey.shape[1] // fx) * fx
    return grey[:h, :w].reshape(h // fy, fy, w // fx, fx).mean(axis=(1, 3), dtype=np.float32)
