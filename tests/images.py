"""Image generators for tests: an MNIST digit rendered the way users produce it (a browser canvas,
a phone photo of paper, coloured ink, a small drawing in a corner), a Fashion-MNIST item photographed
on a table, on wood or on fabric, any image converted to any
Pillow mode, encoded in any accepted format, and a PNG that declares more pixels than it holds.
Everything is deterministic (seeded)."""
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageFilter

USER_KINDS = ("canvas_png", "page_png", "photo_jpeg", "sheet_photo", "colour_png", "small_offcentre", "inverted_mnist")
# Renderings harder than the users' images the service is held to: reported, without a goal.
HARD_KINDS = ("thick_marker",)
GARMENT_SURFACES = ("plain", "wood", "fabric")  # what garment_photo lays a Fashion-MNIST item on

# Modes each format can store (what Pillow writes without converting).
FORMAT_MODES = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "WEBP": ("RGB", "RGBA"),
    "BMP": ("1", "L", "P", "RGB", "RGBA"),
    "GIF": ("L", "P"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
}


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """``image`` saved in ``fmt`` (PNG, JPEG, WEBP, BMP, GIF, TIFF, ...) -> the file's bytes."""
    if fmt == "JPEG":
        options.setdefault("quality", 92)
    if fmt == "WEBP":
        options.setdefault("lossless", True)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 30_000) -> bytes:
    """A valid PNG header declaring ``side`` x ``side`` grey pixels (900 MB decoded for 30,000),
    followed by a little compressed data: a decoder that trusted it would allocate it all."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def to_mode(grey: Image.Image, mode: str, *, transparent_background: bool = False) -> Image.Image:
    """An 8-bit "L" image (white paper, dark ink or the reverse) in ``mode``, same appearance.

    16-bit modes use the full 0..65535 range. With ``transparent_background``, modes with alpha
    make the white paper transparent (and black underneath, as browser canvases store it)."""
    assert grey.mode == "L"
    pixels = np.asarray(grey)
    if mode in ("LA", "RGBA") and transparent_background:
        alpha = 255 - pixels  # ink opaque, paper transparent
        ink = np.zeros_like(pixels)  # the colour under a transparent pixel must not matter
        la = Image.fromarray(np.stack([ink, alpha], axis=-1), "LA")
        if mode == "LA":
            return la
        return la.convert("RGBA")
    if mode == "I;16":
        return Image.fromarray(pixels.astype(np.uint16) * 257)  # uint16 -> "I;16"
    if mode == "I":
        return Image.fromarray(pixels.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(pixels.astype(np.float32) / 255)
    if mode == "1":
        return grey.point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    if mode == "P":
        return grey.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return grey.convert(mode)


def canvas(pixels28: np.ndarray, side: int, *, ink_scale: float = 0.9, offset=(0, 0)) -> np.ndarray:
    """Ink coverage (float32 in [0, 1], 1 = ink) of a digit drawn on a ``side`` x ``side`` sheet:
    the MNIST digit upscaled smoothly to ``ink_scale * side``, then shifted by ``offset`` (y, x)."""
    digit_side = max(1, int(round(ink_scale * side)))
    digit = Image.fromarray(np.asarray(pixels28, dtype=np.float32) / 255).resize((digit_side, digit_side), Image.Resampling.BICUBIC)
    coverage = np.clip((np.asarray(digit) - 0.2) / 0.5, 0, 1)  # solid strokes, soft edges
    sheet = np.zeros((side, side), dtype=np.float32)
    top = (side - digit_side) // 2 + offset[0]
    left = (side - digit_side) // 2 + offset[1]
    sheet[top:top + digit_side, left:left + digit_side] = coverage
    return sheet


def render_user_digit(pixels28: np.ndarray, kind: str, *, seed: int = 0) -> bytes:
    """An MNIST digit (28x28 uint8, light on dark) as an encoded user image of ``kind``:

    - canvas_png: 280x280 RGBA, transparent background, dark strokes (a browser canvas export)
    - page_png: the drawing page's export, the canvas halved to 140x140 (service/static/app.js)
    - photo_jpeg: 600x800 photo of grey paper lit with a gradient, sensor noise, dark ink drawn
      off-centre, JPEG quality 85
    - sheet_photo: a sheet of paper turned 5 to 25 degrees either way on a dark, grey or light desk,
      as ``tilted_sheet_photo`` draws it
    - colour_png: blue ink on off-white paper, RGB
    - small_offcentre: dark ink on white, a small digit near the corner of a 200x200 image
    - inverted_mnist: the plain 28x28 light-on-dark digit as a PNG
    - thick_marker: near-black ink on white, 280x280, strokes about twice as wide as the digit's
      own (a marker instead of a pen, or a small digit drawn with the page's 20-px brush)
    """
    rng = np.random.default_rng(seed)
    pixels28 = np.asarray(pixels28, dtype=np.uint8)
    if kind in ("canvas_png", "page_png"):
        coverage = canvas(pixels28, 280, offset=tuple(rng.integers(-10, 11, size=2)))
        if kind == "page_png":  # each 2x2 square's mean, as the browser halves the canvas
            coverage = coverage.reshape(140, 2, 140, 2).mean(axis=(1, 3))
        rgba = np.zeros(coverage.shape + (4,), dtype=np.uint8)
        rgba[..., :3] = 20
        rgba[..., 3] = np.round(coverage * 255)
        return encode(Image.fromarray(rgba, "RGBA"), "PNG")
    if kind == "thick_marker":
        # The strokes blurred and cut low, so they widen round: about twice as wide as MNIST's (4.7 px of
        # the 20-px box at the median; MNIST's own, 2.5), which closes narrow loops as a marker does.
        coverage = canvas(pixels28, 280, offset=tuple(rng.integers(-10, 11, size=2)))
        spread = Image.fromarray(np.round(coverage * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(12))
        coverage = np.clip((np.asarray(spread, dtype=np.float32) / 255 - 0.08) / 0.2, 0, 1)
        return encode(Image.fromarray(np.round(255 - 235 * coverage).astype(np.uint8), "L"), "PNG")
    if kind == "photo_jpeg":
        return _photo(_lit_page(pixels28, rng, (260, 120)), rng)
    if kind == "sheet_photo":
        angle = float(rng.uniform(5, 25) * rng.choice([-1, 1]))
        return tilted_sheet_photo(pixels28, angle, float(rng.choice([0.25, 0.5, 0.97])), seed=seed)
    if kind == "colour_png":
        coverage = canvas(pixels28, 280, offset=tuple(rng.integers(-10, 11, size=2)))[..., None]
        paper = np.array([245, 240, 228], dtype=np.float32)
        blue = np.array([30, 60, 200], dtype=np.float32)
        rgb = paper * (1 - coverage) + blue * coverage
        return encode(Image.fromarray(rgb.round().astype(np.uint8), "RGB"), "PNG")
    if kind == "small_offcentre":
        coverage = canvas(pixels28, 70, ink_scale=1.0)
        sheet = np.zeros((200, 200), dtype=np.float32)
        top, left = 12 + int(rng.integers(0, 6)), 15 + int(rng.integers(0, 6))
        sheet[top:top + 70, left:left + 70] = coverage
        return encode(Image.fromarray(np.round(255 * (1 - sheet)).astype(np.uint8), "L"), "PNG")
    if kind == "inverted_mnist":
        return encode(Image.fromarray(pixels28, "L"), "PNG")
    raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(USER_KINDS + HARD_KINDS)}")


def _lit_page(pixels28: np.ndarray, rng: np.random.Generator, at: tuple[int, int]) -> np.ndarray:
    """photo_jpeg's page before its noise: grey paper lit with a gradient, 600x800, the digit in dark
    ink 336 px tall, its 420-px square drawn at ``at`` (top, left), moved by up to 20 px either way."""
    height, width = 800, 600
    coverage = canvas(pixels28, 420, ink_scale=0.8)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paper = 0.62 + 0.18 * (xx / width) + 0.08 * (yy / height)  # uneven light
    top, left = at[0] + int(rng.integers(-20, 21)), at[1] + int(rng.integers(-20, 21))
    ink = np.zeros((height, width), dtype=np.float32)
    ink[top:top + 420, left:left + 420] = coverage
    return paper * (1 - 0.78 * ink)


def _photo(scene: np.ndarray, rng: np.random.Generator) -> bytes:
    """A grey (or RGB) scene as a phone photographs it: sensor noise, warm indoor light, JPEG quality 85."""
    scene = scene + rng.normal(0, 0.02, size=scene.shape).astype(np.float32)
    tint = np.array([1.0, 0.97, 0.9], dtype=np.float32)  # warm indoor light
    rgb = np.clip((scene[..., None] if scene.ndim == 2 else scene) * tint * 255, 0, 255).round().astype(np.uint8)
    return encode(Image.fromarray(rgb, "RGB"), "JPEG", quality=85)


def thumb_photo(pixels28: np.ndarray, *, seed: int = 0, on_side: bool = False) -> bytes:
    """photo_jpeg's photo with the digit lower and to the right, and the thumb that holds the page: a
    shadowed oval reaching in from a corner (``on_side``: from the middle of a side), 120-160 by
    60-85 px across, meeting the border for a sixth of its side or so, with a soft shadow round it."""
    rng = np.random.default_rng(seed)
    grey = _lit_page(pixels28, rng, (220, 90))
    height, width = grey.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    corner = int(rng.integers(0, 4))
    centre_y, centre_x = (height if corner // 2 else 0), (width if corner % 2 else 0)
    if on_side and corner % 2:
        centre_y = rng.uniform(0.3, 0.9) * height
    elif on_side:
        centre_x = rng.uniform(0.2, 0.8) * width
    turn, long, short = np.deg2rad(rng.uniform(20, 70)), rng.uniform(110, 160), rng.uniform(60, 85)
    along = (xx - centre_x) * np.cos(turn) + (yy - centre_y) * np.sin(turn)
    across = (yy - centre_y) * np.cos(turn) - (xx - centre_x) * np.sin(turn)
    reach = np.sqrt((along / long) ** 2 + (across / short) ** 2)  # 1 on the thumb's outline
    grey = grey * np.where(reach < 1.25, 0.65 + 0.35 * np.clip((reach - 1) / 0.25, 0, 1), 1)  # its shadow
    skin = 0.68 * (0.75 + 0.25 * np.clip(1 - reach, 0, 1))  # skin's luminance, darker to its edge
    cover = np.clip((1 - reach) * 40, 0, 1)
    return _photo(grey * (1 - cover) + skin * cover, rng)


def shadow_photo(pixels28: np.ndarray, *, seed: int = 0, darkness: float = 0.45) -> bytes:
    """photo_jpeg's photo with the digit a little higher, and the shadow of the phone or a hand across
    the page: a straight edge at any angle, 30 px soft, within 80 px of the middle, the paper on one
    side of it ``darkness`` darker (45 %; a shadow in strong light, 60 % or more)."""
    rng = np.random.default_rng(seed)
    grey = _lit_page(pixels28, rng, (190, 90))
    height, width = grey.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    turn, off = rng.uniform(0, 2 * np.pi), rng.uniform(-80, 80)
    across = (xx - width / 2) * np.cos(turn) + (yy - height / 2) * np.sin(turn) - off
    return _photo(grey * (1 - darkness * np.clip(across / 30 + 0.5, 0, 1)), rng)


def notebook_photo(pixels28: np.ndarray, *, seed: int = 0, squared: bool = False) -> bytes:
    """photo_jpeg's photo on a notebook's page: pale blue lines every 32 px (``squared``: both ways) and
    the red margin line, 3 px wide, 60 to 110 px from the left edge, left of the digit and close to it."""
    rng = np.random.default_rng(seed)
    grey = _lit_page(pixels28, rng, (200, 140))
    yy, xx = np.mgrid[0:grey.shape[0], 0:grey.shape[1]]
    offset, margin = int(rng.integers(0, 32)), int(rng.integers(60, 111))
    lines = ((yy + offset) % 32 < 2) | (squared & ((xx + offset) % 32 < 2))
    page = np.where(lines[..., None], np.float32([0.6, 0.72, 0.9]), np.float32([1, 1, 1]))
    page[:, margin:margin + 3] = [0.85, 0.3, 0.3]
    return _photo(grey[..., None] * page, rng)


def garment_photo(pixels28: np.ndarray, *, seed: int = 0, surface: str = "plain") -> bytes:
    """A Fashion-MNIST item (28x28 uint8, light on dark) photographed lying on a surface, as photo_jpeg's
    photo: 600x800, the item 380-440 px across, a little off-centre, in the shade the dataset's product
    photos give it (1 - its pixel, white where it is 0), on ``surface``: "plain" (a white table, 0.85),
    "wood" (light wood, 0.67 to 0.83, its grain running down the photo) or "fabric" (a linen weave, 0.73 to
    0.83, threads 6 px apart), lit a little unevenly. Much of an item is as light as the wood or the fabric."""
    rng = np.random.default_rng(seed)
    height, width = 800, 600
    side = int(rng.integers(380, 441))
    item = Image.fromarray(np.asarray(pixels28, dtype=np.float32) / 255).resize((side, side), Image.Resampling.BICUBIC)
    item = np.clip(np.asarray(item), 0, 1)
    cover = np.zeros((height, width), dtype=np.float32)
    top, left = (height - side) // 2 + int(rng.integers(-30, 31)), (width - side) // 2 + int(rng.integers(-30, 31))
    cover[top:top + side, left:left + side] = item
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if surface == "plain":
        ground = np.full((height, width), 0.85, dtype=np.float32)
    elif surface == "wood":
        phase = rng.uniform(0, 2 * np.pi)
        wobble = 12 * np.sin(yy / 90 + phase) + 5 * np.sin(yy / 23 + 2 * phase)  # the grain's rings wander
        rings = np.sin((xx + wobble) / rng.uniform(9, 14)) ** 2
        streaks = rng.normal(0, 1, size=width).astype(np.float32)[np.newaxis, :]  # fine lines along the grain
        ground = 0.75 + 0.08 * (rings - 0.5) + 0.02 * np.clip(streaks, -2, 2)
    elif surface == "fabric":
        weave = np.sin(xx * np.pi / 3) * np.sin(yy * np.pi / 3)
        fibres = rng.normal(0, 0.02, size=(height, width)).astype(np.float32)
        ground = 0.78 + 0.05 * weave + fibres
    else:
        raise ValueError(f"unknown surface {surface!r}; expected one of {', '.join(GARMENT_SURFACES)}")
    outline = np.clip(cover / 0.05, 0, 1)  # the item hides the surface under it
    scene = ground * (1 - outline) + (1 - 0.92 * cover) * outline
    light = 0.9 + 0.1 * (xx / width) + 0.05 * (yy / height)
    return _photo(scene * light, rng)


def synthetic_digit(seed: int = 0) -> np.ndarray:
    """A digit-like 28x28 uint8 image, light on dark, for tests that run without MNIST: a thick
    ring (a zero, even ``seed``) or a one with a flag and a foot (odd ``seed``; it looks different
    turned or mirrored), drawn with soft edges inside the MNIST 20x20 box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    if seed % 2 == 0:
        ry, rx = 9.5, 6.5 + rng.uniform(-1, 1)
        radius = np.sqrt(((yy - 14) / ry) ** 2 + ((xx - 14) / rx) ** 2)
        ink = np.clip(1 - np.abs(radius - 0.8) / 0.22, 0, 1)
    else:
        bar = np.clip(1.8 - np.abs(xx - 16 - 0.1 * (yy - 14)), 0, 1) * ((yy >= 4) & (yy <= 23))
        flag = np.clip(1.6 - np.abs((yy - 4) - 0.8 * (16 - xx)), 0, 1) * ((xx >= 9) & (xx <= 16))
        foot = np.clip(1.8 - np.abs(yy - 22), 0, 1) * ((xx >= 10) & (xx <= 22))
        ink = np.maximum(np.maximum(bar, flag), foot)
    return np.round(255 * ink).astype(np.uint8)


def paper(pixels28: np.ndarray, side: int = 112) -> Image.Image:
    """The digit as dark ink on white paper, an "L" image of ``side`` x ``side``."""
    coverage = canvas(pixels28, side, ink_scale=1.0)
    return Image.fromarray(np.round(255 * (1 - coverage)).astype(np.uint8), "L")


def tilted_sheet_photo(pixels28: np.ndarray, angle: float, desk: float, *, seed: int = 0) -> bytes:
    """An MNIST digit (28x28 uint8, light on dark) written on a sheet of paper that lies turned by
    ``angle`` degrees on a desk of shade ``desk`` (0 black .. 1 white; the paper is 0.82), seen from
    above: a 600x800 JPEG with light falling off to one side and sensor noise, as ``photo_jpeg``.
    The sheet (320x420 px) shows whole, desk all round it; the digit is written upright as the
    camera sees it, a little off the sheet's centre."""
    rng = np.random.default_rng(seed)
    height, width = 600, 800
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centre_y, centre_x = height / 2 + rng.integers(-15, 16), width / 2 + rng.integers(-40, 41)
    turn = np.deg2rad(angle)
    along = (xx - centre_x) * np.cos(turn) + (yy - centre_y) * np.sin(turn)  # the sheet's own axes
    across = (yy - centre_y) * np.cos(turn) - (xx - centre_x) * np.sin(turn)
    inside = np.minimum(160 - np.abs(along), 210 - np.abs(across))  # pixels inside the nearest edge
    sheet = np.clip(inside + 0.5, 0, 1)  # an antialiased edge
    coverage = canvas(pixels28, 260, ink_scale=0.8)
    top, left = int(centre_y) - 130 + int(rng.integers(-15, 16)), int(centre_x) - 130 + int(rng.integers(-15, 16))
    ink = np.zeros((height, width), dtype=np.float32)
    ink[top:top + 260, left:left + 260] = coverage
    light = 0.88 + 0.16 * (xx / width) + 0.06 * (yy / height)
    surface = desk * (1 - sheet) + 0.82 * sheet * (1 - 0.78 * ink)
    grey = surface * light + rng.normal(0, 0.02, size=(height, width)).astype(np.float32)
    return encode(Image.fromarray(np.clip(grey * 255, 0, 255).round().astype(np.uint8), "L").convert("RGB"),
                  "JPEG", quality=85)
