"""The new text of a reply: quoted history, reply headers and signatures cut.

Threading and staff read only what the customer wrote this time; the history is already
on the ticket. Mail clients mark the start of the history in a handful of ways (Gmail's
"El ... escribió:", Outlook's "De: / Enviado: / Para: / Asunto:" block, "-----Mensaje
original-----", Apple Mail, ``>`` lines), and mobile clients add a one-line signature.
We cut at the earliest marker, and never to nothing when the customer wrote something:
when the new text sits below the quote (bottom posting), it is kept instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# "El lun, 3 mar 2025 a las 10:12, Ana <a@b.mx> escribió:" (Gmail), "El 3 mar 2025, a las
# 10:12, Ana <a@b.mx> escribió:" (Apple Mail), "On ... wrote:", and Portuguese; the line
# may be wrapped, so up to three lines are joined before matching.
_REPLY_HEADER = re.compile(
    r"^\s*(?:El|On|Em|Le)\s.{4,300}?(?:escribi[óo]|wrote|escreveu|a écrit)\s*:\s*$",
    re.I | re.S,
)
_REPLY_HEADER_START = re.compile(r"^\s*(?:El|On|Em|Le)\s", re.I)
_HEADER_HINT = re.compile(r"\d|@")
_SEPARATOR = re.compile(
    r"^\s*[-_]{2,}\s*(?:mensaje original|original message|mensaje reenviado|"
    r"forwarded message|reenviado)\s*[-_]{2,}\s*$"
    r"|^\s*(?:begin forwarded message|inicio del mensaje reenviado)\s*:\s*$",
    re.I,
)
_OUTLOOK_FROM = re.compile(r"^\s*\*?(?:de|from)\s*:\*?\s*\S", re.I)
_OUTLOOK_FIELD = re.compile(r"^\s*\*?(?:enviado(?: el)?|sent|fecha|date|para|to|asunto|subject|cc)\s*:\*?", re.I)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_SIGNATURE = re.compile(r"^--\s*$")
_MOBILE = re.compile(
    r"^\s*(?:enviado|sent|env\.)\s+(?:desde|from)\s+(?:mi|my|el|la|outlook|yahoo|correo|mail)"
    r"(?:\s+\S+){0,5}\s*$"
    r"|^\s*(?:obtener|get|descargar|download)\s+outlook\s+(?:para|for)\s+\S+\s*$",
    re.I,
)
_DISCLAIMER = re.compile(
    r"^\s*\**\s*(?:aviso\s+de\s+(?:confidencialidad|privacidad)|aviso\s+legal"
    r"|confidencialidad\s*:|confidentiality\s+notice|disclaimer\s*:"
    r"|este\s+(?:correo|mensaje|e-?mail)(?:\s+electr[óo]nico)?\s*(?:\([^)]*\)\s*)?"
    r"(?:y\s+sus\s+anexos\s+)?(?:es|son|contiene|puede\s+contener|y\s+cualquier)"
    r"|la\s+informaci[óo]n\s+contenida\s+en\s+este"
    r"|this\s+(?:e-?mail|message)(?:\s+and\s+any\s+(?:attachments|files))?"
    r"\s+(?:is|are|contains|may\s+contain)\s+(?:confidential|privileged|intended)"
    r"|the\s+information\s+(?:contained\s+)?in\s+this\s+(?:e-?mail|message))",
    re.I,
)
_BLANK_RUNS = re.compile(r"\n{3,}")


def cut_reply(text: str) -> str:
    """Only the new text of a reply (may be "" when the mail is nothing but a quote)."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first = next(_cut_points(lines), None)
    if first is None:
        return _clean(lines)
    kept = _clean(lines[:first])
    return kept or _below_quote(lines, first)


def _cut_points(lines: list[str]) -> Iterator[int]:
    """Line indexes where quoted history, a signature or a trailer starts, in order."""
    quoted_after = _quoted_share(lines)
    for i, line in enumerate(lines):
        if not line.strip() or _UNDERSCORES.match(line):
            continue
        if _OUTLOOK_FROM.match(line) and _outlook_block(lines, i):
            yield _above_underscores(lines, i)
        elif _marks_history(lines, i, quoted_after[i]):
            yield i


def _marks_history(lines: list[str], i: int, quoted_share: float) -> bool:
    line = lines[i]
    if _SIGNATURE.match(line) or _MOBILE.match(line) or _SEPARATOR.match(line):
        return True
    if _REPLY_HEADER_START.match(line) and _reply_header_end(lines, i) is not None:
        return True
    if _DISCLAIMER.match(line) and i > 0 and _starts_paragraph(lines, i):
        return True
    return line.lstrip().startswith(">") and quoted_share >= 0.8


def _outlook_block(lines: list[str], start: int) -> bool:
    """Outlook's header block: a From line then at least two known fields right after."""
    fields = 0
    for line in lines[start + 1 : start + 8]:
        if _OUTLOOK_FIELD.match(line):
            fields += 1
        elif not line.strip():
            break
    return fields >= 2


def _above_underscores(lines: list[str], i: int) -> int:
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return j if j >= 0 and _UNDERSCORES.match(lines[j]) else i


def _reply_header_end(lines: list[str], start: int) -> int | None:
    """Index of the last line of a (possibly wrapped) reply header starting at ``start``."""
    joined = ""
    for j in range(start, min(start + 3, len(lines))):
        joined = f"{joined} {lines[j].strip()}" if joined else lines[j].strip()
        if _REPLY_HEADER.match(joined) and _HEADER_HINT.search(joined):
            return j
    return None


def _starts_paragraph(lines: list[str], i: int) -> bool:
    return i == 0 or not lines[i - 1].strip() or bool(_UNDERSCORES.match(lines[i - 1]))


def _quoted_share(lines: list[str]) -> list[float]:
    """For each line, the share of ``>`` lines among the non-blank lines from it on.

    A ``>`` line starts the history when (nearly) only quoted lines follow it; inline
    answers between quotes keep the share low, and ``_clean`` drops their quotes.
    """
    shares = [0.0] * len(lines)
    quoted = nonblank = 0
    for i in range(len(lines) - 1, -1, -1):
        stripped = lines[i].lstrip()
        if stripped:
            nonblank += 1
            quoted += stripped.startswith(">")
        shares[i] = quoted / nonblank if nonblank else 0.0
    return shares


def _clean(lines: list[str]) -> str:
    kept = [line.rstrip() for line in lines if not line.lstrip().startswith(">")]
    while kept and (not kept[-1].strip() or _UNDERSCORES.match(kept[-1])):
        kept.pop()
    return _BLANK_RUNS.sub("\n\n", "\n".join(kept)).strip()


def _below_quote(lines: list[str], start: int) -> str:
    """Bottom posting: new text after a ``>`` quote (and its header) at the very top.

    History that is not ``>``-quoted (an Outlook block, a forward) runs to the end of the
    mail, so nothing below it is new.
    """
    i = start
    end = _reply_header_end(lines, i)
    if end is not None:
        i = end + 1
    elif not lines[i].lstrip().startswith(">"):
        return ""
    quoted = False
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(">")):
        quoted = quoted or lines[i].lstrip().startswith(">")
        i += 1
    return cut_reply("\n".join(lines[i:])) if quoted else ""
