"""JMESPath mappings on literals."""

from __future__ import annotations

import pytest

from argbridge.normalize.mapping import (
    CompiledMapping,
    MappingConfigError,
    MappingError,
    to_rfc3339,
)


def test_compile_errors_name_the_attribute():
    with pytest.raises(MappingConfigError, match=r"^subject: invalid JMESPath"):
        CompiledMapping.compile({"subject": "a.[b"})
    with pytest.raises(MappingConfigError, match=r"^data.x: invalid JMESPath"):
        CompiledMapping.compile({}, {"x": "foo("})
    with pytest.raises(MappingConfigError, match="not a mappable attribute"):
        CompiledMapping.compile({"source": "a"})


def test_apply_converts_and_checks_values():
    m = CompiledMapping.compile(
        {"subject": "run.id", "time": "at", "severity": "sev", "type": "kind"},
        {"passed": "counts.passed"},
    )
    out = m.apply(
        {"run": {"id": 42}, "at": 1_700_000_000_000, "sev": "HIGH", "kind": "x.y", "counts": {}}
    )
    assert out.subject == "42"
    assert out.time == "2023-11-14T22:13:20.000Z"
    assert out.severity == "high" and out.type == "x.y"
    assert out.data == {"passed": None}
    assert m.apply({}).subject is None
    for bad, attr in (
        ({"run": {"id": [1]}}, "subject"),
        ({"at": "soon"}, "time"),
        ({"sev": "urgent"}, "severity"),
        ({"kind": "has space"}, "type"),
        ({"run": {"id": True}}, "subject"),
    ):
        with pytest.raises(MappingError) as exc:
            m.apply(bad)
        assert exc.value.attribute == attr


def test_jmespath_function_errors_are_mapping_errors():
    m = CompiledMapping.compile({"subject": "join('-', items)"})
    with pytest.raises(MappingError, match="subject"):
        m.apply({"items": [1, 2]})


def test_to_rfc3339():
    assert to_rfc3339("2026-01-12T10:30:00Z") == "2026-01-12T10:30:00Z"
    assert to_rfc3339("2026-01-12 10:30:00+00:00") == "2026-01-12T10:30:00+00:00"
    assert to_rfc3339(0) == "1970-01-01T00:00:00.000Z"
