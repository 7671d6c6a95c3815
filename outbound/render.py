"""Render a notification (email subject + text + HTML, or a WhatsApp text) from templates/.

Why it is built this way:

* **One text, three outputs.** Each message file (``templates/<key>.j2``) writes its
  copy once, in blocks (``subject``, ``body``); a layout per output wraps it
  (``layouts/email_html.j2``, ``layouts/email_text.j2``, ``layouts/whatsapp.j2``).
* **One environment, escaping by output.** Jinja decides autoescaping per template
  *name*, so the loader serves every file under two names: ``html:<path>`` (autoescaped)
  and ``text:<path>`` (not escaped). Includes, imports and ``extends`` inherit the mode of
  the template that asks (``join_path``), so a part included from an HTML message is
  compiled autoescaped and the same part included from a WhatsApp message is not.
* **Data is never source.** Customer and staff text only ever arrives as variables;
  ``StrictUndefined`` makes a misspelt variable an error instead of a blank.
* **WhatsApp stays under 1,600 characters**: free text is clipped there (``short``), the
  line-item list shrinks ("y N conceptos más") until the text fits, and only as a last
  resort the text is cut at a paragraph.

Errors:
    MissingTemplate (LookupError): no file for the key; permanent for that notification.
    jinja2.UndefinedError / TemplateSyntaxError: a bug in a template; permanent.
    ValueError: the context does not fit the key (no ticket for a ticket message).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    meta,
    pass_context,
)
from jinja2.runtime import Context

from outbound import formatting
from outbound.context import NotificationContext

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
WHATSAPP_LIMIT = 1600
TEMPLATE_SUFFIX = ".j2"

NOTICE_KEYS = (
    "reply",
    "survey",
    "survey_thanks",
    "joined_ticket",
    "flagged_new_ticket",
    "optout_confirm",
    "optin_confirm",
)
"""Keys of the messages that are not stage changes."""

CONTACT_KEYS = frozenset({"optout_confirm", "optin_confirm"})
"""Notices about the contact, not a ticket: the only ones that may have no ticket."""

REQUIRED_FIELDS = {"reply": "staff_text", "survey": "survey"}
"""Context fields without which a notice makes no sense (checked before rendering)."""

LAYOUTS = {
    "email_html": "layouts/email_html.j2",
    "email_text": "layouts/email_text.j2",
    "whatsapp": "layouts/whatsapp.j2",
}
SUBJECT_TEMPLATE = "subject.j2"

_MODES = ("html", "text")
_KEY_RE = re.compile(r"[a-z0-9_]+(?:/[a-z0-9_]+)*")
# WhatsApp line-item lists tried in turn until the message fits.
_WHATSAPP_ITEM_LIMITS = (12, 8, 5, 3, 1, 0)


class MissingTemplate(LookupError):
    """No template file for a key; the message names the file expected."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def stage_slug(name: str) -> str:
    """``Entrega vehículo`` -> ``entrega_vehiculo``; ``Facturación / entrega`` ->
    ``facturacion_entrega``: lower case, accents stripped, other characters to ``_``."""
    folded = unicodedata.normalize("NFKD", name.casefold())
    ascii_only = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9]+", "_", ascii_only).strip("_")


def stage_template_key(pipeline_id: str, stage_name: str) -> str:
    """The key of the notification sent when a ticket enters ``stage_name``."""
    return f"stage/{pipeline_id}/{stage_slug(stage_name)}"


def template_keys(catalog: Mapping[str, Any]) -> list[str]:
    """Every key the lead's code may ask for: each notifying stage, then the notices.

    ``catalog`` is a ``config.pipelines.Catalog`` (pipeline id -> Pipeline).
    """
    keys = [
        stage_template_key(pid, stage.name)
        for pid, pipeline in catalog.items()
        for stage in pipeline.stages
        if stage.notify
    ]
    return keys + list(NOTICE_KEYS)


def template_file(key: str) -> str:
    """The file (relative to templates/) holding ``key``; rejects path tricks."""
    if not _KEY_RE.fullmatch(key):
        raise MissingTemplate(f"invalid template key {key!r}")
    return key + TEMPLATE_SUFFIX


class _ModeLoader(BaseLoader):
    """Serves ``templates/x.j2`` as ``html:x.j2`` and ``text:x.j2`` (see module doc)."""

    def __init__(self, directory: Path) -> None:
        self._files = FileSystemLoader(str(directory), encoding="utf-8")

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        mode, sep, path = template.partition(":")
        if not sep or mode not in _MODES:
            raise TemplateNotFound(template)
        return self._files.get_source(environment, path)

    def list_templates(self) -> list[str]:
        return self._files.list_templates()


class _ModeEnvironment(Environment):
    def join_path(self, template: str, parent: str) -> str:
        """Names used inside a template get the mode of the template that uses them."""
        if ":" not in template and ":" in parent:
            return f"{parent.partition(':')[0]}:{template}"
        return template


def _autoescape(name: str | None) -> bool:
    return bool(name) and name.startswith("html:")


class Renderer:
    """Renders notifications; one instance per process (templates compile once).

    Parameters:
        templates_dir: where the ``.j2`` files are; default: the repository's templates/.
        locale: Babel locale of numbers and dates (the copy is written in es-MX).
        default_timezone: used when a recipient has none.
    """

    def __init__(
        self,
        templates_dir: Path | None = None,
        *,
        locale: str = formatting.DEFAULT_LOCALE,
        default_timezone: str = formatting.DEFAULT_TIMEZONE,
    ) -> None:
        self.templates_dir = Path(templates_dir) if templates_dir else TEMPLATES_DIR
        self.locale = locale
        self.default_timezone = default_timezone
        self.env = _ModeEnvironment(
            loader=_ModeLoader(self.templates_dir),
            autoescape=_autoescape,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        # Template files found once: compiled templates are kept (``auto_reload=False``),
        # so a file is not looked up on disk again for every notification.
        self._found: set[str] = set()
        self._register()

    def _register(self) -> None:
        locale = self.locale

        def tz(context: Context) -> str:
            recipient = context.get("recipient")
            return getattr(recipient, "timezone", None) or self.default_timezone

        @pass_context
        def date_long(context: Context, value: Any) -> str:
            return formatting.date_long(value, tz(context), locale)

        @pass_context
        def date_short(context: Context, value: Any) -> str:
            return formatting.date_short(value, tz(context), locale)

        @pass_context
        def time(context: Context, value: Any) -> str:
            return formatting.time_short(value, tz(context), locale)

        @pass_context
        def datetime_long(context: Context, value: Any) -> str:
            return formatting.datetime_long(value, tz(context), locale)

        self.env.filters.update(
            money=lambda v: formatting.money(v, locale),
            qty=lambda v: formatting.quantity(v, locale),
            date_long=date_long,
            date_short=date_short,
            time=time,
            datetime_long=datetime_long,
            paragraphs=formatting.paragraphs,
            short=formatting.short,
            oneline=formatting.oneline,
        )
        self.env.globals["b"] = formatting.bold

    # -- public API -------------------------------------------------------------------

    def has_template(self, key: str) -> bool:
        try:
            path = template_file(key)
        except MissingTemplate:
            return False
        return (self.templates_dir / path).is_file()

    def email(self, ctx: NotificationContext) -> RenderedEmail:
        """Subject (one line, with the ticket tag), plain-text part and HTML part."""
        path = self._path(ctx)
        text_template = self.env.get_template(f"text:{path}")
        values = self._values(ctx, channel="email", html=False, layout=LAYOUTS["email_text"])
        headline = formatting.oneline(self._block(text_template, "subject", values))
        subject = formatting.oneline(
            self.env.get_template(f"text:{SUBJECT_TEMPLATE}").render(values, headline=headline)
        )
        text = formatting.tidy(text_template.render(values))
        html_values = self._values(ctx, channel="email", html=True, layout=LAYOUTS["email_html"])
        html = self.env.get_template(f"html:{path}").render(html_values).strip() + "\n"
        return RenderedEmail(subject=subject, text=text, html=html)

    def whatsapp(self, ctx: NotificationContext) -> str:
        """Plain text with WhatsApp emphasis, always under ``WHATSAPP_LIMIT`` characters."""
        template = self.env.get_template(f"text:{self._path(ctx)}")
        text = ""
        for limit in _WHATSAPP_ITEM_LIMITS:
            values = self._values(ctx, channel="whatsapp", html=False, layout=LAYOUTS["whatsapp"], item_limit=limit)
            text = formatting.tidy(template.render(values))
            if len(text) < WHATSAPP_LIMIT:
                return text
        return formatting.cut_paragraphs(text, WHATSAPP_LIMIT - 1)

    # -- internals --------------------------------------------------------------------

    def _path(self, ctx: NotificationContext) -> str:
        path = template_file(ctx.template)
        if path not in self._found:
            if not (self.templates_dir / path).is_file():
                raise MissingTemplate(f"no template for {ctx.template!r}: expected {self.templates_dir / path}")
            self._found.add(path)
        if ctx.ticket is None and ctx.template not in CONTACT_KEYS:
            raise ValueError(f"template {ctx.template!r} needs a ticket")
        required = REQUIRED_FIELDS.get(ctx.template)
        if required and not getattr(ctx, required):
            raise ValueError(f"template {ctx.template!r} needs {required}")
        return path

    def _values(
        self,
        ctx: NotificationContext,
        *,
        channel: str,
        html: bool,
        layout: str,
        item_limit: int | None = None,
    ) -> dict[str, Any]:
        values = {f.name: getattr(ctx, f.name) for f in fields(ctx)}
        values.update(channel=channel, html=html, layout=layout, item_limit=item_limit)
        return values

    @staticmethod
    def _block(template: Template, name: str, values: dict[str, Any]) -> str:
        if name not in template.blocks:
            raise MissingTemplate(f"{template.name} has no {{% block {name} %}}")
        context = template.new_context(values)
        return "".join(template.blocks[name](context))


def iter_template_files(templates_dir: Path | None = None) -> Iterator[str]:
    """Every template file (relative, ``/``-separated), for the orphan check."""
    root = Path(templates_dir) if templates_dir else TEMPLATES_DIR
    for path in sorted(root.rglob(f"*{TEMPLATE_SUFFIX}")):
        yield path.relative_to(root).as_posix()


def referenced_templates(renderer: Renderer, roots: Iterable[str]) -> set[str]:
    """The files reachable from ``roots`` through extends/include/import (static names)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = (renderer.templates_dir / name).read_text(encoding="utf-8")
        for ref in meta.find_referenced_templates(renderer.env.parse(source)):
            if ref is not None:
                todo.append(ref)
    return seen
