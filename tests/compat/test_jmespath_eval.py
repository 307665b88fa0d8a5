"""Contract: compat.jmespath_eval.evaluate behaves exactly as ParsedResult.search."""

from __future__ import annotations

from typing import Any

import jmespath
import jmespath.exceptions
import pytest

from argbridge.compat.jmespath_eval import evaluate

DOC: dict[str, Any] = {
    "type": "run_complete",
    "a": {"b": [1, 2, 3], "c": None},
    "items": [{"id": 1, "s": "x"}, {"id": 2, "s": "y"}, {"id": 3}],
    "n": 5,
    "t": "2026-01-01T00:00:00Z",
}
EXPRESSIONS = [
    "type",
    "starts_with(type, 'run_')",
    "a.b[1]",
    "a.c || 'default'",
    "items[*].id",
    "items[?s == 'y'].id | [0]",
    "join('-', ['build', to_string(n)])",
    "n > `3` && 'high' || null",
    "contains(['a', 'run_complete'], type)",
    "{id: n, kind: type}",
    "length(items)",
    "missing.deep.path",
    "[type, n]",
    "max_by(items, &id).id",
]


def _outcome(call: Any) -> Any:
    try:
        return ("value", call())
    except jmespath.exceptions.JMESPathError as exc:
        return ("raises", type(exc))


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_evaluate_matches_search(expression):
    parsed = jmespath.compile(expression)
    for value in (DOC, {}, None, [1, 2], "text"):
        assert _outcome(lambda v=value: evaluate(parsed, v)) == _outcome(
            lambda v=value: parsed.search(v)
        )


@pytest.mark.parametrize(
    "expression,value",
    [("join('-', items)", DOC), ("starts_with(n, 'x')", DOC), ("abs(type)", DOC)],
)
def test_evaluate_raises_what_search_raises(expression, value):
    parsed = jmespath.compile(expression)
    with pytest.raises(jmespath.exceptions.JMESPathError) as searched:
        parsed.search(value)
    with pytest.raises(type(searched.value)):
        evaluate(parsed, value)


def test_the_parsed_tree_and_interpreter_exist():
    parsed = jmespath.compile("a.b")
    assert isinstance(parsed.parsed, dict) and parsed.parsed["type"]
    from jmespath import visitor

    assert callable(visitor.TreeInterpreter().visit)
