"""What a notification may show: plain, typed views filled from the database.

Why plain dataclasses and not the ORM rows: templates must not lazy-load relations
(a template that touches the database can fail or leak data at send time), and the
renderer must be testable without a database. The lead's code copies what a message
needs into these views inside the transaction; the renderer reads nothing else.

Every text field here is *data*: templates print it escaped (HTML) or as is (plain
text, WhatsApp) and never compile it. Optional blocks (vehicle, provider, line items,
appointment) are shown only when their field is set, so ``None`` and empty lists are
normal values, not errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

Audience = Literal["requester", "fleet_manager"]
Channel = Literal["email", "whatsapp"]
TicketKind = Literal["attention", "service"]
LineItemKind = Literal["servicio", "refacción"]

SURVEY_SCORES = (1, 2, 3, 4, 5)


@dataclass(frozen=True, kw_only=True)
class PersonView:
    """Someone the customer can contact, e.g. the account executive (Ejecutivo de Cuenta)."""

    name: str
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True, kw_only=True)
class VehicleView:
    """The vehicle a ticket is about; ``vin`` is the serial number (Número de Serie)."""

    vin: str | None = None
    plate: str | None = None
    make: str | None = None
    model: str | None = None
    year: int | None = None

    @property
    def label(self) -> str:
        """``Nissan Versa 2022``; whatever parts are known, or an empty string."""
        return " ".join(str(p) for p in (self.make, self.model, self.year) if p)


@dataclass(frozen=True, kw_only=True)
class ProviderView:
    """The workshop, agency or office where the vehicle goes (or the authority's office)."""

    name: str
    address: str | None = None
    phone: str | None = None


@dataclass(frozen=True, kw_only=True)
class LineItemView:
    """One line of a quote: a service (mano de obra) or a part (refacción), in MXN."""

    kind: LineItemKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, kw_only=True)
class TicketView:
    """The ticket as the customer knows it, plus its service data when there is any.

    ``tag`` is the subject tag (``[JHL#104231]``) that threads replies; ``stage`` and
    ``stage_description`` are the stage being entered. Amounts are shown as given:
    for a warranty ticket (``warranty``) the lead's code passes the amounts billed,
    i.e. zero, and the templates add the warranty note.
    """

    number: int
    tag: str
    subject: str
    pipeline_id: str
    pipeline_label: str
    stage: str
    stage_description: str
    state: str
    portal_status: str
    kind: TicketKind = "attention"
    opened_at: datetime
    vehicle: VehicleView | None = None
    provider: ProviderView | None = None
    appointment_at: datetime | None = None
    expected_end_at: datetime | None = None
    line_items: list[LineItemView] = field(default_factory=list)
    total: Decimal = Decimal(0)
    warranty: bool = False
    mileage: int | None = None
    account_executive: PersonView | None = None


@dataclass(frozen=True, kw_only=True)
class RecipientView:
    """Who reads this message and where.

    ``timezone`` converts every date shown. ``locale`` is recorded for the future; the
    copy is written in es-MX, so numbers and dates use the renderer's locale to match it.
    """

    name: str
    role: Audience = "requester"
    channel: Channel = "email"
    timezone: str = "America/Mexico_City"
    locale: str = "es_MX"


@dataclass(frozen=True, kw_only=True)
class SurveyView:
    """A satisfaction survey: one link per score, each to a page that asks to confirm.

    The links only *show* a confirmation page (a GET records nothing), so mail scanners
    that follow links cannot answer the survey for the customer.
    """

    token: str
    urls: dict[int, str]
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if tuple(sorted(self.urls)) != SURVEY_SCORES:
            raise ValueError("a survey needs exactly one link for each score 1 to 5")


@dataclass(frozen=True, kw_only=True)
class TicketRef:
    """Another open ticket of the same contact, for the "which ticket" notice."""

    number: int
    subject: str


@dataclass(frozen=True, kw_only=True)
class NotificationContext:
    """Everything one notification shows; ``template`` is the key (see ``render``).

    Parameters:
        template: ``stage/<pipeline>/<slug>`` or a notice key such as ``reply``.
        ticket: the ticket; ``None`` only for notices about the contact itself
            (``optout_confirm``, ``optin_confirm``).
        company_name: signed on every message (``JHLeasing``).
        reply_address: our inbox, shown in the email footer.
        public_url: base URL of ``helpdesk web``.
        note: what staff wrote with the stage change; shown under the stage text.
        reopened: the move left a terminal stage; the message says the case is reopened.
        previous_stage: the stage the ticket left, for the reopen notice.
        staff_text: the body of a ``reply`` written by staff.
        survey: the survey links, for ``survey``.
        score: the score the customer gave, for ``survey_thanks``.
        other_open_tickets: the contact's other open tickets, for ``joined_ticket``.
        quoted_number: the number a stranger quoted, for ``flagged_new_ticket``.
        extra: free strings for operators' custom templates; the shipped ones use none.
    """

    template: str
    ticket: TicketView | None
    recipient: RecipientView
    company_name: str = "JHLeasing"
    reply_address: str = ""
    public_url: str = ""
    note: str | None = None
    reopened: bool = False
    previous_stage: str | None = None
    staff_text: str | None = None
    survey: SurveyView | None = None
    score: int | None = None
    other_open_tickets: list[TicketRef] = field(default_factory=list)
    quoted_number: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
