"""Text that is not jobbot's own (refs, names, reasons, log lines, errors) made inert in mrkdwn.

Slack reads `<...>` as live markup anywhere in a message, code included (`<!channel>`,
`<@U123>`, `<https://evil.example|click to fix>`), so `&`, `<` and `>` always become
entities. Inside inline code and code blocks a backtick of the text would end the code and let
the rest be read as markup and formatting, so there every backtick becomes a look-alike
(U+02CB MODIFIER LETTER GRAVE ACCENT): what people see stays readable and there is no way
out of the code.
"""

from __future__ import annotations

import re

BACKTICK_STAND_IN = "\u02cb"
_ENTITIES = ("&amp;", "&lt;", "&gt;")
# Who and where, as jobbot itself writes them: a user, a user group, a channel (ids only, no
# label that could disguise them).
_REFERENCE = re.compile(r"&lt;(@[UW][A-Z0-9]{2,20}|!subteam\^S[A-Z0-9]{2,20}|#C[A-Z0-9]{2,20})&gt;")


def escape(text: str) -> str:
    """`text` with `&`, `<` and `>` as entities: shown as typed, never a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_keeping_references(text: str) -> str:
    """As `escape`, but the user, user group and channel references jobbot's refusals name
    (`<@U123>`, `<!subteam^S456>`, `<#C789>`) stay live; `<!channel>`, `<!here>` and links do
    not. For answers only the asker sees (errors): refusals say who may act, by name."""
    return _REFERENCE.sub(r"<\1>", escape(text))


def in_code(text: str) -> str:
    """`text` made safe inside inline code or a code block (escaped, backticks replaced)."""
    return escape(text).replace("`", BACKTICK_STAND_IN)


def code(text: str) -> str:
    """`text` as inline code, on one line."""
    flat = " ".join(text.splitlines()) or " "
    return f"`{in_code(flat)}`"


def code_block(text: str) -> str:
    """`text` as a code block (``` fences on lines of their own)."""
    return f"```\n{in_code(text)}\n```"


def unescape(text: str) -> str:
    """mrkdwn's entities back to characters (for a terminal showing a Slack answer)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def cut_end(text: str, keep: int) -> str:
    """`text[:keep]`, moved back so that it never ends inside an entity."""
    head = text[:keep]
    at = head.rfind("&", max(0, keep - 4))
    if at != -1 and not any(text.startswith(e, at) and at + len(e) <= keep for e in _ENTITIES):
        return head[:at]
    return head


def cut_start(text: str, start: int) -> str:
    """`text[start:]`, moved forward so that it never starts inside an entity."""
    at = text.rfind("&", max(0, start - 4), start)
    if at != -1:
        for entity in _ENTITIES:
            if text.startswith(entity, at) and at + len(entity) > start:
                return text[at + len(entity):]
    return text[start:]
