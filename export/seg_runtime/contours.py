"""Planar contours of a 2D mask and back: the geometry under RTSTRUCT output.

A contour runs along pixel edges (its vertices are pixel corners), so it encloses exactly the mask's
pixels: rasterised back at pixel centres with the even-odd rule, the contours of a slice give the mask
again, holes and separate components included. A hole is an inner contour (clockwise, where outer
contours run counter-clockwise); pixels that touch only at a corner belong to separate contours
(4-connectivity), so no contour touches itself. Runs of collinear edges become one segment.

Coordinates are pixel indices ``(x, y)`` of a mask indexed ``mask[x, y]``; a corner sits at half-integers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Turn preference at a vertex with two ways out (two pixels touching at a corner): left first keeps the
# walk around the same pixel, which separates the diagonal neighbours.
_DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The closed contours of a 2D mask along pixel edges.

    Args:
        mask: Boolean mask. Shape: [X, Y].

    Returns:
        One array of vertices per contour (not repeating the first at the end), each at pixel corners
        in pixel-index coordinates. Shape: [N, 2] (x, y), float64.
    """
    edges = _boundary_edges(np.asarray(mask, dtype=bool))
    if not edges:
        return []
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for start, step in edges:
        outgoing.setdefault(start, []).append(step)
    loops = []
    while outgoing:
        loops += _simple_loops(_walk(outgoing, next(iter(outgoing))))
    return [np.asarray(_corners(loop), dtype=np.float64) - 0.5 for loop in loops]


def _boundary_edges(mask: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Unit edges between a mask pixel and a non-mask neighbour, foreground on the left.

    A corner ``(i, j)`` is the point ``(i - 0.5, j - 0.5)``; an edge is ``(start corner, step)``.
    """
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    edges = []
    # (neighbour offset, start corner offset from the pixel, step): bottom, right, top, left sides.
    for (dx, dy), (sx, sy), step in (((0, -1), (0, 0), (1, 0)), ((1, 0), (1, 0), (0, 1)),
                                     ((0, 1), (1, 1), (-1, 0)), ((-1, 0), (0, 1), (0, -1))):
        neighbour = padded[1 + dx : padded.shape[0] - 1 + dx, 1 + dy : padded.shape[1] - 1 + dy]
        xs, ys = np.nonzero(inside & ~neighbour)
        edges += [((int(x) + sx, int(y) + sy), step) for x, y in zip(xs, ys, strict=True)]
    return edges


def _walk(outgoing: dict[tuple[int, int], list[tuple[int, int]]], start: tuple[int, int]) -> list[tuple[int, int]]:
    """Follow unused edges from ``start`` until back at it; returns the corner of every unit edge."""
    points: list[tuple[int, int]] = []
    point, heading = start, None
    while True:
        steps = outgoing[point]
        step = steps[0] if heading is None or len(steps) == 1 else _leftmost(steps, heading)
        steps.remove(step)
        if not steps:
            del outgoing[point]
        points.append(point)
        heading = step
        point = (point[0] + step[0], point[1] + step[1])
        if point == start:
            return points


def _simple_loops(points: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a closed walk where it passes a corner twice, so no loop touches itself."""
    loops, stack, seen = [], [], {}
    for point in points:
        if point in seen:
            at = seen[point]
            loops.append(stack[at:])
            for gone in stack[at + 1 :]:
                del seen[gone]
            del stack[at + 1 :]
            continue
        seen[point] = len(stack)
        stack.append(point)
    loops.append(stack)
    return [loop for loop in loops if len(loop) >= 4]


def _corners(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The loop's vertices where its direction changes (collinear runs become one segment)."""
    array = np.asarray(loop)
    before = array - np.roll(array, 1, axis=0)
    after = np.roll(array, -1, axis=0) - array
    turns = (before != after).any(axis=1)
    return [loop[i] for i in np.flatnonzero(turns)]


def _leftmost(steps: list[tuple[int, int]], heading: tuple[int, int]) -> tuple[int, int]:
    """Of the ways out, the sharpest left turn relative to ``heading``."""
    index = _DIRECTIONS.index(heading)
    for turn in (1, 0, 3, 2):  # left, straight, right, back
        candidate = _DIRECTIONS[(index + turn) % 4]
        if candidate in steps:
            return candidate
    return steps[0]


def rasterise(contours: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill contours at pixel centres with the even-odd rule (holes subtract).

    Args:
        contours: Vertices per contour in pixel-index coordinates. Shape: [N, 2] (x, y) each.
        shape: The mask's shape ``(X, Y)``.

    Returns:
        The mask. Shape: [X, Y], bool.
    """
    crossings: list[list[float]] = [[] for _ in range(shape[1])]
    for contour in contours:
        points = np.asarray(contour, dtype=np.float64)
        if len(points) < 3:
            continue
        x0, y0 = points[:, 0], points[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        for ax, ay, bx, by in zip(x0, y0, x1, y1, strict=True):
            if ay == by:
                continue
            low, high = (ay, by) if ay < by else (by, ay)
            for y in range(max(0, int(np.ceil(low))), min(shape[1] - 1, int(np.ceil(high) - 1)) + 1):
                if low <= y < high:
                    crossings[y].append(ax + (y - ay) * (bx - ax) / (by - ay))
    mask = np.zeros(shape, dtype=bool)
    centres = np.arange(shape[0], dtype=np.float64)
    for y, xs in enumerate(crossings):
        if xs:
            mask[:, y] = np.searchsorted(np.sort(xs), centres) % 2 == 1
    return mask
