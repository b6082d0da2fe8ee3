"""ANSI colour codes (SGR) in log lines to HTML spans; everything else is escaped."""

from __future__ import annotations

import re
from html import escape

# CSI sequences: SGR ("m") is rendered, every other one (cursor moves, erase) is dropped.
_CSI = re.compile(r"\x1b\[([0-9;:?]*)([@-~])")
# Other escapes and control characters that would only garble a page.
_CONTROL = re.compile(r"\x1b[@-Z\\-_]?|[\x00-\x08\x0b-\x1f\x7f]")
# Most log lines hold none of these: they are returned as they are, which is 10x faster.
_NEEDS_WORK = re.compile(r"[<>&\x00-\x08\x0b-\x1f\x7f]")
# SGR parameters are small (codes up to 107, colour parts up to 255); a longer one is not read
# as a number at all (a job printing 5,000 digits must not stop its log from showing).
_MAX_PARAM_DIGITS = 5


def _params(text: str) -> list[int | None]:
    """SGR parameters: an empty one is 0 (reset); one too long to be real is None (ignored)."""
    return [0 if not p else int(p) if p.isdigit() and len(p) <= _MAX_PARAM_DIGITS else None
            for p in re.split("[;:]", text or "0")]


class _Style:
    __slots__ = ("bg", "bold", "dim", "fg", "italic", "underline")

    def __init__(self) -> None:
        self.bold = self.dim = self.italic = self.underline = False
        self.fg: str | None = None
        self.bg: str | None = None

    def apply(self, params: str) -> None:
        codes = _params(params)
        i = 0
        while i < len(codes):
            code = codes[i]
            if code is None:
                pass  # not a parameter anyone means: ignored
            elif code == 0:
                self.__init__()  # type: ignore[misc]
            elif code == 1:
                self.bold = True
            elif code == 2:
                self.dim = True
            elif code == 3:
                self.italic = True
            elif code == 4:
                self.underline = True
            elif code == 22:
                self.bold = self.dim = False
            elif code == 23:
                self.italic = False
            elif code == 24:
                self.underline = False
            elif 30 <= code <= 37:
                self.fg = f"c{code - 30}"
            elif 90 <= code <= 97:
                self.fg = f"c{code - 90 + 8}"
            elif code == 39:
                self.fg = None
            elif 40 <= code <= 47:
                self.bg = f"b{code - 40}"
            elif 100 <= code <= 107:
                self.bg = f"b{code - 100 + 8}"
            elif code == 49:
                self.bg = None
            elif code in (38, 48):
                colour, used = _extended(codes[i + 1:])
                i += used
                if code == 38:
                    self.fg = colour
                else:
                    # "c3" (a palette colour) -> "b3"; "#rrggbb" -> "b#rrggbb".
                    self.bg = None if colour is None else (
                        "b" + colour if colour.startswith("#") else "b" + colour[1:])
            i += 1

    def span(self) -> str:
        """The opening tag for this style, or "" for the default style."""
        classes = [c for c in (self.fg, self.bg) if c and "#" not in c]
        classes += [name for name in ("bold", "dim", "italic", "underline")
                    if getattr(self, name)]
        styles = []
        if self.fg and self.fg.startswith("#"):
            styles.append(f"color:{self.fg}")
        if self.bg and self.bg.startswith("b#"):
            styles.append(f"background:{self.bg[1:]}")
        if not classes and not styles:
            return ""
        attrs = f' class="{" ".join(classes)}"' if classes else ""
        if styles:
            attrs += f' style="{";".join(styles)}"'
        return f"<span{attrs}>"


def _extended(rest: list[int | None]) -> tuple[str | None, int]:
    """38;5;N (256 colours) or 38;2;R;G;B (true colour); returns the colour and codes used
    (no colour when a part of it is not a number)."""
    if len(rest) >= 2 and rest[0] == 5:
        n = rest[1]
        if n is None:
            return None, 2
        if n < 16:
            return f"c{n}", 2
        return _xterm256(n), 2
    if len(rest) >= 4 and rest[0] == 2:
        parts = rest[1:4]
        if any(v is None for v in parts):
            return None, 4
        r, g, b = (max(0, min(255, v or 0)) for v in parts)
        return f"#{r:02x}{g:02x}{b:02x}", 4
    return None, len(rest)


def _xterm256(n: int) -> str:
    n = max(16, min(255, n))
    if n >= 232:
        level = 8 + (n - 232) * 10
        return f"#{level:02x}{level:02x}{level:02x}"
    n -= 16
    steps = (0, 95, 135, 175, 215, 255)
    return f"#{steps[n // 36]:02x}{steps[(n // 6) % 6]:02x}{steps[n % 6]:02x}"


def to_html(line: str) -> str:
    """One log line as safe HTML: text escaped, colours as <span class=...> (never raw input)."""
    if _NEEDS_WORK.search(line) is None:
        return line
    if "\x1b" not in line:
        return escape(_CONTROL.sub("", line), quote=False)
    out: list[str] = []
    style = _Style()
    open_tag = ""
    position = 0
    for match in _CSI.finditer(line):
        out.append(escape(_CONTROL.sub("", line[position:match.start()]), quote=False))
        position = match.end()
        if match.group(2) != "m":
            continue
        style.apply(match.group(1))
        if open_tag:
            out.append("</span>")
        open_tag = style.span()
        out.append(open_tag)
    out.append(escape(_CONTROL.sub("", line[position:]), quote=False))
    if open_tag:
        out.append("</span>")
    return "".join(out)


def lines_html(lines: list[str]) -> list[str]:
    """Many lines as safe HTML: one search over them all when none needs work (the usual case)."""
    if _NEEDS_WORK.search("\n".join(lines)) is None:
        return lines
    return [to_html(line) for line in lines]


def strip(line: str) -> str:
    """The line's text without escape sequences (for search and plain display)."""
    return _CONTROL.sub("", _CSI.sub("", line))

