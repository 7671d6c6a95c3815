"""Templates written so that Jinja builds each imported part once per process.

A module imported ``with context`` is built again, from a copy of the whole context, for
every message that imports it (and once more for each output: text, HTML, WhatsApp):
that was a good share of rendering a notification. The shared macros
(``parts/phrases.j2``, ``parts/details.j2``) take what they show as arguments instead;
the output is the same.
"""

from __future__ import annotations

import re

from outbound.render import TEMPLATES_DIR, Renderer, iter_template_files, stage_template_key
from tests.test_render import _ctx, _ticket

_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_IMPORT_WITH_CONTEXT = re.compile(r"\{%-?\s*(?:from|import)\b[^%]*\bwith\s+context\b", re.S)


def test_no_template_imports_a_part_with_context() -> None:
    offenders = [
        name for name in iter_template_files()
        if _IMPORT_WITH_CONTEXT.search(_COMMENT.sub("", (TEMPLATES_DIR / name).read_text(encoding="utf-8")))
    ]
    assert offenders == []


def test_details_are_bold_on_whatsapp_and_plain_in_the_text_part() -> None:
    """``details`` writes WhatsApp's asterisks itself: imported without context, ``b()``
    cannot tell the channel."""
    renderer = Renderer()
    ctx = _ctx(stage_template_key("mantenimiento", "Cita agendada"), _ticket("mantenimiento", "Cita agendada"))
    whatsapp = renderer.whatsapp(ctx)
    text = renderer.email(ctx).text
    assert "\n*Vehículo:* Nissan Versa 2022\n*Placas:* ABC-123-D\n" in whatsapp
    assert "\nVehículo: Nissan Versa 2022\nPlacas: ABC-123-D\n" in text and "*Vehículo" not in text
