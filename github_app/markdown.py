"""Text that is not jobbot's own (names, refs, reasons, log lines, answers) made inert in
GitHub Markdown: no mention that pings, no raw HTML, no link or image, no way out of code.

- Text: Markdown's punctuation is backslash-escaped (so `&lt;`, `<img>`, `[x](y)` and
  `|` show as typed) and a zero-width joiner follows every `@` that could start a mention
  (`@org/team` shows as typed and pings nobody).
- Inline code and code blocks: fences longer than any run of backticks in the text.
- Table cells: `|` escaped (also inside code, where GitHub's tables read `\\|` as `|`) and
  newlines as spaces.
- `sanitize`: a line of jobbot's answer that quotes untrusted input keeps its code spans and
  nothing else: the rest is escaped as text.
"""

from __future__ import annotations

import re

ZWJ = "\u200d"
# Escaped in text: what starts markup inline, or a table cell, or an entity.
_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~])")
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_BACKTICKS = re.compile(r"`+")
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def text(value: str) -> str:
    """`value` as Markdown text, shown as typed, on one line (also fit for a table cell)."""
    flat = " ".join(value.splitlines())
    return _MENTION.sub("@" + ZWJ, _SPECIAL.sub(r"\\\1", flat))


def code(value: str, *, table: bool = False) -> str:
    """`value` as inline code on one line; in a table cell (`table`) its `|` are escaped."""
    flat = " ".join(value.splitlines())
    if table:
        flat = flat.replace("|", "\\|")
    fence = "`" * (_longest_backticks(flat) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or flat.strip(" ") == "" else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def fence(value: str) -> str:
    """`value` as a fenced code block, whose fence no line of it can close."""
    marks = "`" * max(3, _longest_backticks(value) + 1)
    return f"{marks}\n{value}\n{marks}"


def fence_length(value: str) -> int:
    """Characters `fence` adds around `value`."""
    return 2 * max(3, _longest_backticks(value) + 1) + 2


def sanitize(line: str, *, table: bool = False) -> str:
    """A line of jobbot's Markdown that quotes untrusted input: its code spans stay code (with
    fences of our own), everything else is escaped as text."""
    out: list[str] = []
    for is_code, value in _spans(line):
        out.append(code(value, table=table) if is_code else text(value))
    return "".join(out)


def sanitize_block(block: str) -> str:
    """Several lines of jobbot's Markdown (an answer, a table of jobs) made inert line by line;
    table rows keep their cells."""
    lines = []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1:
            cells = [sanitize(cell.strip().replace("\\|", "|"), table=True)
                     for cell in _cells(stripped[1:-1])]
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append(sanitize(stripped))
    return "\n".join(lines)


def _longest_backticks(value: str) -> int:
    return max((len(run) for run in _BACKTICKS.findall(value)), default=0)


def _spans(line: str) -> list[tuple[bool, str]]:
    """(is code, text) pieces of one line, as CommonMark reads them: backslash escapes undone,
    a run of N backticks opens code that the next run of exactly N closes."""
    pieces: list[tuple[bool, str]] = []
    plain: list[str] = []
    i, n = 0, len(line)
    while i < n:
        char = line[i]
        if char == "\\" and i + 1 < n and line[i + 1] in _PUNCTUATION:
            plain.append(line[i + 1])
            i += 2
            continue
        if char != "`":
            plain.append(char)
            i += 1
            continue
        run = len(_BACKTICKS.match(line, i).group())  # type: ignore[union-attr]
        close = _closing(line, i + run, run)
        if close is None:
            plain.append("`" * run)
            i += run
            continue
        if plain:
            pieces.append((False, "".join(plain)))
            plain = []
        content = line[i + run:close]
        if len(content) > 1 and content[0] == content[-1] == " " and content.strip(" "):
            content = content[1:-1]
        pieces.append((True, content))
        i = close + run
    if plain:
        pieces.append((False, "".join(plain)))
    return pieces


def _closing(line: str, start: int, run: int) -> int | None:
    for match in _BACKTICKS.finditer(line, start):
        if len(match.group()) == run:
            return match.start()
    return None


def _cells(row: str) -> list[str]:
    """A table row's cells, split as GitHub splits them: at each `|` not right after a `\\`."""
    return re.split(r"(?<!\\)\|", row)
