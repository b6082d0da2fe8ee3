"""Hypothesis strategies shared by the fuzz tests: odd text, JSON drift, command words."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import strategies as st

# Texts that broke or nearly broke parsers elsewhere: digits that are not [0-9], controls,
# lone surrogates, markup, direction marks, numbers beyond int()'s 4,300-digit limit.
ODD = ["", " ", "²", "٣", "໑", "①", "\x00", "\n", "\r\n", "\t", "\x1b[31m", "\ud800", "\udfff",
       "\u202e", "\ufeff", "😀", "\U0001d518", "ß", "İ", "\u0301", "<!channel>", "<@U0BOSS>",
       "<https://x.invalid|click>", "`", "```", "@acme/admins", "<script>", "&amp;",
       "' OR 1=1 --", "%00", "%ff", "../../etc/passwd", "\\", "NaN", "-1", "0", "1e999",
       "9" * 5000, "1:" + "9" * 5000, "-0", "+1", " 1", "1 ", "0x10", "1_000", "true", "null",
       "[]", "{}", "a" * 300]

odd_text = st.one_of(st.sampled_from(ODD), st.text(max_size=40),
                     st.text(st.characters(codec="utf-8"), max_size=20))


def field_value(text: str) -> str:
    # HTTP's field-value: no control characters but tab. aiohttp's parser answers 400 to the
    # rest before any route runs.
    return "".join(c for c in text if c == "\t" or not (ord(c) < 0x20 or ord(c) == 0x7F))


header_text = odd_text.map(field_value)


def header_bytes(text: str) -> bytes:
    """`text` as header bytes: UTF-8, lone surrogates from surrogateescape as the bytes they
    stand for (invalid UTF-8), other lone surrogates as `?`."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")
digits_or_not = st.one_of(st.integers(-5, 10**6).map(str), st.sampled_from(ODD),
                          st.integers(0, 10**40).map(str))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), odd_text)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)), max_leaves=12)

# A placeholder a mutation leaves in the payload: replaced by JSON nested this deep in `dumps`.
_NEST = "\u2063nest:"


def paths(value: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside `value` (dict keys and list indexes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*here, key)
            yield from paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*here, index)
            yield from paths(item, (*here, index))


_KINDS: dict[type, st.SearchStrategy[Any]] = {
    type(None): st.none(), bool: st.booleans(), int: st.integers(-(2**70), 2**70),
    float: st.floats(allow_nan=False, allow_infinity=False), str: odd_text,
    list: st.lists(json_leaf, max_size=3), dict: st.dictionaries(odd_text, json_leaf, max_size=3)}


def _retyped(old: Any) -> st.SearchStrategy[Any]:
    """A value of another JSON type than `old`."""
    return st.one_of(*(kind for of, kind in _KINDS.items() if of is not type(old)))


MUTATIONS = ("remove", "retype", "oversize", "odd", "nest", "add")


@st.composite
def drifted(draw: st.DrawFn, payload: dict[str, Any], *, most: int = 4) -> dict[str, Any]:
    """`payload` with up to `most` fields removed, retyped, oversized, made odd or nested
    deep, or new fields added: the shapes GitHub Enterprise Server, payload drift or a
    forger's signed body can have."""
    result = copy.deepcopy(payload)
    for _ in range(draw(st.integers(0, most))):
        where = list(paths(result))
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent: Any = result
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        how = draw(st.sampled_from(MUTATIONS))
        if how == "remove":
            del parent[key]
        elif how == "retype":
            parent[key] = draw(_retyped(parent[key]))
        elif how == "oversize":
            parent[key] = draw(st.sampled_from("xé😀<")) * draw(
                st.sampled_from([3_000, 70_000, 300_000]))
        elif how == "odd":
            parent[key] = draw(odd_text)
        elif how == "nest":
            parent[key] = f"{_NEST}{draw(st.sampled_from([2, 64, 900, 5_000, 100_000]))}"
        else:
            target = parent[key] if isinstance(parent[key], dict) else result
            target[draw(odd_text)] = draw(json_value)
    return result


def dumps(payload: Any, *, ascii_only: bool = True) -> bytes:
    """JSON bytes of `payload`, with nesting placeholders expanded. Lone surrogates become
    `\\ud800` escapes (ascii_only) or invalid UTF-8 bytes."""
    text = json.dumps(payload, ensure_ascii=ascii_only)
    while _NEST in text or json.dumps(_NEST)[1:-1] in text:
        marker = _NEST if _NEST in text else json.dumps(_NEST)[1:-1]
        start = text.index(marker) - 1
        end = text.index('"', start + 1 + len(marker))
        depth = int(text[start + 1 + len(marker):end])
        text = text[:start] + "[" * depth + "]" * depth + text[end + 1:]
    return text.encode("utf-8", "surrogatepass")


def words(choices: list[str]) -> st.SearchStrategy[str]:
    """Command lines built from `choices` (known words) and odd words, joined by spaces."""
    word = st.one_of(st.sampled_from(choices), odd_text,
                     st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
                         ["GREETING", "PATH", "LD_PRELOAD", "JOBBOT_X", "KEY\n", "1X", "", "é"]),
                         odd_text))
    joined = st.lists(word, max_size=6).map(" ".join)
    return st.one_of(joined, st.text(max_size=60))


def quoted(line: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """The line, sometimes wrapped in straight, curly or unbalanced quotes."""
    wraps: list[Callable[[str], str]] = [
        lambda s: s, lambda s: f'"{s}"', lambda s: f"\u201c{s}\u201d", lambda s: f"'{s}",
        lambda s: f"{s} \"", lambda s: s.replace(" ", "\u00a0")]
    return st.builds(lambda wrap, s: wrap(s), st.sampled_from(wraps), line)
