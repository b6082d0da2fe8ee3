"""The command parsers with any text: Slack's `/job ...` and pull-request comments.

Slack's parser returns a Command or raises BadInput (with a message); the comment parser
returns a Command (a malformed one says its problem) or None. Neither raises anything else.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from bot import commands as slack_commands
from core.errors import BadInput
from github_app import commands as pr_commands
from tests.fuzz.cases import fuzz
from tests.fuzz.conftest import JOB_NAMES
from tests.fuzz.strategies import quoted, words

slack_text = st.one_of(st.text(), quoted(words(
    [*slack_commands.USAGE, *JOB_NAMES, "--ref", "--ref=", "--tail", "--tail=", "-n", "--", "-x",
     "hello#1", "#", "/job", "&quot;", "&#x27;", "\\", "'", '"'])))
comment_text = st.one_of(st.text(), quoted(words(
    ["/run", "/rerun", "/cancel", "/jobs", "/ok-to-test", "/RUN", "/help", *JOB_NAMES,
     "shop/hello", "```", "~~~", ">", "    ", "\t", "\n", "\r\n", "\u2028"])))


@fuzz(bounded=600)
@given(text=slack_text)
@example(text="logs hello#1 --tail ²")
@example(text="run hello 'KEY\n=1'")
@example(text='run hello "unclosed')
def test_slack_commands_parse_or_say_why(text: str) -> None:
    try:
        command = slack_commands.parse(text)
    except BadInput as exc:
        refusal = str(exc)
        assert refusal, "a refusal says what is wrong"
        return
    assert command.name in slack_commands.USAGE
    assert 1 <= command.tail <= slack_commands.MAX_TAIL
    command.describe()  # audit lines and confirmations render every parsed command


@fuzz(bounded=600)
@given(body=comment_text)
@example(body="/run hello KEY\u2028=1")
@example(body="```\n/run hello\n```\n/jobs")
def test_comment_commands_parse_or_say_why(body: str) -> None:
    command = pr_commands.parse(body)
    if command is None:
        return
    assert command.name == command.name.lower()
    if command.known and command.problem is None and command.name == "run":
        assert command.job, "a /run without a problem names its job"
    if not command.known:
        assert command.problem is None
