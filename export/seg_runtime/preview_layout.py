"""Where the preview's pictures and words go, and drawing them (pillow's built-in font, no files).

:func:`layout_preview` places the panels side by side under a strip of titles (the slice shown),
puts the patient's direction at each panel edge (``R``/``L``, ``A``/``P``...) and a legend under the
panels (a colour swatch and ``<value> <class name>`` per label, wrapped to the picture's width). It
only computes positions, so tests read the words and where they are; :func:`draw_layout` paints them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

GAP = 4  # pixels between panels and around the words
_SWATCH_SPACE = 12  # pixels after each legend entry
TEXT = (255, 255, 255)  # white with a black outline: readable on grey and on colour, and never "coloured"
OUTLINE = (0, 0, 0)

Measure = Callable[[str], int]  # text -> width in pixels


@dataclass(frozen=True)
class Panel:
    """One picture of the preview.

    Attributes:
        pixels: RGB, uint8. Shape: [H, W, 3].
        title: What it shows (``axial z=37/155``); empty for a 2D image.
        edges: The patient direction at each edge (``left``, ``right``, ``top``, ``bottom``), when known.
    """

    pixels: np.ndarray
    title: str = ""
    edges: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Text:
    """A word placed at its top-left corner ``(x, y)``; ``role`` says what it is (title, edge, legend)."""

    x: int
    y: int
    text: str
    role: str


@dataclass(frozen=True)
class Swatch:
    """A filled square of a label's colour: ``(x0, y0, x1, y1)`` inclusive."""

    box: tuple[int, int, int, int]
    colour: tuple[int, int, int]


@dataclass
class Layout:
    """The whole picture: its size, each panel's top-left corner, the words and the legend swatches."""

    width: int
    height: int
    panels: list[tuple[int, int, np.ndarray]]
    texts: list[Text]
    swatches: list[Swatch]


def layout_preview(panels: Sequence[Panel], legend: Sequence[tuple[str, tuple[int, int, int]]],
                   measure: Measure, line_height: int) -> Layout:
    """Place panels, titles, edge letters and the legend (see the module docstring).

    Args:
        panels: The pictures, left to right.
        legend: ``(text, rgb)`` per label, in order.
        measure: The width in pixels of a text in the font used to draw.
        line_height: The font's line height in pixels.
    """
    top = line_height + 2 * GAP if any(p.title for p in panels) else 0
    texts, placed, x = [], [], 0
    for panel in panels:
        height, width = panel.pixels.shape[:2]
        placed.append((x, top, panel.pixels))
        if panel.title:
            texts.append(Text(x + GAP, GAP, panel.title, "title"))
        texts += _edge_texts(panel.edges, x, top, width, height, measure, line_height)
        x += width + GAP
    width = max(x - GAP, *(measure(t) + line_height + 2 * GAP for t, _ in legend)) if legend else x - GAP
    y = top + max(p.pixels.shape[0] for p in panels) + GAP
    swatches, column = [], GAP
    for text, colour in legend:
        entry = line_height + GAP + measure(text)
        if column > GAP and column + entry > width - GAP:  # the next line of the legend
            column, y = GAP, y + line_height + GAP
        swatches.append(Swatch((column, y, column + line_height - 1, y + line_height - 1), colour))
        texts.append(Text(column + line_height + GAP, y, text, "legend"))
        column += entry + _SWATCH_SPACE
    height = y + line_height + GAP if legend else y - GAP
    return Layout(width, height, placed, texts, swatches)


def _edge_texts(edges: dict[str, str], x: int, y: int, width: int, height: int, measure: Measure,
                line_height: int) -> list[Text]:
    """The direction letters inside a panel, centred on its edges."""
    spots = {"left": (x + GAP, y + (height - line_height) // 2),
             "top": (x + (width - measure(edges.get("top", ""))) // 2, y + GAP),
             "bottom": (x + (width - measure(edges.get("bottom", ""))) // 2, y + height - line_height - GAP),
             "right": (x + width - GAP - measure(edges.get("right", "")), y + (height - line_height) // 2)}
    return [Text(*spots[edge], letter, f"edge {edge}") for edge, letter in edges.items()]


def font_and_metrics(size: int = 12):
    """Pillow's built-in font (a scalable one where pillow has FreeType, else its bitmap font), its
    width measure and line height."""
    from PIL import ImageFont

    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # pillow < 10.1: the bitmap font only
        font = ImageFont.load_default()

    def measure(text: str) -> int:
        return int(np.ceil(font.getbbox(text)[2])) if text else 0

    bottom = font.getbbox("Agjy|")[3]
    return font, measure, int(np.ceil(bottom)) + 1


def draw_layout(layout: Layout, font) -> np.ndarray:
    """Paint a layout on black: the panels, the swatches, then the words. Shape: [H, W, 3] uint8."""
    from PIL import Image, ImageDraw

    canvas = np.zeros((layout.height, layout.width, 3), dtype=np.uint8)
    for x, y, pixels in layout.panels:
        canvas[y : y + pixels.shape[0], x : x + pixels.shape[1]] = pixels
    picture = Image.fromarray(canvas)
    pen = ImageDraw.Draw(picture)
    for swatch in layout.swatches:
        pen.rectangle(swatch.box, fill=swatch.colour, outline=TEXT)
    for text in layout.texts:
        pen.text((text.x, text.y), text.text, font=font, fill=TEXT, stroke_width=1, stroke_fill=OUTLINE)
    return np.asarray(picture)
