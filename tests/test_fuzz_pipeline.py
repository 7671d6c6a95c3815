"""Fuzzing the whole inbound pipeline: keep → parse → classify → thread → store.

``test_parse_fuzz`` shows that parsing alone never crashes. This goes further: mutated
real-looking mail is committed with ``keep_raw`` and run through the ``Processor`` on a
real database (SQLite and PostgreSQL), with Message-IDs reused and In-Reply-To pointing
at ids already stored, so threading, dedup and the savepoints are exercised too. The
promise checked is the door's: no exception escapes, and every kept row ends ``done`` or
``quarantined`` (never still pending, never lost).

Bounded: a fixed number of examples (about 20 s per backend here), no example database
(nothing is written into the working tree), no deadline (the machine may be loaded).
"""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from inbound.keep import keep_raw
from inbound.process import Processor
from models.message import Message, RawMessage
from tests.mailbuilder import mail
from worker.runtime import Runtime

CORPUS = [p.read_bytes() for p in sorted((Path(__file__).parent / "mail").glob("*.eml"))]
CHARSETS = [b"utf-8", b"iso-8859-1", b"windows-1252", b"us-ascii", b"utf-7", b"gb2312", b"x-unknown", b"",
            b"utf-8\x00", b"\xff\xfe"]
HEADERS = [b"Message-ID", b"In-Reply-To", b"References", b"Subject", b"From", b"To", b"Content-Type",
           b"Content-Transfer-Encoding", b"Auto-Submitted", b"Date"]
FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


def one_line(text: str) -> str:
    """``text`` without any character that ``str.splitlines`` (and so email) takes as a line end."""
    return " ".join(text.splitlines())


@st.composite
def built(draw: st.DrawFn) -> bytes:
    """A fresh mail as our mail builder writes it, with drawn subject, body and parts."""
    attachments = draw(st.lists(st.tuples(texts, st.sampled_from(["application/pdf", "image/png", "text/plain"]),
                                          st.binary(max_size=64)), max_size=2))
    kwargs = {
        "subject": one_line(draw(texts)), "body": draw(texts) or "hola",
        "sender": draw(st.sampled_from(["Ana <ana@cliente.mx>", "bob@flota.mx", "\"Raro, Nombre\" <x@y.z>",
                                        "staff@jhleasing.mx", "MAILER-DAEMON@mx.cliente.mx"])),
        "attachments": [(one_line(name) or "a", ctype, data) for name, ctype, data in attachments],
        "html": draw(st.none() | st.just("<p>Hola <b>mundo</b><script>x</script></p>")),
        "message_id": f"<fz{draw(st.integers(0, 10**9))}@cliente.mx>",
    }
    state = random.getstate()  # MIME boundaries come from the global random: keep draws reproducible
    random.seed(0)
    try:
        return mail(**kwargs)  # type: ignore[arg-type]
    finally:
        random.setstate(state)


def set_header(raw: bytes, name: bytes, value: bytes) -> bytes:
    """Replace (or add) a header in the head of ``raw``, keeping its line ending."""
    head, sep, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    eol = b"\r\n" if sep == b"\r\n\r\n" else b"\n"
    lines = [line for line in head.split(eol) if not line.lower().startswith(name.lower() + b":")]
    return eol.join([*lines, name + b": " + value]) + (sep or eol + eol) + body


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, tuple[bytes, int] | None]:
    """A corpus or built mail with bytes, headers, boundaries and charsets damaged, and
    perhaps (header, index): point that header at the index-th stored Message-ID. The index
    is drawn, not the id, so that what is drawn never depends on the database's state."""
    raw = draw(st.sampled_from(CORPUS) | built())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "header", "boundary", "charset", "crlf"]))
        if not raw:
            break
        at = draw(st.integers(0, 9999)) * len(raw) // 10000  # a fraction: lengths vary between runs
        if kind == "flip":
            raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
        elif kind == "truncate":
            raw = raw[:at]
        elif kind == "insert":
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=30)) + raw[at:]
        elif kind == "header":
            raw = set_header(raw, draw(st.sampled_from(HEADERS)), draw(st.binary(max_size=60)).replace(b"\n", b" "))
        elif kind == "boundary":
            raw = raw.replace(b"boundary=", draw(st.sampled_from([b"boundary=x", b"boundary=", b"b="])), 1)
        elif kind == "charset":
            raw = raw.replace(b"charset=", b"charset=" + draw(st.sampled_from(CHARSETS)) + b";x=", 1)
        else:
            raw = raw.replace(b"\r\n", b"\n") if b"\r\n" in raw else raw.replace(b"\n", b"\r\n")
    reuse = draw(st.none() | st.tuples(st.sampled_from([b"Message-ID", b"In-Reply-To", b"References"]),
                                       st.integers(0, 49)))
    return raw, reuse


def pointed(raw: bytes, reuse: tuple[bytes, int] | None, known: list[str]) -> bytes:
    """``raw`` with the drawn header pointing at a stored Message-ID (when there is one)."""
    if reuse is None or not known:
        return raw
    header, index = reuse
    return set_header(raw, header, b"<" + known[index % len(known)].encode("utf-8", "replace") + b">")


def stored_message_ids(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return list(session.scalars(select(Message.external_id).where(Message.channel == "email")
                                    .order_by(Message.id.desc()).limit(50)))


def test_mutated_mail_through_the_whole_pipeline_is_stored_or_quarantined_never_lost(rt: Runtime) -> None:
    processor = Processor(rt.sessions, rt.settings, rt.catalog)

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        known = stored_message_ids(rt)
        mails = [pointed(raw, reuse, known) for raw, reuse in data.draw(st.lists(mutated(), min_size=1, max_size=4))]
        sources = data.draw(st.lists(st.sampled_from(["smtp", "imap", "pipe"]), min_size=4, max_size=4))
        kept = [keep_raw(rt.sessions, source=source, data=raw, envelope_to="soporte@jhleasing.mx")
                for raw, source in zip(mails, sources, strict=False) if raw.strip()]
        processor.process_pending()
        with rt.sessions() as session:
            statuses = {i: status for i, status in session.execute(
                select(RawMessage.id, RawMessage.status).where(RawMessage.id.in_(kept)))}
        assert set(statuses) == set(kept), "a kept message was lost"
        assert set(statuses.values()) <= {"done", "quarantined"}, statuses

    run()
    with rt.sessions() as session:
        left = session.scalar(select(func.count()).select_from(RawMessage).where(RawMessage.status == "pending"))
        ids = session.scalars(select(Message.external_id).where(Message.channel == "email")).all()
    assert left == 0
    assert len(ids) == len(set(ids)), "a Message-ID was stored twice"
