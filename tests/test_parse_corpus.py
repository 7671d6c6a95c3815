"""The golden corpus: every .eml in tests/mail/ described exactly as its .json says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inbound.parse import parse_message
from inbound.report import describe

MAIL = Path(__file__).parent / "mail"
FILES = sorted(MAIL.glob("*.eml"))
OWN = {"soporte@jhleasing.mx"}


def _is_own(message_id: str) -> bool:
    return message_id.endswith("@helpdesk.jhleasing.mx")


def test_the_corpus_has_a_message_per_quirk():
    assert len(FILES) >= 45
    assert all(path.with_suffix(".json").exists() for path in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_message_is_described_as_expected(path: Path):
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    got = describe(path.read_bytes(), prefix="JHL", own_addresses=OWN, is_own_message_id=_is_own)
    json.dumps(got)  # JSON-serializable, nothing else
    text = got.pop("text")
    for snippet in expected.pop("text_contains"):
        assert snippet in text
    assert got == expected


def test_the_corpus_has_latin1_cp1252_and_utf8_bodies():
    charsets = " ".join(p.read_bytes()[:2000].decode("latin-1").lower() for p in FILES)
    for label in ("iso-8859-1", "windows-1252", "utf-8"):
        assert label in charsets


def test_inline_image_is_marked_inline_with_its_content_id():
    parsed = parse_message((MAIL / "inline_image.eml").read_bytes())
    (image,) = parsed.attachments
    assert image.inline and image.content_id == "testigo@cliente"
    assert image.data.startswith(b"\x89PNG")
    assert 'src="cid:testigo@cliente"' in parsed.html


def test_html_is_sanitized_for_display_and_only_when_asked():
    parsed = parse_message((MAIL / "html_only.eml").read_bytes())
    assert "html" not in parsed.__dict__  # not computed yet
    assert "<script" not in parsed.html and "onclick" not in parsed.html
    assert "<b>grúa</b>" in parsed.html


def test_a_plain_text_mail_has_no_html():
    parsed = parse_message((MAIL / "utf8_8bit_body.eml").read_bytes())
    assert parsed.html is None and parsed.unsafe_html is None


def test_attachment_filenames_are_display_data_only():
    parsed = parse_message((MAIL / "attachment_path_filename.eml").read_bytes())
    names = [a.filename for a in parsed.attachments]
    assert names == ["system.ini", "passwd"]


def test_forwarded_attachment_is_kept_as_a_message_part():
    parsed = parse_message((MAIL / "forward_as_attachment.eml").read_bytes())
    assert len(parsed.rfc822_parts) == 1
    assert parsed.attachments == []
