"""From a grey picture to the model's input field (SPEC §4, after shared/preprocess.py has decoded
the picture to luminance at its working size): which pixels are ink, which of the ink is the
item (a digit, a garment), and the item fitted into the field as its dataset has it.

Ink: the background is a plane fitted to the border pixels (paper that is grey, or lit unevenly,
in a photo), with a bowl round the centre when light falls off towards the corners; the ink is
whichever side of it stands out more, by the squares of the deviations (dark ink on paper is
inverted, light ink on a dark field is kept; a flash's hot spot is broad but faint). Deviations
within 4 sigma of the border's noise are set to 0, the rest stretched so the strokes reach 1;
isolated pixels are dropped. No ink at least MIN_CONTRAST away from the paper: the image is blank. An item
that covers most of the border (a bag filling the frame) makes the border so uneven that its
noise leaves no room for any ink; then the paper is the level most border pixels share (what
the item leaves uncovered) and the noise is measured between neighbouring pixels instead.
The shadow of a straight edge across the page or the item (the phone's or a hand's, dark enough to
be taken for ink) is divided out first, fitted to the border's two levels of paper.
For a digit, ink that is a sheet of paper (photographed on a desk that shows around it, square-on
or turned) is not the digit: the ink is looked for again on the sheet, against its own paper.
The lines of ruled or squared paper, square-on or turned a little (the slope that lines them up is
found as a document's skew is), lose their own level of ink, leaving the strokes on them.
For a garment photographed lying on a surface of another shade than white, or with a grain or a weave,
the item is where the photo stands out from the surface either way, its outline closed and its holes
filled, and its ink is how much darker than its own lightest part it is.
Ink that runs along the edge of the picture (a desk beside the page, an app's toolbar, a thumb
holding the page) or across it (a notebook's margin line), or a frame round the digit (a form's
box, square-on or turned a little), is not the digit either, when a digit clear of it is left. Ink
whose box is under ZOOM_BELOW working pixels (a small digit in a large photo) is looked at again in
the region around it, decoded finer, as a person would crop the picture to it.

Fit: ``digit`` is the MNIST recipe (crop to the ink, longest side scaled to 20 px, centre of
mass put at pixel (14, 14) of the 28x28 field); ``garment`` is Fashion-MNIST's (crop, longest
side scaled to 28 px, centred). The crop is the box of the ink above BOX_LEVEL, without
detached specks, so halos and dust do not move it. A digit whose strokes are wider on average
than STROKE_CAP of the box (4 of MNIST's 20 px: a thick marker) is thinned to that first. The
brightest pixel becomes 1, as in both datasets. An MNIST digit comes back as itself (up to the
2/255 noise floor; the 4 % with the widest strokes are thinned a little).
"""
import functools
import math
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from shared.errors import InvalidInput, ScratchnetError

# MNIST: the digit's longest side is 20 of the field's 28 px, its centre of mass at index 14.
DIGIT_BOX_FRACTION = 20 / 28
MIN_CONTRAST = 0.08  # ink must differ from the paper by at least this much, else the image is blank
BLANK = (f"the image is blank: no ink stands out from the paper (it must differ from it by {MIN_CONTRAST:.0%} of the "
         "range from white to black or more, and a transparent background counts as white paper); draw darker, or "
         "take a photo against plain paper or a plain background (a pattern such as wood grain hides what is on it)")
# What stands out is one solid four-sided shape over much of the image: a sheet of paper on a desk,
# or a block of ink, and nothing is drawn on it.
BLANK_SHEET = ("the image is blank: what stands out is a solid shape over much of it, taken for a sheet of paper, "
               "with no ink found on it; draw the digit in strokes (darker, if they are faint), or crop the "
               "picture to the digit")
BOX_LEVEL = {"digit": 0.1, "garment": 0.02}  # ink above this (strokes at 1) sets the bounding box
MARGIN = 2  # output pixels kept around the box when resizing
# Ink meeting the border in a run this long, of its side, runs along the edge: a desk or a toolbar along
# all of it, or a thumb holding the page, which meets it for a sixth of the side or so.
EDGE_RUN = 1 / 8
# The edge of a shadow across the page, which the paper's fit does not follow, is inked under this.
FAINT_STRIP = 0.3
SIDES = (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1])  # an image's outermost rows and columns
RULE_SPAN, RULES_MIN = 0.75, 4  # ruled paper: this share of a row inked, in this many lines (a digit has 3 bars)
RULE_SLOPE = 0.27  # ruled lines turned by up to this many rows a column (15 degrees) are found too
BOWL_GAIN = 0.5  # the paper is fitted with a bowl when that halves its noise, else with a plane
FRAME_FILL = 0.9  # a frame round the digit inks this much of each side of the ink's box at least
# A frame turned by up to about 15 degrees runs within FRAME_BAND of the box's side from it, along
# FRAME_BAND_FILL of its length at least.
FRAME_BAND, FRAME_BAND_FILL = 0.2, 0.75
# A panel behind a garment (see _is_backdrop): its box's outermost pixels, BACKDROP_FILL of them at least,
# lie within BACKDROP_SPREAD of their median, which is under BACKDROP_LEVEL of the strokes.
BACKDROP_LEVEL, BACKDROP_SPREAD, BACKDROP_FILL = 0.25, 0.05, 0.9
# A garment photographed on a surface: gaps in its outline up to this share of the picture's shorter side
# wide (where it is no lighter nor darker than the surface) are closed.
ITEM_GAP = 1 / 36
ZOOM_BELOW = 24  # ink whose box is smaller than this at working size is looked at again, finer
Zoom = Callable[[tuple[float, float, float, float]], np.ndarray]  # region -> its grey, finer
# A sheet of paper on a desk, square-on or turned: the quadrilateral through its corners covers this much
# of the image at least, its ink this much of its outline's edge band (a tenth of the box's sides in from
# the outline, which is its ink with holes and dents filled) and this much of the quadrilateral (a hollow
# zero drawn thick, or a display's, is inked along its edges too), and its outline differs from the
# quadrilateral by at most this fraction of it (a digit's or a round blob's, by much more).
SHEET_AREA = 0.2
SHEET_EDGE_FILL = 0.85
SHEET_FILL = 0.7
SHEET_SHAPE = 0.05
RESAMPLE = Image.Resampling.BILINEAR  # Pillow's is antialiased (a triangle filter): no ringing
# Ink apart from the item by more than DETACHED_GAP of its extent, and lighter than DETACHED_MASS of
# it, is not the item: a mark or a word beside a digit, not a part of it.
DETACHED_GAP, DETACHED_MASS = 0.5, 0.5
SPECK_MASS = 0.01  # detached ink lighter than this fraction of the total is a speck, not the item
# MNIST's strokes are 2.5 px wide in its 20-px box (median of its 10,000 test digits; 95 % are under 3.9).
# A digit whose strokes are wider on average than this share of its box's longest side (a thick
# marker, or a small digit drawn with the drawing page's brush) is thinned to it first: the network
# has hardly seen such strokes.
STROKE_CAP = 4 / 20
# The edge of a shadow across the page (the phone's or a hand's), straight and soft: the border holds paper in
# two arcs, each SHADOW_ARC of it at least, one SHADOW_STEP darker than the other at least, and the step is seen
# inside the picture too, along the line through the two places where the edge meets the border.
SHADOW_ARC, SHADOW_STEP = 0.1, 0.15
SHADOW_SOFTNESS = (1, 2, 4, 8, 16)  # widths (working pixels) of the edge's soft ramp, the best fit taken


def grey_to_vector(grey: np.ndarray, zoom: Zoom | None = None, *, size: tuple[int, int], fit: str) -> np.ndarray:
    """The grey picture -> the model's input vector. With ``zoom``, ink that fills only a few pixels
    of the working size (a small digit in a large photo) is looked at again from the region
    around it, decoded at a finer scale, as a person would crop the picture to it."""
    grey = _without_shadow(grey)
    ink = _ink_map(grey) if fit == "digit" else _item_on_surface(grey)
    if fit == "digit":
        ink = _without_rules(ink)
    bounds = _ink_bounds(ink, BOX_LEVEL[fit])
    sheet = _sheet(ink, bounds) if fit == "digit" else None
    if sheet is not None:
        try:
            ink = _ink_on_sheet(grey, sheet)
        except InvalidInput:
            raise InvalidInput(BLANK_SHEET) from None
        bounds = _ink_bounds(ink, BOX_LEVEL[fit])
    elif fit == "digit":
        ink, bounds = _without_frame(*_without_edge_strips(ink, bounds))
    elif _is_backdrop(ink, bounds):
        top, bottom, left, right = bounds
        try:
            return grey_to_vector(grey[top:bottom, left:right], size=size, fit=fit)
        except ScratchnetError:
            pass  # nothing stands out from the panel: it is the item
    region = _zoom_region(bounds, ink.shape) if zoom is not None else None
    if region is not None:
        try:
            return grey_to_vector(zoom(region), size=size, fit=fit)
        except ScratchnetError:
            pass  # no ink at the finer scale (noise taken for a small digit): what the whole picture shows
    field = _fit_digit(ink, bounds, size) if fit == "digit" else _fit_garment(ink, bounds, size)
    peak = field.max()
    if peak <= 0:
        raise InvalidInput(BLANK)
    field /= peak
    return np.minimum(np.maximum(field, 0, out=field), 1, out=field).ravel()


def _without_rules(ink: np.ndarray) -> np.ndarray:
    """``ink`` less the lines of ruled or squared paper: RULES_MIN or more separate runs of rows (or
    columns) inked across RULE_SPAN of their length or more, straight or turned by up to RULE_SLOPE,
    each of which loses its own level of ink (its median), so that only what the digit's strokes
    add on it is left."""
    for turned in (False, True):  # lines along the rows, then along the columns
        lines = ink.T if turned else ink
        edges = (lines[:, 0], lines[:, -1])
        if all(np.count_nonzero(edge) < RULES_MIN or _count_runs(edge > 0) < RULES_MIN for edge in edges):
            continue  # lines cross the picture: cheap to rule out
        lines = _less_lines(lines)
        ink = np.ascontiguousarray(lines.T) if turned else lines
    return ink


def _less_lines(ink: np.ndarray) -> np.ndarray:
    """``ink`` less the ruled lines along its rows (see _without_rules)."""
    height, width = ink.shape
    shift = _line_shift(ink > 0)
    if not shift.any():  # square-on
        ruled = np.count_nonzero(ink, axis=1) >= RULE_SPAN * width
        if _count_runs(ruled) < RULES_MIN:
            return ink
        level = np.where(ruled[:, np.newaxis], np.median(ink, axis=1, keepdims=True), 0)
        return np.maximum(ink - level, 0, dtype=np.float32)
    # Sheared along the lines' slope: row r of column c holds the pixel of row r + shift[c]. A line's
    # pixels fall in one to three rows of the shear, each of which loses the level of its inked pixels.
    source = np.arange(-shift.max(), height - shift.min())[:, np.newaxis] + shift
    inside = (source >= 0) & (source < height)
    columns = np.broadcast_to(np.arange(width), source.shape)
    sheared = np.where(inside, ink[np.clip(source, 0, height - 1), columns], 0)
    rows = _line_rows(sheared > 0, np.count_nonzero(inside, axis=1))
    if _count_runs(rows) < RULES_MIN:
        return ink
    levels = np.zeros(len(sheared), dtype=np.float32)
    for row in np.flatnonzero(rows):
        levels[row] = np.median(sheared[row][sheared[row] > 0])
    less = ink.copy()
    less[source[inside], columns[inside]] -= np.broadcast_to(levels[:, np.newaxis], source.shape)[inside]
    return np.maximum(less, 0, dtype=np.float32)


def _line_shift(inked: np.ndarray) -> np.ndarray:
    """The slope, up to RULE_SLOPE, of lines turned a little along the rows of the mask ``inked``: how
    many rows each column is shifted by against the middle one. It is the slope that makes the rows'
    counts of inked pixels the most uneven (the sum of their squares), as a document's skew is found;
    the flattest of equals."""
    width = inked.shape[1]
    ys, xs = np.nonzero(inked)
    offsets = np.arange(width) - width // 2
    best, found = -1, None
    for step in sorted(range(-round(RULE_SLOPE * width), round(RULE_SLOPE * width) + 1), key=abs):
        shift = np.round(offsets * (step / width)).astype(np.intp)
        counts = np.bincount(ys - shift[xs] + shift.max())
        unevenness = int(np.dot(counts, counts))
        if unevenness > best:
            best, found = unevenness, shift
    return found


def _line_rows(inked: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Which rows of a shear (the mask ``inked``, whose rows are ``lengths`` long inside the picture)
    hold a line along them: of each run of rows inked along a quarter of their length or more, the
    one to three rows together inked in the most columns, when those are RULE_SPAN of the length or
    more (a line that leaves the picture is a line still, and a stroke beside a line is no part of it)."""
    counts = np.count_nonzero(inked, axis=1)
    partly = (lengths >= (1 - RULE_SPAN) * lengths.max()) & (counts >= (1 - RULE_SPAN) * lengths)
    rows = np.zeros_like(partly)
    for start, end in zip(*_runs(partly)):
        covered, top, size = 0, start, 1
        for rows_together in (1, 2, 3):  # the fewest rows of equals
            for first in range(start, end - rows_together + 1):
                columns = np.count_nonzero(inked[first:first + rows_together].any(axis=0))
                if columns > covered:
                    covered, top, size = columns, first, rows_together
        if covered >= RULE_SPAN * lengths[top:top + size].max():
            rows[top:top + size] = True
    return rows


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The starts and (exclusive) ends of the runs of set elements of the 1-D boolean ``mask``."""
    padded = np.zeros(mask.size + 2, dtype=bool)
    padded[1:-1] = mask
    edges = (padded[1:] != padded[:-1]).nonzero()[0]
    return edges[::2], edges[1::2]


def _count_runs(mask: np.ndarray) -> int:
    """How many separate runs of set elements the 1-D boolean ``mask`` has."""
    return len(_runs(mask)[0])


def _without_edge_strips(ink: np.ndarray, bounds: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple]:
    """``ink`` and its ``bounds`` less what runs along the edge of the picture (the desk beside a
    photographed page, an app's toolbar in a screenshot, a shadow, a thumb holding the page, a
    notebook's margin line): ink connected to EDGE_RUN of one side of the border or more, inked in
    one run, or to two opposite sides, when what is left is digit-sized and clear of the border. A
    digit's strokes meet the border, if at all, for their width, or all round (a picture cropped to
    them). Where the strips join the digit, their faint
    ink alone (under FAINT_STRIP: the edge of a shadow across the page, which the paper's fit does
    not follow) is set aside, if that leaves the digit clear of them."""
    strips = _edge_strips(ink)
    if strips is None:
        return ink, bounds
    rest = _clear_of(ink, strips)
    if rest is None:
        faint = _edge_strips(np.where(ink < FAINT_STRIP, ink, np.float32(0)))
        rest = _clear_of(ink, faint) if faint is not None else None
    return rest or (ink, bounds)


def _clear_of(ink: np.ndarray, strips: np.ndarray) -> tuple[np.ndarray, tuple] | None:
    """``ink`` less the mask ``strips``, and its bounds, when what is left is digit-sized and clear of
    the border; else None."""
    rest = np.where(strips, np.float32(0), ink)
    try:
        rest_bounds = _ink_bounds(rest, BOX_LEVEL["digit"])
    except InvalidInput:
        return None  # nothing but the strips: they are what was drawn
    top, bottom, left, right = rest_bounds
    if max(bottom - top, right - left) < min(ink.shape) // 10:
        return None  # too small for a digit beside them: specks, or the strips are the digit
    if top == 0 or left == 0 or bottom == ink.shape[0] or right == ink.shape[1]:
        return None  # the rest meets the border too: a picture cropped to the digit's strokes
    return rest, rest_bounds


def _edge_strips(ink: np.ndarray) -> np.ndarray | None:
    """The inked pixels connected to a run of inked border pixels EDGE_RUN of its side long or
    more, or to both of two opposite sides (a line across the picture: a notebook's margin line), as a
    mask; None when there is no such run (at once when no border pixel is inked)."""
    if not any(ink[side].any() for side in SIDES):
        return None
    inked = ink > 0
    seeds = np.zeros_like(inked)
    for side in SIDES:
        seeds[side] = _long_runs(inked[side], max(2, int(EDGE_RUN * inked[side].size)))
    for first, last in ((SIDES[0], SIDES[1]), (SIDES[2], SIDES[3])):
        start = np.zeros_like(inked)
        start[first] = inked[first]
        across = _connected(start, inked)
        if across[last].any():
            seeds |= across
    return _connected(seeds, inked) if seeds.any() else None


def _without_frame(ink: np.ndarray, bounds: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple]:
    """``ink`` and its ``bounds`` less a frame drawn round the digit (a form's box, a square drawn
    about it): the ink's box inked nearly all along each of its four sides, or, for a frame turned
    a little, along most of a band FRAME_BAND deep inside each, in a ring that encloses the rest.
    The ink connected to the sides goes when a digit-sized part clear of them is left inside."""
    top, bottom, left, right = bounds
    box = ink[top:bottom, left:right] > BOX_LEVEL["digit"]
    if min(box.shape) < 8:
        return ink, bounds
    # A frame, square-on or turned, runs along every band (a square-on one's sides lie in them too).
    if not all(np.count_nonzero(band) >= FRAME_BAND_FILL * band.size for band in _side_bands(box)):
        return ink, bounds
    square = all(np.count_nonzero(box[side]) >= FRAME_FILL * box[side].size for side in SIDES)
    frame = _connected(box & _outermost(box.shape), ink[top:bottom, left:right] > 0)
    if not square and not _encloses(frame, box & ~frame):
        return ink, bounds
    rest = ink.copy()
    rest[top:bottom, left:right][frame] = 0
    try:
        inner = _ink_bounds(rest, BOX_LEVEL["digit"])
    except InvalidInput:
        return ink, bounds  # an empty frame: it is what was drawn (a "0" drawn square)
    if max(inner[1] - inner[0], inner[3] - inner[2]) < min(box.shape) // 10:
        return ink, bounds
    return rest, inner


def _is_backdrop(ink: np.ndarray, bounds: tuple[int, int, int, int]) -> bool:
    """Whether the ink's box is a panel behind the item rather than the item: a product picture on
    its light grey backdrop inside a white page (a screenshot of a shop). Such a panel inks nearly
    all of its box's outermost rows and columns, evenly and faintly (under BACKDROP_LEVEL of the
    strokes), where an item's box is mostly paper along them or meets the item's own outline."""
    top, bottom, left, right = bounds
    if min(bottom - top, right - left) < 8:
        return False
    box = ink[top:bottom, left:right]
    ring = box[_outermost(box.shape)]
    level = float(np.median(ring))
    return (0 < level < BACKDROP_LEVEL
            and np.count_nonzero(np.abs(ring - level) <= BACKDROP_SPREAD) >= BACKDROP_FILL * ring.size)


def _side_bands(box: np.ndarray) -> Iterator[np.ndarray]:
    """Which pixels along each side of the mask ``box`` have ink within FRAME_BAND of the side's
    length from it (across the band): where a frame turned a little runs. One band at a time, the
    left and right ones first: a digit's strokes seldom run down most of either (one digit in seven
    fills the left band), so a check of every band mostly stops at the first."""
    depth_y, depth_x = (max(1, round(FRAME_BAND * n)) for n in box.shape)
    yield box[:, :depth_x].any(axis=1)
    yield box[:, -depth_x:].any(axis=1)
    yield box[:depth_y].any(axis=0)
    yield box[-depth_y:].any(axis=0)


def _outermost(shape: tuple[int, int]) -> np.ndarray:
    """The outermost rows and columns of an image of ``shape`` (SIDES), as a mask."""
    border = np.zeros(shape, dtype=bool)
    for side in SIDES:
        border[side] = True
    return border


def _encloses(ring: np.ndarray, inner: np.ndarray) -> bool:
    """Whether the mask ``ring`` closes round nearly all of the mask ``inner`` (some of it at least):
    what the border reaches without crossing the ring (side to side, never diagonally, which an
    8-connected ring blocks) holds under a tenth of it."""
    outside = _connected(_outermost(ring.shape), ~ring, diagonal=False)
    held = np.count_nonzero(inner)
    return held > 0 and np.count_nonzero(inner & outside) < 0.1 * held


def _connected(seeds: np.ndarray, inked: np.ndarray, *, diagonal: bool = True) -> np.ndarray:
    """The pixels of the mask ``inked`` connected to those of ``seeds`` (8-connected, or 4-connected
    without ``diagonal``), as a mask."""
    region, count = seeds & inked, -1
    while count != (count := np.count_nonzero(region)):  # grow through the ink until it stops
        region = _dilated(region, 1, diagonal=diagonal) & inked
    return region


def _long_runs(line: np.ndarray, length: int) -> np.ndarray:
    """The set elements of the boolean ``line`` that lie in runs of at least ``length``."""
    runs = np.zeros_like(line)
    for start, end in zip(*_runs(line)):
        if end - start >= length:
            runs[start:end] = True
    return runs


def _zoom_region(bounds: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """The region to zoom into (top, bottom, left, right as fractions of the picture) when the ink's
    box is under ZOOM_BELOW pixels: the box with as much paper again on every side, so that the
    region's border is paper. None when the box is large enough, or the region would not be at
    least twice finer."""
    top, bottom, left, right = bounds
    side = max(bottom - top, right - left)
    if side >= ZOOM_BELOW:
        return None
    height, width = shape
    top, bottom = max(0, top - side), min(height, bottom + side)
    left, right = max(0, left - side), min(width, right + side)
    if 2 * (bottom - top) > height and 2 * (right - left) > width:
        return None
    return top / height, bottom / height, left / width, right / width


def _sheet(ink: np.ndarray, bounds: tuple[int, int, int, int]) -> np.ndarray | None:
    """The sheet of paper the ink found is, if it is one: photographed on a desk of another shade that
    shows around it, square-on or turned, it is a quadrilateral that covers much of the image, inked
    all along its edges and solid but for the digit on it. A digit's strokes fill little of the
    quadrilateral through their outermost points, or leave it hollow. Returns the sheet as a mask of
    the image, less its edge and shadow (a twentieth of each side of its box), or None."""
    top, bottom, left, right = bounds
    height, width = bottom - top, right - left
    if height * width < SHEET_AREA * ink.size or min(height, width) < 10:  # too small to hold a digit
        return None
    inked = ink[top:bottom, left:right] > BOX_LEVEL["digit"]
    if np.count_nonzero(inked) < SHEET_FILL * SHEET_AREA * ink.size:
        return None
    corners = _quadrilateral(inked)
    area = np.count_nonzero(corners)
    if area < SHEET_AREA * ink.size or np.count_nonzero(inked & corners) < SHEET_FILL * area:
        return None
    outline = _spans(inked, 0, 0)
    inner = _spans(inked, max(1, height // 10), max(1, width // 10))
    band, edge = outline & ~inner, inked & ~inner
    if (np.count_nonzero(outline ^ corners) > SHEET_SHAPE * area
            or np.count_nonzero(edge) < SHEET_EDGE_FILL * np.count_nonzero(band)):
        return None
    sheet = np.zeros(ink.shape, dtype=bool)
    sheet[top:bottom, left:right] = _spans(inked, max(1, height // 20), max(1, width // 20))
    return sheet


def _quadrilateral(mask: np.ndarray) -> np.ndarray:
    """The quadrilateral through the set pixels of ``mask`` furthest out along each diagonal, as a mask
    of the same shape: a sheet's outline, when ``mask`` is one turned by less than 45 degrees."""
    ys, xs = mask.nonzero()
    sums, differences = xs + ys, xs - ys  # furthest out along a diagonal: the largest or smallest of these
    corners = [sums.argmax(), differences.argmax(), sums.argmin(), differences.argmin()]
    drawing = Image.new("1", mask.shape[::-1])
    ImageDraw.Draw(drawing).polygon([(int(xs[i]), int(ys[i])) for i in corners], fill=1)
    return np.asarray(drawing)


def _spans(mask: np.ndarray, trim_y: int, trim_x: int) -> np.ndarray:
    """The pixels between the first and last set pixel of their row, less ``trim_x`` at each end, that
    also lie between those of their column, less ``trim_y``: ``mask`` with its holes and dents filled
    (exactly, for a convex shape such as a turned sheet), then shrunk."""
    h, w = mask.shape
    left = np.where(mask.any(axis=1), mask.argmax(axis=1), w) + trim_x
    right = w - mask[:, ::-1].argmax(axis=1) - trim_x
    top = np.where(mask.any(axis=0), mask.argmax(axis=0), h) + trim_y
    bottom = h - mask[::-1].argmax(axis=0) - trim_y
    xs, ys = np.arange(w), np.arange(h)[:, np.newaxis]
    return (xs >= left[:, np.newaxis]) & (xs < right[:, np.newaxis]) & (ys >= top) & (ys < bottom)


def _ink_on_sheet(grey: np.ndarray, sheet: np.ndarray) -> np.ndarray:
    """The ink on the sheet ``sheet`` (a mask of ``grey``): the paper is a plane fitted to the sheet's
    own pixels, and the desk around it counts as paper. Raises InvalidInput if the sheet is blank."""
    background, sigma = _plane(grey, *np.nonzero(sheet))
    return _ink_against(np.where(sheet, grey, background), background, sigma)


def _without_shadow(grey: np.ndarray) -> np.ndarray:
    """``grey`` with the shadow of a straight edge across it divided out (the phone's or a hand's, as the
    page is photographed), or ``grey`` itself. A shadow dark enough to be taken for ink hides the digit in
    it, or the paper in light is taken for the ink; the fit of the paper (a plane or a bowl) cannot follow
    its edge. The edge meets the border twice, which holds paper of two levels in two arcs; the shadow's
    depth and the softness of its edge are fitted to the border, and the step must be seen along the line
    between those two places inside the picture too (a thumb reaching in from the edge, which also makes
    two arcs, bulges past that line). Exits at once on a border of one level (a drawing, most photos)."""
    if min(grey.shape) < 16:
        return grey
    corners = (float(grey[0, 0]), float(grey[0, -1]), float(grey[-1, 0]), float(grey[-1, -1]))
    if min(corners) >= (1 - SHADOW_STEP / 2) * max(corners):
        return grey  # every part of the picture an edge cuts off holds a corner, in its shadow or out of it
    edge = _shadow_edge(grey)
    if edge is None:
        return grey
    (y1, x1), (y2, x2), in_shadow = edge
    length = math.hypot(y2 - y1, x2 - x1)
    if length < min(grey.shape) / 4:
        return grey
    normal = ((x2 - x1) / length, (y1 - y2) / length)
    h, w = grey.shape
    across = ((np.arange(h, dtype=np.float32)[:, np.newaxis] - y1) * normal[0]
              + (np.arange(w, dtype=np.float32) - x1) * normal[1])  # each pixel's distance from the edge
    if np.mean(across[in_shadow]) < 0:  # the shadow on the side the normal points to
        normal, across = (-normal[0], -normal[1]), np.negative(across, out=across)
    fitted = _shadow_fit(grey, across)
    if fitted is None:
        return grey
    shade, softness = fitted
    seen = 0
    for along in (0.2, 0.35, 0.5, 0.65, 0.8):  # the step inside the picture, at five places along the edge
        y, x, off = y1 + along * (y2 - y1), x1 + along * (x2 - x1), softness / 2 + 3  # just clear of its ramp
        sides = [_median_near(grey, y + side * off * normal[0], x + side * off * normal[1]) for side in (-1, 1)]
        if min(sides) > 0 and 0.5 * math.log(shade(1)) >= math.log(sides[1] / sides[0]) >= 1.5 * math.log(shade(1)):
            seen += 1
    if seen < 3:
        return grey
    return grey / shade(np.clip(across / softness + 0.5, 0, 1))


def _shadow_edge(grey: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], tuple] | None:
    """Where the edge of a shadow across ``grey`` meets its border, (y, x) twice, and the border pixels in
    the shadow (an index); None unless the border holds paper of two levels in two arcs, SHADOW_ARC of it
    each at least, one SHADOW_STEP darker than the other at least, and the level steps from one to the
    other at each end (light that falls off along the border changes it gradually)."""
    ys, xs = _perimeter(grey.shape)
    values = grey[ys, xs]
    low, high = _percentile(values, 100 * SHADOW_ARC / 2), _percentile(values, 100 * (1 - SHADOW_ARC / 2))
    if low >= (1 - SHADOW_STEP) * high or low <= 0:
        return None
    reach = max(3, values.size // 50)
    dark = ~_long_runs(~_long_runs(values < (low + high) / 2, reach), reach)  # strokes that cross it left out
    turns = np.flatnonzero(dark != np.roll(dark, 1))  # where the perimeter goes into the shadow or out of it
    if len(turns) != 2 or min(turns[1] - turns[0], values.size - turns[1] + turns[0]) < SHADOW_ARC * values.size:
        return None
    ends = []
    for turn in turns:
        around = np.roll(values, reach * 3 - turn)[:reach * 6]  # the perimeter about the turn, which is at reach * 3
        before, after = np.median(around[:reach * 2]), np.median(around[reach * 4:])
        if min(before, after) >= (1 - SHADOW_STEP) * max(before, after):
            return None
        middle = (before + after) / 2
        crossings = np.flatnonzero((around[:-1] - middle) * (around[1:] - middle) <= 0)
        at = crossings[np.argmin(np.abs(crossings - reach * 3))]
        position = (turn - reach * 3 + at + (around[at] - middle) / (around[at] - around[at + 1] or 1)) % values.size
        first, second, part = int(position), (int(position) + 1) % values.size, position % 1
        ends.append((ys[first] + (ys[second] - ys[first]) * part, xs[first] + (xs[second] - xs[first]) * part))
    return ends[0], ends[1], (ys[dark], xs[dark])


def _shadow_fit(grey: np.ndarray, across: np.ndarray) -> tuple[Callable, float] | None:
    """The shadow across ``grey`` on the side of its edge where ``across`` (each pixel's distance from the
    edge) is positive, fitted to the border pixels' logs with the paper's plane: the paper's shade in it,
    as a function of how far in (0 to 1, across the edge's ramp), and the ramp's width. None when it is
    not SHADOW_STEP darker at least, or does not fit the border (a misfit more than a quarter of it)."""
    h, w = grey.shape
    index = _border_index(grey.shape)
    index = index[::max(1, index.size // 2000)]
    ring_y, ring_x = np.divmod(index, w)
    logs = np.log(np.maximum(grey.ravel().take(index), 1 / 255)).astype(np.float64)
    ring_across = across.ravel().take(index)

    def design(softness: float, depth: float = 0.5) -> np.ndarray:
        """The paper's log: a plane, less the shadow's ``depth`` ramped in across its edge."""
        shade = np.log1p(-depth * np.clip(ring_across / softness + 0.5, 0, 1)) / math.log1p(-depth)
        return np.stack([np.ones_like(logs), ring_x / w, ring_y / h, shade], axis=1)

    light, dark = np.median(logs[ring_across < 0]), np.median(logs[ring_across > 0])
    coef, _ = _robust_fit(design(np.median(SHADOW_SOFTNESS)), logs, np.array([light, 0, 0, dark - light]))
    near = np.abs(ring_across) < 2 * max(SHADOW_SOFTNESS)  # its levels first, then the ramp that fits best
    softness = min(SHADOW_SOFTNESS, key=lambda soft: np.minimum(np.abs(logs - design(soft) @ coef)[near], 0.2).sum())
    depth = -math.expm1(min(coef[3], 0))
    if depth < SHADOW_STEP:
        return None
    coef, sigma = _robust_fit(design(softness, depth), logs, coef)
    if coef[3] > math.log1p(-SHADOW_STEP) or 4 * sigma > -coef[3]:
        return None
    return (lambda ramp: np.exp(coef[3] * np.log1p(-depth * ramp) / math.log1p(-depth))), softness


def _median_near(grey: np.ndarray, y: float, x: float) -> float:
    """The median of the 3x3 pixels about (y, x) in ``grey``; 0 outside it."""
    row, column = int(round(y)), int(round(x))
    if not (0 <= row < grey.shape[0] and 0 <= column < grey.shape[1]):
        return 0.0
    return float(np.median(grey[max(row - 1, 0):row + 2, max(column - 1, 0):column + 2]))


@functools.lru_cache(maxsize=16)
def _perimeter(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns of an image's outermost pixels, once round it in order (clockwise from the top
    left corner)."""
    h, w = shape
    ys = np.concatenate([np.zeros(w - 1), np.arange(h - 1), np.full(w - 1, h - 1), np.arange(h - 1, 0, -1)])
    xs = np.concatenate([np.arange(w - 1), np.full(h - 1, w - 1), np.arange(w - 1, 0, -1), np.zeros(h - 1)])
    ys, xs = ys.astype(np.intp), xs.astype(np.intp)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


@functools.lru_cache(maxsize=16)
def _border_index(shape: tuple[int, int]) -> np.ndarray:
    """Flat indices (row-major) of the border ring of an image of ``shape``: a twentieth of the
    shorter side, at least 1 px. Images of one size usually come in series, hence the cache."""
    h, w = shape
    ring = max(1, min(h, w) // 20)
    mask = np.ones(shape, dtype=bool)
    mask[ring:h - ring, ring:w - ring] = False
    index = np.flatnonzero(mask)
    index.flags.writeable = False
    return index


def _flat_border(grey: np.ndarray) -> float | None:
    """The value of every border pixel when they are all equal, else None. Cheap: it reads only
    the border, which is what makes drawn images fast to fit."""
    border = grey.ravel().take(_border_index(grey.shape))
    value = border[0]
    return float(value) if (border == value).all() else None


def _background(grey: np.ndarray) -> tuple[np.ndarray | np.float32, float]:
    """Fit a plane a + b*x + c*y to the border pixels, robustly (ink that touches the border is
    left out). Returns the plane over the whole image (a scalar when the paper is uniform) and
    the border's noise level (sigma)."""
    flat = _flat_border(grey)
    if flat is not None:  # uniform paper (a canvas, a screenshot): the plane is that value, noise 0
        return np.float32(flat), 0.0
    return _plane(grey, *np.divmod(_border_index(grey.shape), grey.shape[1]))


def _plane(grey: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, float]:
    """Fit a plane a + b*x + c*y to the pixels at (``ys``, ``xs``), robustly (the ink among them is
    left out), or the plane with a bowl round the picture's centre (+ d*r**2) when that fits them
    far better: light falling off towards the corners. Returns the surface over the whole image
    and those pixels' noise level (sigma)."""
    h, w = grey.shape
    step = max(1, ys.size // 20000)
    ys, xs = ys[::step], xs[::step]
    values = grey[ys, xs].astype(np.float64)
    design = np.stack([np.ones_like(values), xs / w, ys / h, _radius_squared(ys / h, xs / w)], axis=1)
    coef, sigma = _robust_fit(design[:, :3], values)
    with_bowl, bowl_sigma = _robust_fit(design, values)
    if bowl_sigma < BOWL_GAIN * sigma:
        coef, sigma = with_bowl, bowl_sigma
    y, x = (np.arange(h) / h)[:, np.newaxis], (np.arange(w) / w)[np.newaxis, :]
    surface = coef[0] + coef[1] * x + coef[2] * y + (coef[3] * _radius_squared(y, x) if len(coef) > 3 else 0)
    return np.asarray(surface, dtype=np.float32), sigma


def _robust_fit(design: np.ndarray, values: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Least squares of ``values`` on ``design``'s columns (the first a constant) from ``start`` (else
    their median), refitted twice on the inliers; and the values' noise level (sigma) about the fit."""
    if start is None:
        coef = np.zeros(design.shape[1])
        coef[0] = np.median(values)
    else:
        coef = start
    for _ in range(2):
        residual = values - design @ coef
        spread = 1.4826 * np.median(np.abs(residual - np.median(residual)))
        inliers = np.abs(residual) <= max(3 * spread, 2 / 255)
        if inliers.sum() >= design.shape[1]:
            coef = np.linalg.lstsq(design[inliers], values[inliers], rcond=None)[0]
    return coef, 1.4826 * float(np.median(np.abs(values - design @ coef)))


def _radius_squared(y, x):
    """The squared distance from the picture's centre, its coordinates in [0, 1): the shape of light
    falling off towards the corners (a lens's vignetting), which a plane cannot follow."""
    return (y - 0.5) ** 2 + (x - 0.5) ** 2


def _noise_floor(sigma: float) -> float:
    """How far from the paper a pixel must be to count as ink: 4 sigma of the paper's noise, and
    never less than the 2/255 of 8-bit rounding."""
    return max(4 * sigma, 2 / 255)


def _ink_map(grey: np.ndarray) -> np.ndarray:
    """Luminance -> ink, light on dark, background 0, stretched so that the strokes' 99th percentile
    is 1 (the strongest 1 % lie above it). Raises InvalidInput if blank.

    The border is taken for paper first. An item that covers most of the border (a bag filling
    the frame) makes the border so uneven that its noise floor leaves no room for ink at all;
    only then is the paper taken from the part of the border the item leaves."""
    background, sigma = _background(grey)
    try:
        return _ink_against(grey, background, sigma)
    except InvalidInput:
        if _noise_floor(sigma) + MIN_CONTRAST <= 1:
            raise  # the border is paper, and there is no ink on it
    return _ink_against(grey, *_uncovered_background(grey))


def _item_on_surface(grey: np.ndarray) -> np.ndarray:
    """The ink of an item (a garment) photographed lying on a surface, as _ink_map's: the item is where the
    picture stands out from the surface either way, its outline closed across gaps ITEM_GAP of the shorter
    side wide and its holes filled, and its ink is how much darker than its own lightest part it is (as the
    dataset's product photos on white have it). A surface of another shade than white, or with a grain or
    a weave, hides the parts of the item lighter than it, or no darker by more than its grain, from
    _ink_map. A picture with half its border of one value (a product picture on white, a drawing), or
    covered by the item, or whose item is lighter than the surface (a dark table), is _ink_map's."""
    border = grey.ravel().take(_border_index(grey.shape))
    if 2 * np.count_nonzero(border == np.partition(border, border.size // 2)[border.size // 2]) >= border.size:
        return _ink_map(grey)  # half the border is one value: a drawing or a picture made on a computer
    background, sigma = _background(grey)
    floor = _noise_floor(sigma)
    deviation = grey - background
    if floor + MIN_CONTRAST > 1 or not _dark_is_ink(deviation, floor):  # it covers the border, or is lighter
        return _ink_map(grey)
    apart = _drop_isolated((np.abs(deviation) > floor).astype(np.float32)) > 0
    gap = max(1, round(ITEM_GAP * min(grey.shape)))
    outside = _connected(_outermost(grey.shape), ~_dilated(apart, gap), diagonal=False)
    item = ~_dilated(outside, gap)
    if not item.any():
        return _ink_map(grey)
    ink = np.where(item, np.maximum(_percentile(grey[item], 99) - grey, 0), np.float32(0))
    strokes = ink[ink > 0]
    level = _percentile(strokes, 99) if strokes.size else 0.0
    if level < MIN_CONTRAST:
        return _ink_map(grey)
    return _drop_isolated(np.divide(ink, level, dtype=np.float32))


def _dilated(mask: np.ndarray, depth: int, *, diagonal: bool = False) -> np.ndarray:
    """The mask ``mask`` grown by ``depth`` pixels: a 3x3 cross at a time, or a 3x3 square with ``diagonal``."""
    for _ in range(depth):
        padded = np.pad(mask, 1)
        if diagonal:
            rows = padded[:-2] | padded[1:-1] | padded[2:]
            mask = rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]
        else:
            mask = padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return mask


def _uncovered_background(grey: np.ndarray) -> tuple[np.float32, float]:
    """The paper of an image whose border the ink mostly covers, as a level and its noise (sigma):
    the level most border pixels share within the noise floor, the noise measured between
    neighbouring pixels over the whole image (the item's shading is smooth, its edges few)."""
    differences = np.concatenate([np.diff(grey, axis=0).ravel(), np.diff(grey, axis=1).ravel()])
    sigma = 1.4826 * float(np.median(np.abs(differences))) / math.sqrt(2)  # a difference has twice the variance
    border = np.sort(grey.ravel().take(_border_index(grey.shape)))
    floor = _noise_floor(sigma)
    shared = np.searchsorted(border, border + floor, side="right") - np.arange(border.size)
    start = int(np.argmax(shared))
    return np.float32(np.median(border[start:start + shared[start]])), sigma


def _ink_against(grey: np.ndarray, background: np.ndarray | np.float32, sigma: float) -> np.ndarray:
    """The ink of ``grey`` on paper ``background`` whose noise is ``sigma``; InvalidInput if blank."""
    deviation = grey - background
    floor = _noise_floor(sigma)
    # Each side's weight is its squared deviations beyond the noise floor: strokes stand far out
    # from the paper, while a broad, faint departure of the paper itself (a flash's hot spot, which
    # neither a plane nor a bowl follows) covers more pixels but weighs little. A side with nothing
    # beyond the floor weighs 0 (a canvas or an MNIST digit, whose ink is all on one side): the
    # weights are summed only when both sides have some.
    ink = -deviation if _dark_is_ink(deviation, floor) else deviation
    strokes = ink[ink > floor]
    if strokes.size == 0:
        raise InvalidInput(BLANK)
    level = _percentile(strokes, 99)
    if level - floor < MIN_CONTRAST:
        raise InvalidInput(BLANK)
    ink = np.subtract(ink, floor, dtype=np.float32)
    np.maximum(ink, 0, out=ink)
    ink /= np.float32(level - floor)
    return _drop_isolated(ink)


def _dark_is_ink(deviation: np.ndarray, floor: float) -> bool:
    """Whether the ink is darker than the paper, from the pixels' ``deviation`` from it (see _ink_against)."""
    dark_beyond = -floor - deviation.min() > 0
    light_beyond = deviation.max() - floor > 0
    if dark_beyond and light_beyond:
        dark = np.maximum(-floor - deviation, 0)
        light = np.maximum(deviation - floor, 0)
        dark_weight = np.square(dark, out=dark).sum(dtype=np.float64)
        light_weight = np.square(light, out=light).sum(dtype=np.float64)
        return bool(dark_weight > light_weight)
    return bool(dark_beyond)


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) by partial sorting, several times faster."""
    position = q / 100 * (values.size - 1)
    low = int(position)
    high = min(low + 1, values.size - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (part[high] - part[low]) * (position - low))


def _drop_isolated(ink: np.ndarray) -> np.ndarray:
    """Zero the inked pixels none of whose 8 neighbours is inked (sensor noise, dust)."""
    inked = ink > 0
    h, w = inked.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = inked
    rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]  # 3x3 box sums, one axis at a time
    box = rows[:-2] + rows[1:-1] + rows[2:]
    np.copyto(ink, 0, where=box == 1)  # the box counts the pixel itself (and ink elsewhere is 0 already)
    return ink


def _ink_bounds(ink: np.ndarray, level: float) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right; exclusive ends) of the ink above ``level``.

    Faint halos (JPEG ringing, blur) do not widen it, and what is apart from the item is left out:
    a run of inked rows (or columns) at an edge, separated from the rest by blank ones, that holds
    less than SPECK_MASS of the ink (a speck), or less than DETACHED_MASS of the rest's and lies
    further from it than DETACHED_GAP of the rest's extent (a mark or a word beside the digit).
    The columns are then measured in the rows kept, and the rows in the columns kept."""
    strong = ink * (ink > level)  # ink is never negative; twice as fast as np.where(ink > level, ink, 0)
    rows = strong.sum(axis=1, dtype=np.float64)
    total = float(rows.sum())
    if total <= 0:
        raise InvalidInput(BLANK)
    top, bottom = _span(rows, total)
    left, right = _span(strong[top:bottom].sum(axis=0, dtype=np.float64), total)
    top, bottom = _span(strong[:, left:right].sum(axis=1, dtype=np.float64), total)
    return top, bottom, left, right


def _span(profile: np.ndarray, total: float) -> tuple[int, int]:
    """The first and last (exclusive) index of ``profile``'s inked runs that belong to the item
    (see _ink_bounds)."""
    starts, ends = _runs(profile > 0)
    if len(starts) == 1:  # one run, nothing detached
        return int(starts[0]), int(ends[0])
    masses = np.array([profile[s:e].sum() for s, e in zip(starts, ends)])
    first, last = 0, len(starts) - 1

    def apart(run: int, rest: slice, gap: int) -> bool:
        extent = ends[rest][-1] - starts[rest][0]
        return (masses[run] < SPECK_MASS * total
                or (masses[run] < DETACHED_MASS * masses[rest].sum() and gap > DETACHED_GAP * extent))

    while first < last and apart(first, slice(first + 1, last + 1), starts[first + 1] - ends[first]):
        first += 1
    while last > first and apart(last, slice(first, last), starts[last] - ends[last - 1]):
        last -= 1
    return int(starts[first]), int(ends[last])


def _scaled_region(ink: np.ndarray, bounds: tuple[int, int, int, int], scale: float):
    """The ink in ``bounds`` resized by ``scale`` so the box covers whole output pixels (as in
    the MNIST recipe), plus a margin of MARGIN output pixels around it so halos fainter than the
    box level are kept. Returns the resized patch; the box starts at (MARGIN, MARGIN) in it."""
    top, bottom, left, right = bounds
    out_h = max(1, int(round((bottom - top) * scale)))
    out_w = max(1, int(round((right - left) * scale)))
    if (out_h, out_w) == (bottom - top, right - left):  # already the right size: copy, no resampling
        return _window(ink, top - MARGIN, bottom + MARGIN, left - MARGIN, right + MARGIN), out_h, out_w
    scale_y, scale_x = out_h / (bottom - top), out_w / (right - left)
    pad = int(math.ceil(MARGIN / min(scale_y, scale_x))) + 1
    window = _window(ink, top - pad, bottom + pad, left - pad, right + pad)
    source_box = (pad - MARGIN / scale_x, pad - MARGIN / scale_y,
                  pad + (right - left) + MARGIN / scale_x, pad + (bottom - top) + MARGIN / scale_y)
    size = (out_w + 2 * MARGIN, out_h + 2 * MARGIN)
    resized = Image.frombytes("F", window.shape[::-1], window).resize(size, RESAMPLE, box=source_box)
    return np.frombuffer(resized.tobytes(), dtype=np.float32).reshape(size[::-1]), out_h, out_w


def _window(ink: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """ink[top:bottom, left:right] where the rows and columns outside the image read as 0."""
    h, w = ink.shape
    window = np.zeros((bottom - top, right - left), dtype=np.float32)
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(bottom, h), min(right, w)
    window[t0 - top:t1 - top, l0 - left:l1 - left] = ink[t0:t1, l0:l1]
    return window


def _paste(field: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Add ``patch`` into ``field`` at (top, left), dropping whatever falls outside it."""
    h, w = field.shape
    t0, l0 = max(0, -top), max(0, -left)
    t1, l1 = min(patch.shape[0], h - top), min(patch.shape[1], w - left)
    if t1 > t0 and l1 > l0:
        field[top + t0:top + t1, left + l0:left + l1] += patch[t0:t1, l0:l1]


def _fit_digit(ink: np.ndarray, bounds: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """MNIST: the box's longest side to 20 (of 28), strokes wider than STROKE_CAP thinned to it,
    then shift so the centre of mass sits at pixel (14, 14), keeping the box inside the field."""
    box_side = round(DIGIT_BOX_FRACTION * min(size))
    digit, box_h, box_w = _scaled_region(ink, bounds, box_side / _longest_side(bounds))
    width = _stroke_width(digit)
    if width > STROKE_CAP * box_side:
        thin = _with_thin_strokes(ink, bounds, width * _longest_side(bounds) / box_side)
        if thin is not None:
            ink, bounds = thin
            digit, box_h, box_w = _scaled_region(ink, bounds, box_side / _longest_side(bounds))
    mass = digit.sum(dtype=np.float64)
    com_y = float((digit.sum(axis=1) @ np.arange(digit.shape[0])) / mass) - MARGIN
    com_x = float((digit.sum(axis=0) @ np.arange(digit.shape[1])) / mass) - MARGIN
    box_top = min(max(math.floor(size[0] // 2 - com_y + 0.5), 0), size[0] - box_h)
    box_left = min(max(math.floor(size[1] // 2 - com_x + 0.5), 0), size[1] - box_w)
    field = np.zeros(size, dtype=np.float32)
    _paste(field, digit, box_top - MARGIN, box_left - MARGIN)
    return field


def _longest_side(bounds: tuple[int, int, int, int]) -> int:
    top, bottom, left, right = bounds
    return max(bottom - top, right - left)


def _with_thin_strokes(ink: np.ndarray, bounds: tuple[int, int, int, int], width: float):
    """``ink`` with its strokes, ``width`` pixels wide, thinned to STROKE_CAP of the box's longest
    side, and its new box; None when they do not survive that (the box is lost). The strokes are
    eroded from both sides by the same depth, which the box loses too."""
    # Eroding by d from each side makes the strokes w - 2d wide and the box's side L - 2d: solve
    # (w - 2d) / (L - 2d) = STROKE_CAP for d.
    thin = _eroded(ink, (width - STROKE_CAP * _longest_side(bounds)) / (2 * (1 - STROKE_CAP)))
    try:
        return thin, _ink_bounds(thin, BOX_LEVEL["digit"])
    except ScratchnetError:
        return None


def _stroke_width(patch: np.ndarray) -> float:
    """The strokes' mean width in ``patch`` (which has blank pixels all round them): twice their
    area over their outline's length, as a stroke of length L and width w covers Lw and is
    outlined by 2L. The outline is the steps between neighbouring pixels, |dy| + |dx|, times
    pi/4: that sum overcounts a curve's length by 4/pi, on average over its directions."""
    steps = (np.abs(patch[1:] - patch[:-1]).sum(dtype=np.float64)
             + np.abs(patch[:, 1:] - patch[:, :-1]).sum(dtype=np.float64))
    return 2 * float(patch.sum(dtype=np.float64)) / (steps * math.pi / 4) if steps > 0 else 0.0


def _eroded(ink: np.ndarray, depth: float) -> np.ndarray:
    """Grey erosion of ``ink`` by ``depth`` pixels: the minimum over a 3x3 cross and a 3x3 square in
    turn (an octagon, close to a disc), and the last fraction of a pixel as a blend of two steps."""
    steps, part = int(depth), depth - int(depth)
    for step in range(steps + (part > 0)):
        padded = np.pad(ink, 1)
        eroded = np.minimum(np.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
                            np.minimum(padded[1:-1, :-2], padded[1:-1, 2:]))
        if step % 2:
            eroded = np.minimum(eroded, np.minimum(np.minimum(padded[:-2, :-2], padded[2:, 2:]),
                                                   np.minimum(padded[:-2, 2:], padded[2:, :-2])))
        np.minimum(eroded, ink, out=eroded)
        ink = eroded if step < steps else (1 - part) * ink + part * eroded
    return ink.astype(np.float32, copy=False)


def _fit_garment(ink: np.ndarray, bounds: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Fashion-MNIST: the item's longest side fills the field, the item centred (an odd margin's
    extra pixel goes above and to the left, as in the dataset)."""
    top, bottom, left, right = bounds
    scale = min(size[0] / (bottom - top), size[1] / (right - left))
    item, box_h, box_w = _scaled_region(ink, bounds, scale)
    box_h, box_w = min(box_h, size[0]), min(box_w, size[1])
    field = np.zeros(size, dtype=np.float32)
    _paste(field, item, (size[0] - box_h + 1) // 2 - MARGIN, (size[1] - box_w + 1) // 2 - MARGIN)
    return field
