"""Log lines as HTML rows with line numbers and anchors, produced in batches while streamed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from markupsafe import Markup

from web.ansi import to_html

BATCH = 2000  # lines per chunk handed to the template: big enough to be cheap, small to stream


def anchor(attempt: int, number: int) -> str:
    """`L12` for the first attempt, `A2L12` for later ones (so `#L1-3` works as on GitHub)."""
    return f"L{number}" if attempt == 1 else f"A{attempt}L{number}"


def line_html(attempt: int, number: int, text: str) -> str:
    """One line: `<div id=L12><a href=#L12>12</a>text</div>`; classes left out on purpose,
    the stylesheet selects `.log > div` (half the bytes of a 100,000-line page)."""
    name = anchor(attempt, number)
    return f'<div id="{name}"><a href="#{name}">{number}</a>{to_html(text)}</div>\n'


def html_batches(attempt: int, lines: Iterable[str]) -> Iterator[Markup]:
    """The attempt's lines rendered, BATCH at a time (the template writes each as it comes)."""
    # line_html inlined: this loop runs once per line of logs of 100,000 lines and more.
    prefix = "" if attempt == 1 else f"A{attempt}"
    batch: list[str] = []
    append = batch.append
    for number, text in enumerate(lines, start=1):
        append(f'<div id="{prefix}L{number}"><a href="#{prefix}L{number}">{number}</a>'
               f"{to_html(text)}</div>\n")
        if len(batch) >= BATCH:
            yield Markup("".join(batch))
            batch.clear()
    if batch:
        yield Markup("".join(batch))
