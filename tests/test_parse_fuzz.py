"""Damaged mail never crashes the door: describe() never raises, parse_message() raises
nothing but UnparseableMessage. The inputs are corpus messages with bytes flipped, cut,
headers duplicated and MIME boundaries damaged."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbound.parse import UnparseableMessage, parse_message
from inbound.report import describe

CORPUS = [p.read_bytes() for p in sorted((Path(__file__).parent / "mail").glob("*.eml"))]
# No example database: the tests must not write into the working tree.
FUZZ = settings(max_examples=700, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "boundary", "insert"]))
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del raw[at:]
        elif kind == "duplicate":
            head_end = raw.find(b"\n\n")
            head = raw[: head_end if head_end > 0 else len(raw)]
            lines = bytes(head).split(b"\n")
            line = draw(st.sampled_from(lines))
            raw[0:0] = line + b"\n"
        elif kind == "boundary":
            raw = bytearray(bytes(raw).replace(b"--", draw(st.sampled_from([b"-", b"---", b""])), 2))
        else:
            raw[at:at] = draw(st.binary(max_size=40))
    return bytes(raw)


@FUZZ
@given(damaged())
def test_parse_message_raises_only_unparseable(raw: bytes):
    try:
        parsed = parse_message(raw)
    except UnparseableMessage as exc:
        assert exc.reason
        return
    assert isinstance(parsed.text, str)
    assert isinstance(parsed.reply_text, str)
    assert parsed.html is None or isinstance(parsed.html, str)


@FUZZ
@given(damaged())
def test_describe_never_raises_and_is_json(raw: bytes):
    result = describe(raw, prefix="JHL", own_addresses={"soporte@jhleasing.mx"})
    json.dumps(result)
    assert "error" in result or result["kind"] in ("message", "auto_reply", "bounce", "loop")


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_binary_garbage_is_quarantined_or_parsed_never_crashes(raw: bytes):
    try:
        parse_message(raw)
    except UnparseableMessage:
        assert "error" in describe(raw, prefix="JHL", own_addresses=set())


def test_empty_input_is_unparseable():
    for raw in (b"", b"   \r\n"):
        try:
            parse_message(raw)
        except UnparseableMessage as exc:
            assert exc.reason == "empty input"
        else:
            raise AssertionError("empty input parsed")
        assert describe(raw, prefix="JHL", own_addresses=set())["error"]


def test_garbage_without_headers_is_unparseable():
    raw = bytes(range(256)) * 4
    try:
        parse_message(raw)
    except UnparseableMessage as exc:
        assert "headers" in exc.reason
    else:
        raise AssertionError("garbage parsed")
