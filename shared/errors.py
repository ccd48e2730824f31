"""Errors raised by the forward-only module. Each carries a machine-readable ``code``; the
service maps the classes to HTTP statuses, the trainer prints the message."""

import json
import sys
from collections import Counter


def shortened(text: str, limit: int = 60) -> str:
    """``text`` as a message shows a value sent or read: cut to ``limit`` characters, ending in
    "...", when longer (a value of 100,000 characters is not repeated whole)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def repeated(names) -> list:
    """The names that occur more than once in ``names``, sorted: what a message says is given twice."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def read_json(text: str | bytes):
    """``json.loads(text)``, each refusal a ValueError whose message can be shown as it is: not
    UTF-8, not JSON, nested too deeply for the parser, or an integer too long for Python to read
    (whose own message advises a setting of the interpreter)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("it is nested over about 1000 levels deep") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # Python's limit on the digits of an integer read from text
        raise ValueError(f"it holds an integer of over {sys.get_int_max_str_digits()} digits, too long to read") \
            from None


class ScratchnetError(Exception):
    code = "error"

    def __init__(self, message: str, details: list | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class ModelFileError(ScratchnetError):
    """A model file that cannot be loaded: the message names the file and the reason."""

    code = "invalid_model_file"

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class InvalidInput(ScratchnetError):
    """Well-formed but unusable input: wrong length, NaN, wrong type (HTTP 422)."""

    code = "invalid_input"


class UnsupportedImage(ScratchnetError):
    """Bytes that are not a decodable image in a supported format (HTTP 415)."""

    code = "unsupported_image"


class ImageTooLarge(ScratchnetError):
    """An image whose declared pixel count exceeds the limit, refused before decoding (HTTP 413)."""

    code = "image_too_large"


class TooManyPixels(ImageTooLarge):
    """Images that together declare more pixels than one request may decode (HTTP 413): each may
    be within the limit, yet a few kilobytes of PNG can declare millions of blank pixels, so a
    request full of them would keep a core busy for minutes."""

    code = "too_many_pixels"
