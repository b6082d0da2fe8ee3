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
    name = anchor(attempt, number)
    return (f'<div class="ln" id="{name}"><a class="n" href="#{name}">{number}</a>'
            f'<span class="t">{to_html(text)}</span></div>\n')


def html_batches(attempt: int, lines: Iterable[str]) -> Iterator[Markup]:
    """The attempt's lines rendered, BATCH at a time (the template writes each as it comes)."""
    # line_html inlined: this loop runs once per line of logs of 100,000 lines and more.
    prefix = "" if attempt == 1 else f"A{attempt}"
    batch: list[str] = []
    append = batch.append
    for number, text in enumerate(lines, start=1):
        append(f'<div class="ln" id="{prefix}L{number}"><a class="n" href="#{prefix}L{number}">'
               f'{number}</a><span class="t">{to_html(text)}</span></div>\n')
        if len(batch) >= BATCH:
            yield Markup("".join(batch))
            batch.clear()
    if batch:
        yield Markup("".join(batch))
