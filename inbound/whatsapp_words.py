"""What a WhatsApp text means before any threading: opt-out/opt-in words, survey scores,
locations and media names.

Pure functions, no database, so that the many ways people write ``BAJA`` or ``5
estrellas`` are unit-tested case by case. A word only counts when it is the *whole*
message (punctuation, emoji and case aside): "no quiero que me den de baja" is a message
for staff, not an opt-out.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

OPT_OUT_WORDS = frozenset({"stop", "baja", "unsubscribe", "stopall", "darme de baja", "dar de baja"})
OPT_IN_WORDS = frozenset({"alta", "start", "unstop", "darme de alta", "dar de alta"})

_SCORE_WORDS = {"uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5}
_STARS = "⭐★🌟"
_KEYCAP = "\u20e3"
_SCORE_TEXT = re.compile(
    r"^(?:(?:mi\s+)?calificaci[oó]n:?\s*)?([1-5]|uno|dos|tres|cuatro|cinco)"
    r"(?:\s*(?:estrellas?|de\s*5|/\s*5|puntos?))?$"
)
_PAYLOAD = re.compile(r"^survey[:_\-]([1-5])$", re.I)


def fold(text: str | None) -> str:
    """Lower case, no accents, no punctuation or emoji at the ends, single spaces."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = " ".join(text.casefold().split())
    return text.strip(" .,;:!¡?¿-_*~\"'()[]{}🙏👍😊🙂✅")


def opt_word(body: str | None) -> str | None:
    """``"out"`` for STOP/BAJA, ``"in"`` for ALTA/START, else None (the message is content)."""
    word = fold(body)
    if word in OPT_OUT_WORDS:
        return "out"
    if word in OPT_IN_WORDS:
        return "in"
    return None


def survey_score(body: str | None, button_payload: str | None = None) -> int | None:
    """The 1–5 score a survey answer gives, or None when the text is not just a score.

    Accepts the quick-reply payload (``survey:5``), a digit (``5``, ``5️⃣``), a word
    (``cinco``), ``5 estrellas``, ``5/5``, ``5 de 5`` and rows of stars (``⭐⭐⭐⭐``).
    """
    if button_payload:
        match = _PAYLOAD.match(button_payload.strip())
        if match:
            return int(match.group(1))
    raw = (body or "").strip()
    if not raw:
        return None
    without_selectors = raw.replace("\ufe0f", "").replace(_KEYCAP, "")
    stars = "".join(without_selectors.split())
    if stars and all(ch in _STARS for ch in stars):
        return len(stars) if 1 <= len(stars) <= 5 else None
    match = _SCORE_TEXT.match(fold(without_selectors))
    if match is None:
        return None
    value = match.group(1)
    return int(value) if value.isdigit() else _SCORE_WORDS[value]


def location_text(latitude: str | None, longitude: str | None, label: str | None = None,
                  address: str | None = None) -> str | None:
    """``Ubicación: 19.4326, -99.1332 (Taller Norte, Av. Central 10)`` for a shared location."""
    try:
        lat, lon = float(latitude or ""), float(longitude or "")
    except ValueError:
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    names = [part.strip() for part in (label, address) if part and part.strip()]
    detail = f" ({', '.join(dict.fromkeys(names))})" if names else ""
    return f"Ubicación: {lat:.6g}, {lon:.6g}{detail}"


_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
    "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/amr": ".amr", "audio/mp4": ".m4a",
    "video/mp4": ".mp4", "video/3gpp": ".3gp", "application/pdf": ".pdf",
    "text/vcard": ".vcf", "text/x-vcard": ".vcf", "text/plain": ".txt",
}
_KINDS = {"image": "foto", "audio": "audio", "video": "video"}


def media_filename(content_type: str | None, index: int) -> str:
    """A display name from the content type (``foto-1.jpg``, ``documento-2.pdf``).

    WhatsApp sends no file names; the name is display data only, never a path.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    ext = _EXTENSIONS.get(kind) or mimetypes.guess_extension(kind) or ".bin"
    stem = _KINDS.get(kind.split("/", 1)[0], "documento")
    return f"{stem}-{index}{ext}"


def subject_from(body: str | None, fallback: str = "Mensaje por WhatsApp") -> str:
    """The first line of the text, shortened, as a new ticket's subject."""
    for line in (body or "").splitlines():
        line = " ".join(line.split())
        if line:
            return line if len(line) <= 80 else line[:79].rstrip() + "…"
    return fallback
