"""A small raster canvas that writes PNG files with the standard library (zlib).

Enough for report charts: lines, filled rectangles and a 5×7 bitmap font for
labels (digits, capitals and a little punctuation). RGB, 8 bits a channel, no
interlacing; the same drawing gives the same bytes.
"""

from __future__ import annotations

import struct
import zlib

Color = tuple[int, int, int]

_GLYPHS_SRC = {
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####", "3": "#####...#...#.....#.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "###..#..#.#...##...##...##..#.###..",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....##..#..##...",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##.#.##...##...##...#", "N": "#...##...###..##.#.##..###...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".#####....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    ".": "..........................##...##..", ",": ".....................##...##...#...",
    "-": "...............###.................", "+": ".......#....#..#####..#....#.......",
    "%": "##...##..#...#...#...#...#..##...##", ":": "......##...##.........##...##......",
    "/": "....#...#....#...#...#....#...#....", " ": "...................................",
    "$": "..#...####.#.#..###...#.#.####...#.", "(": "...#...#...#....#....#.....#.....#.",
    ")": ".#.....#.....#....#....#...#...#...", "=": "..........#####.....#####..........",
}
GLYPH_W, GLYPH_H = 5, 7
_GLYPHS = _GLYPHS_SRC
assert all(len(rows) == GLYPH_W * GLYPH_H for rows in _GLYPHS.values())


class Canvas:
    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("a canvas needs a positive size")
        self.width = width
        self.height = height
        self._px = bytearray(bytes(background) * (width * height))

    def pixel(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self._px[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both included."""
        xa, xb = sorted((max(0, x0), min(self.width - 1, x1)))
        ya, yb = sorted((max(0, y0), min(self.height - 1, y1)))
        if xa > xb or ya > yb:
            return
        row = bytes(color) * (xb - xa + 1)
        for y in range(ya, yb + 1):
            i = 3 * (y * self.width + xa)
            self._px[i : i + len(row)] = row

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.pixel(x0, y0, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, color: Color, scale: int = 1) -> int:
        """Draw ``text`` (unknown characters as blanks) with its top-left at (x, y); returns the width."""
        cx = x
        for ch in text.upper():
            rows = _GLYPHS.get(ch)
            if rows is not None:
                for gy in range(GLYPH_H):
                    for gx in range(GLYPH_W):
                        if rows[gy * GLYPH_W + gx] == "#":
                            self.rect(cx + gx * scale, y + gy * scale, cx + gx * scale + scale - 1,
                                      y + gy * scale + scale - 1, color)
            cx += (GLYPH_W + 1) * scale
        return cx - x

    @staticmethod
    def text_width(text: str, scale: int = 1) -> int:
        return len(text) * (GLYPH_W + 1) * scale

    def png(self) -> bytes:
        stride = 3 * self.width
        raw = b"".join(b"\x00" + bytes(self._px[y * stride : (y + 1) * stride]) for y in range(self.height))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + \
            _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
