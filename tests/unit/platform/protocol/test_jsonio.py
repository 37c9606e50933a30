"""The JSON reader and writer give the standard library's results, faster."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.errors import InvalidInput
from rayfleet.platform.protocol import decode_request, dump_json, load_json

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def _same(value: Any) -> str:
    """A text that tells values apart exactly: 1 from 1.0, -0.0 from 0.0, NaN."""
    return json.dumps(value)


def _floats_past_64_bits(value: Any) -> Any:
    """``value`` with every integer past 64 bits, within a double's range, as
    its nearest float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _INT64_MIN <= value <= _UINT64_MAX:
        try:
            return float(value)
        except OverflowError:
            return value
    if isinstance(value, list):
        return [_floats_past_64_bits(item) for item in value]
    if isinstance(value, dict):
        return {key: _floats_past_64_bits(item) for key, item in value.items()}
    return value


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=_INT64_MIN, max_value=_UINT64_MAX)
    | st.floats()
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"[NaN, Infinity, -Infinity]", "[NaN, Infinity, -Infinity]"),
        (b"1e400", "Infinity"),
        (b'"\\ud800"', '"\\ud800"'),
        (b"\xef\xbb\xbf{}", "{}"),
        ('{"a": [1]}'.encode("utf-16"), '{"a": [1]}'),
        (b'{"a": 1, "a": 2}', '{"a": 2}'),
        (b"-0.0", "-0.0"),
    ],
)
def test_what_orjson_refuses_is_read_as_the_standard_library_reads_it(
    text: bytes, expected: str
) -> None:
    assert _same(load_json(text)) == expected


@pytest.mark.parametrize("text", [b"", b"{", b"[1,]", b"\xff", b"[" * 5000])
def test_text_neither_parser_accepts_raises_the_standard_library_error(
    text: bytes,
) -> None:
    with pytest.raises((ValueError, RecursionError)) as ours:
        load_json(text)
    with pytest.raises((ValueError, RecursionError)) as theirs:
        json.loads(text)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


def test_an_integer_past_64_bits_reads_as_its_nearest_float() -> None:
    assert _same(load_json(b"[123456789012345678901234567890, -1]")) == (
        "[1.2345678901234568e+29, -1]"
    )
    # Past a double's range, only the standard library reads it: exactly.
    assert load_json(b"1" + b"0" * 400) == 10**400


def test_an_integer_past_64_bits_is_out_of_range_for_an_integer_input() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT64", '
    with pytest.raises(
        InvalidInput, match=r"value 1\.8446744073709552e\+19 does not fit"
    ):
        decode_request(body + b'"data": [18446744073709551616]}]}', None)
    assert decode_request(body + b'"data": [18446744073709551615]}]}', None).inputs[
        "x"
    ].tolist() == [_UINT64_MAX]


def test_memoryviews_are_read_like_bytes() -> None:
    assert load_json(memoryview(b'xx{"b": [1]}')[2:]) == {"b": [1]}
    assert _same(load_json(memoryview(b"xx[NaN]")[2:])) == "[NaN]"


@given(_json_values)
def test_any_document_reads_as_the_standard_library_reads_it(value: Any) -> None:
    text = json.dumps(value).encode()
    assert _same(load_json(text)) == _same(json.loads(text))


@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_read_as_the_standard_library_reads_them(text: bytes) -> None:
    try:
        expected = _floats_past_64_bits(json.loads(text))
    except (ValueError, RecursionError) as theirs:
        with pytest.raises(type(theirs)):
            load_json(text)
        return
    assert _same(load_json(text)) == _same(expected)


@given(_json_values)
def test_any_document_writes_what_the_standard_library_writes(value: Any) -> None:
    assert _same(json.loads(dump_json(value))) == _same(value)


def test_non_finite_floats_are_written_as_the_standard_library_writes_them() -> None:
    assert dump_json([math.nan, math.inf, -math.inf, None, "null"]) == (
        b'[NaN,Infinity,-Infinity,null,"null"]'
    )


def test_text_is_written_as_utf8_and_lone_surrogates_as_escapes() -> None:
    assert dump_json({"é": "ü"}) == '{"é":"ü"}'.encode()
    # orjson refuses a lone surrogate; the standard library escapes it.
    assert json.loads(dump_json(["\udcff", "é"])) == ["\udcff", "é"]


@pytest.mark.parametrize("other", [1, None], ids=["orjson", "standard library"])
def test_uuids_and_enums_are_written_as_their_values_on_both_paths(
    other: object,
) -> None:
    class Stage(enum.Enum):
        PROD = "prod"

    run = uuid.UUID(int=1)
    assert json.loads(dump_json({"run": run, "stage": Stage.PROD, "x": other})) == {
        "run": str(run),
        "stage": "prod",
        "x": other,
    }


def test_values_the_standard_library_refuses_are_refused() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    with pytest.raises(TypeError):
        dump_json({"point": Point(1)})
    with pytest.raises(TypeError):
        dump_json({"set": {1}})
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        dump_json(deep)


def test_keys_and_subclasses_are_written_as_the_standard_library_writes_them() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    assert dump_json({1: Level.HIGH, None: True}) == b'{"1":3,"null":true}'
