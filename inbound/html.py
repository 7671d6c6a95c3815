"""HTML bodies: a sanitized form for display and a plain-text form for reading.

Both are needed only sometimes (text only when a mail has no text/plain part, the
sanitized form only when someone shows it), so callers run them lazily: inscriptis and
nh3 are the most expensive steps of parsing a mail.
"""

from __future__ import annotations

import re

import nh3
from inscriptis import get_text
from inscriptis.model.config import ParserConfig

_CONFIG = ParserConfig(display_links=False, display_images=False)
# An XML declaration or a BOM makes lxml refuse a str input; they carry nothing for us.
_XML_DECL = re.compile(r"^\s*(?:\ufeff)?<\?xml[^>]*\?>", re.I)
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
# cid: lets inline images keep pointing at their parts; everything else is nh3's default.
_URL_SCHEMES = set(nh3.ALLOWED_URL_SCHEMES) | {"cid"}


def html_to_text(html: str) -> str:
    """Readable text of an HTML body, with block structure kept as line breaks.

    Never raises: HTML that lxml cannot read at all (empty, binary) gives "".
    """
    html = _XML_DECL.sub("", html.replace("\x00", ""))
    if not html.strip():
        return ""
    try:
        text = get_text(html, _CONFIG)
    except (ValueError, TypeError, RecursionError):
        return ""
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def sanitize_html(html: str) -> str:
    """HTML safe to show staff: scripts, styles, event handlers and unsafe URLs removed."""
    return nh3.clean(html.replace("\x00", ""), url_schemes=_URL_SCHEMES)
