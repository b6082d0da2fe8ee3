"""Parse YAML into plain Python data while remembering the line of every key and item."""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class LineMap:
    """Maps a path such as ("jobs", 0, "time_limit") to the 1-based line it was written on."""

    def __init__(self) -> None:
        self._lines: dict[Path, int] = {}

    def record(self, path: Path, line: int) -> None:
        self._lines[path] = line

    def alias(self, path: Path, source: Path) -> None:
        """Make `path` report the line of `source` (used for values inherited from defaults)."""
        for known, line in list(self._lines.items()):
            if known[: len(source)] == source:
                self._lines[path + known[len(source) :]] = line

    def line(self, path: Path) -> int:
        """The line of `path`, or of its closest recorded ancestor (0 if none)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        return 0


Problem = tuple[Path, int, str]


def load(text: str) -> tuple[Any, LineMap, list[Problem]]:
    """Parse `text`; returns the data, its line map, and (path, line, message) problems."""
    lines = LineMap()
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problems.append(((), line, f"not valid YAML: {exc.problem}"))
        return None, lines, problems
    except yaml.YAMLError as exc:
        problems.append(((), 0, f"not valid YAML: {exc}"))
        return None, lines, problems
    if node is None:
        return None, lines, problems
    constructor = yaml.SafeLoader("")

    def convert(n: yaml.Node, path: Path) -> Any:
        lines.record(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                # Keys are names as written: YAML 1.1 would read `on:` (notify.on) as True.
                if isinstance(key_node, yaml.ScalarNode):
                    key = key_node.value
                else:
                    key = str(constructor.construct_object(key_node, deep=True))
                child = (*path, key)
                if key in result:
                    problems.append((child, key_node.start_mark.line + 1,
                                     "this key is given twice in the same mapping"))
                result[key] = convert(value_node, child)
                lines.record(child, key_node.start_mark.line + 1)
            return result
        if isinstance(n, yaml.SequenceNode):
            return [convert(item, (*path, i)) for i, item in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)

    return convert(node, ()), lines, problems


def dotted(path: Path) -> str:
    """Render a path as people write it: jobs[0].env.FOO."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
