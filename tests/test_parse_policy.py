"""The parser's policy is ``policy.default`` with the MIME structure headers parsed once
per distinct value (``inbound.mime.PARSE_POLICY``), and address lists are remembered by
value (``inbound.parse._address_pairs``). Both are speed only: what a mail parses to must
be exactly what plain ``policy.default`` and ``getaddresses`` give."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.utils import getaddresses
from pathlib import Path

import pytest

from inbound.mime import PARSE_POLICY
from inbound.parse import _address_pairs

CORPUS = sorted((Path(__file__).parent / "mail").rglob("*.eml"))


def structure(data: bytes, parse_policy: policy.Policy) -> list[tuple]:
    message = message_from_bytes(data, policy=parse_policy)
    out = []
    for part in message.walk():
        out.append((part.get_content_type(), dict(part["content-type"].params) if part["content-type"] else {},
                    part.get_content_disposition(), part.get_filename(), str(part.get("content-transfer-encoding")),
                    [type(d).__name__ for d in part.defects]))
    return out


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_the_corpus_parses_to_the_same_structure_as_with_policy_default(path: Path) -> None:
    data = path.read_bytes()
    assert structure(data, PARSE_POLICY) == structure(data, policy.default)


def test_a_structure_header_is_parsed_once_per_value_and_others_every_time() -> None:
    make = PARSE_POLICY.header_factory
    first = make("Content-Type", 'multipart/mixed; boundary="b1"')
    assert make("Content-Type", 'multipart/mixed; boundary="b1"') is first
    assert first.content_type == "multipart/mixed" and first.params["boundary"] == "b1"
    assert make("Content-Type", 'multipart/mixed; boundary="b2"') is not first
    assert make("Subject", "Hola") is not make("Subject", "Hola")  # only structure headers
    long = "text/plain; name=" + "x" * 1200
    assert make("Content-Type", long) is not make("Content-Type", long)  # too long to keep


def test_remembered_address_lists_equal_getaddresses() -> None:
    values = ("Ana Pérez <ana@cliente.mx>, =?utf-8?q?Jos=C3=A9?= <jose@cliente.mx>", "soporte@jhleasing.mx")
    assert _address_pairs(values) == getaddresses(list(values))
    assert _address_pairs(values) is _address_pairs(values)
    long = (", ".join(f"u{i}@cliente.mx" for i in range(100)),)
    assert _address_pairs(long) == getaddresses(list(long)) and _address_pairs(long) is not _address_pairs(long)
