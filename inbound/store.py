"""Storing a threaded message and its files on a ticket.

Attachment bytes are stored once by content hash: the same PDF sent by ten people is
one blob. File names stay display data. Used by the mail and WhatsApp handlers alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models.message import Attachment, Blob, Message


@dataclass
class FileData:
    filename: str
    content_type: str
    data: bytes
    sha256: str
    inline: bool = False
    content_id: str | None = None


def store_blob(session: Session, sha256: str, data: bytes) -> None:
    """Insert the blob unless a row with that hash exists (a race is harmless)."""
    if session.get(Blob, sha256) is not None:
        return
    dialect = session.get_bind().dialect.name
    values = {"sha256": sha256, "size": len(data), "data": data}
    if dialect == "postgresql":
        session.execute(pg_insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
    else:
        session.execute(insert(Blob).prefix_with("OR IGNORE").values(**values))


def attach_files(session: Session, message: Message, files: Iterable[FileData]) -> int:
    count = 0
    for item in files:
        store_blob(session, item.sha256, item.data)
        message.attachments.append(
            Attachment(
                sha256=item.sha256, filename=item.filename[:400], content_type=item.content_type[:200],
                size=len(item.data), inline=item.inline, content_id=item.content_id,
            )
        )
        count += 1
    return count


def blob_bytes(session: Session, sha256: str) -> bytes | None:
    return session.scalar(select(Blob.data).where(Blob.sha256 == sha256))
