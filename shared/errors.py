"""Errors raised by shared/'s model file and preprocessing (of images and of vectors; the registry
has its own). Each carries a machine-readable ``code``; the service maps the classes to HTTP
statuses, the trainer prints the message."""


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
