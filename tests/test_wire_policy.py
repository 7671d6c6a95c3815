"""The wire policy of composed notifications (``outbound.email.PreEncoded``) writes short
printable ASCII header values as they are, without running ``compat32``'s folding
algorithm. These tests hold it to the same bytes (and the same errors) as ``compat32``
for any header, and for whole notifications."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email import policy

from hypothesis import given, settings
from hypothesis import strategies as st

from outbound.email import ENCODED_WIRE_POLICY, PreEncoded, wire_bytes
from outbound.mime import compose_email
from tests.test_notify_mime import _note

COMPAT32_WIRE = policy.compat32.clone(linesep="\r\n")
NAMES = st.sampled_from(["To", "From", "Subject", "Message-ID", "In-Reply-To", "References",
                         "X-Auto-Response-Suppress", "Content-Type", "X"])
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=90)
ANY_TEXT = st.text(max_size=120)
# Near the edge: 76-78 columns with the name, whitespace runs at either end.
SPACED = st.builds(lambda a, b, c: a + b + c, st.sampled_from(["", " ", "  ", "\t"]),
                   st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=60, max_size=80),
                   st.sampled_from(["", " ", "  ", "\t", "\x0c"]))


def _outcome(wire: policy.Compat32, name: str, value: str) -> bytes | str:
    try:
        return wire.fold_binary(name, value)
    except Exception as exc:  # noqa: BLE001 - the point is the same error either way
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=600, deadline=None)
@given(NAMES, st.one_of(PRINTABLE, ANY_TEXT, SPACED))
def test_every_header_value_goes_out_as_compat32_writes_it(name: str, value: str) -> None:
    assert _outcome(ENCODED_WIRE_POLICY, name, value) == _outcome(COMPAT32_WIRE, name, value)


def test_the_line_limit_is_the_policys() -> None:
    narrow = PreEncoded(linesep="\r\n", max_line_length=20)
    value = "uno dos tres cuatro cinco"
    assert narrow.fold_binary("To", value) == COMPAT32_WIRE.clone(max_line_length=20).fold_binary("To", value)
    assert narrow.fold_binary("To", value) != f"To: {value}\r\n".encode(), "a long value is still folded"


@settings(max_examples=150, deadline=None)
@given(subject=st.text(max_size=140), name=st.text(max_size=60), text=st.text(max_size=300))
def test_a_whole_notification_serializes_as_with_compat32(subject: str, name: str, text: str) -> None:
    note = _note("hd.7.0123456789abcdef@jhleasing.mx")
    note = replace(note, contact=replace(note.contact, name=name))
    msg = compose_email(note, subject, text, f"<p>{text}</p>", company_name="JH Leasing ñ",
                        now=datetime(2026, 3, 1, tzinfo=UTC))
    assert wire_bytes(msg) == msg.as_bytes(policy=COMPAT32_WIRE)
