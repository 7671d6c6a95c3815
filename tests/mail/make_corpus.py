"""Write the golden corpus: one .eml per quirk. Run: python tests/mail/make_corpus.py

The .eml files are committed; this script is how they were made, so a new quirk is a
new entry here. ``--expected`` also (re)writes each ``name.json`` from ``describe()``:
review every diff before committing it, the JSON is the specification.
"""

from __future__ import annotations

import base64
import json
import sys
from email.header import Header
from email.utils import formataddr, parseaddr
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUR = "soporte@jhleasing.mx"
OUR_ID = "<jhl.104231.a1b2c3@helpdesk.jhleasing.mx>"
DATE = "Mon, 03 Mar 2025 10:12:00 -0600"

CASES: dict[str, tuple[bytes, list[str]]] = {}


def case(name: str, raw: str | bytes, text_contains: list[str], *, encoding: str = "utf-8", crlf: bool = False) -> None:
    data = raw.encode(encoding) if isinstance(raw, str) else raw
    if crlf:
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    CASES[name] = (data, text_contains)


def encoded(value: str) -> str:
    """An RFC 2047 header value, as well-behaved clients write non-ASCII text."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def encoded_address(value: str) -> str:
    name, address = parseaddr(value)
    return value if value.isascii() else formataddr((name, address), charset="utf-8")


def headers(
    subject: str,
    *,
    sender: str = '"Juan Pérez" <juan.perez@cliente.mx>',
    mid: str = "<CAF=abc123@mail.gmail.com>",
    extra: str = "",
    reply: bool = True,
    ctype: str = 'text/plain; charset="UTF-8"',
    cte: str = "8bit",
) -> str:
    lines = [
        f"From: {encoded_address(sender)}",
        f"To: Soporte JHLeasing <{OUR}>",
        f"Subject: {encoded(subject)}",
        f"Date: {DATE}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
    ]
    if reply:
        lines += [f"In-Reply-To: {OUR_ID}", f"References: <jhl.104231.root@helpdesk.jhleasing.mx> {OUR_ID}"]
    if extra:
        lines.append(extra.strip("\n"))
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    if cte:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    return "\n".join(lines) + "\n\n"


def alternative(plain: str, html: str, boundary: str = "000000000000abc") -> str:
    return (
        f'--{boundary}\nContent-Type: text/plain; charset="UTF-8"\nContent-Transfer-Encoding: 8bit\n\n'
        f'{plain}\n--{boundary}\nContent-Type: text/html; charset="UTF-8"\n'
        f"Content-Transfer-Encoding: 8bit\n\n{html}\n--{boundary}--\n"
    )


def b64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


QUOTE_ES = (
    "> Estimado Juan Pérez:\n>\n> Su ticket [JHL#104231] pasó a la etapa Cita agendada.\n"
    "> Folio: 104231\n>\n> Atentamente,\n> JHLeasing\n"
)

# --- replies -------------------------------------------------------------------------
plain = (
    "Buenos días, ¿a qué hora puedo llevar la camioneta? Mañana tengo junta.\n\nSaludos\n\n"
    "El lun, 3 mar 2025 a las 10:12, Soporte JHLeasing (<soporte@jhleasing.mx>)\nescribió:\n\n" + QUOTE_ES
)
html = (
    '<div dir="ltr">Buenos días, ¿a qué hora puedo llevar la camioneta? Mañana tengo junta.'
    '<div><br></div><div>Saludos</div></div><br><div class="gmail_quote">'
    '<div class="gmail_attr">El lun, 3 mar 2025 a las 10:12, Soporte JHLeasing (&lt;'
    "soporte@jhleasing.mx&gt;) escribió:<br></div><blockquote>Su ticket pasó a Cita agendada."
    "</blockquote></div>"
)
case(
    "gmail_es_reply",
    headers("Re: [JHL#104231] Cita agendada", ctype='multipart/alternative; boundary="000000000000abc"', cte="")
    + alternative(plain, html),
    ["¿a qué hora puedo llevar la camioneta?", "> Folio: 104231"],
)

case(
    "gmail_en_reply",
    headers("Re: [JHL#104231] Appointment scheduled", sender="Mary Smith <MARY.SMITH@Client.COM>")
    + "Thursday works for us.\n\nOn Mon, Mar 3, 2025 at 10:12 AM Soporte JHLeasing <"
    "soporte@jhleasing.mx> wrote:\n\n> Your ticket moved to Appointment scheduled.\n",
    ["Thursday works for us."],
)

outlook_block = (
    "________________________________\n"
    "De: Soporte JHLeasing <soporte@jhleasing.mx>\n"
    "Enviado: lunes, 3 de marzo de 2025 10:12\n"
    "Para: Juan Pérez <juan.perez@cliente.mx>\n"
    "Asunto: [JHL#104231] Cotización solicitada\n\n"
    "Estimado Juan Pérez:\nSu ticket pasó a la etapa Cotización solicitada.\n"
)
case(
    "outlook_es_reply",
    headers("RE: [JHL#104231] Cotización solicitada", mid="<DM6PR01MB1234.namprd01.prod.outlook.com>")
    + "Autorizo la cotización por $8,500.00 más IVA.\n\nJuan Pérez\nGerente de Flota\n\n"
    + outlook_block,
    ["Autorizo la cotización", "Enviado: lunes"],
    crlf=True,
)

case(
    "outlook_es_reply_with_disclaimer",
    headers("RE: [JHL#104231] Cotización solicitada", mid="<DM6PR01MB5678.namprd01.prod.outlook.com>")
    + "Favor de reprogramar la cita para el jueves.\n\nSaludos cordiales,\nJuan Pérez\n"
    "Tel. 55 1234 5678\n\n"
    "AVISO DE CONFIDENCIALIDAD: Este correo electrónico y sus anexos contienen información "
    "confidencial y está dirigido únicamente a su destinatario.\n\n" + outlook_block,
    ["reprogramar la cita", "AVISO DE CONFIDENCIALIDAD"],
    crlf=True,
)

case(
    "outlook_en_reply",
    headers("RE: [JHL#104231] Quote requested", sender="Mary Smith <mary.smith@client.com>")
    + "Approved, please proceed.\n\nMary\n\n________________________________\n"
    "From: Soporte JHLeasing <soporte@jhleasing.mx>\nSent: Monday, March 3, 2025 10:12 AM\n"
    "To: Mary Smith <mary.smith@client.com>\nSubject: [JHL#104231] Quote requested\n\n"
    "Your ticket moved to Quote requested.\n",
    ["Approved, please proceed."],
)

case(
    "outlook_mensaje_original",
    headers("RE: Servicio unidad 45", reply=False) + "Ya recogimos la unidad, gracias.\n\n-----Mensaje original-----\n"
    "De: Soporte JHLeasing [mailto:soporte@jhleasing.mx]\nEnviado el: lunes, 3 de marzo de "
    "2025 10:12 a. m.\nPara: Juan Pérez\nAsunto: Servicio unidad 45\n\nSu unidad está lista.\n",
    ["Ya recogimos la unidad"],
)

case(
    "apple_mail_es_reply",
    headers(
        "Re: [JHL#104231] Entrega vehículo",
        sender="Ana López <ana.lopez@icloud.com>",
        mid="<5D1A2B3C-0000-4E5F@icloud.com>",
        ctype="text/plain; charset=utf-8",
        cte="quoted-printable",
    )
    + "Perfecto, paso ma=C3=B1ana a las 9.\n\nEnviado desde mi iPhone\n\n"
    "El 3 mar 2025, a las 10:12, Soporte JHLeasing <soporte@jhleasing.mx> escribi=C3=B3:\n\n"
    "> =EF=BB=BFSu veh=C3=ADculo est=C3=A1 listo para entrega.\n",
    ["Perfecto, paso mañana a las 9.", "escribió:"],
)

case(
    "iphone_signature_only",
    headers("Re: [JHL#104231] Cita agendada") + "Sí, ahí estaré.\n\nEnviado desde mi iPhone\n",
    ["Sí, ahí estaré."],
)

case(
    "huawei_signature",
    headers("Re: [JHL#104231] Cita agendada") + "Confirmo la cita del miércoles.\n\nEnviado desde mi teléfono Huawei\n",
    ["Confirmo la cita"],
)

case(
    "outlook_android_signature",
    headers("RE: [JHL#104231] Cita agendada") + "Ok, de acuerdo.\n\nObtener Outlook para Android\n" + outlook_block,
    ["Ok, de acuerdo."],
)

case(
    "signature_dash",
    headers("Re: [JHL#104231] Cita agendada")
    + "La unidad hace un ruido al frenar.\n\n-- \nJuan Pérez\nGerente de Flota | Cliente SA\n",
    ["ruido al frenar", "Gerente de Flota"],
)

case(
    "bottom_posting",
    headers("Re: [JHL#104231] Cita agendada")
    + "El lun, 3 mar 2025 a las 10:12, Soporte JHLeasing <soporte@jhleasing.mx> escribió:\n"
    + QUOTE_ES
    + "\nGracias, ahí nos vemos.\n",
    ["Gracias, ahí nos vemos."],
)

case(
    "inline_quoted_answers",
    headers("Re: [JHL#104231] Datos de la unidad")
    + "> ¿Placas de la unidad?\nABC-123-D\n\n> ¿Kilometraje actual?\n45,000 km\n\n"
    "> ¿Falla reportada?\nNo enciende el aire acondicionado.\n",
    ["ABC-123-D"],
)

# --- charsets -------------------------------------------------------------------------
case(
    "iso_8859_1_body",
    headers("Solicitud de servicio", reply=False, ctype="text/plain; charset=iso-8859-1", cte="quoted-printable")
    + "Buenas tardes,\n\nSolicito servicio para la unidad con placas XYZ-987-A; el a=F1o\n"
    "pasado se cambi=F3 la bater=EDa. =BFPueden revisar el cami=F3n?\n\nGracias\n",
    ["el año\npasado", "¿Pueden revisar el camión?"],
)

case(
    "windows_1252_mislabelled",
    headers("Cotización", reply=False, ctype="text/plain; charset=iso-8859-1")
    + "Me dijeron \u201cya est\u00e1 lista\u201d \u2013 el costo fue de \u20ac0; ma\u00f1ana "
    "paso.\n",
    ["\u201cya está lista\u201d \u2013", "mañana"],
    encoding="cp1252",
)

case(
    "windows_1252_8bit",
    headers("Revisión de frenos", reply=False, ctype="text/plain; charset=windows-1252")
    + "Buen día: la unidad 12 necesita revisión de frenos… ¿cuándo hay espacio?\n",
    ["frenos… ¿cuándo"],
    encoding="cp1252",
)

case(
    "utf8_8bit_body",
    headers("Cambio de llantas", reply=False) + "Hola, necesito cambio de llantas para el vehículo del Ing. Muñoz.\n",
    ["Ing. Muñoz"],
)

case(
    "utf8_labelled_latin1",
    headers("Pregunta", reply=False) + "¿Cuánto tardará la reparación? Señor Núñez\n",
    ["Señor Núñez"],
    encoding="latin-1",
)

case(
    "unknown_charset",
    headers("Servicio de afinación", reply=False, ctype='text/plain; charset="unknown-8bit"')
    + "Necesito afinación mayor para la camioneta, año 2021, gracias.\n",
    ["afinación mayor", "año 2021"],
)

case(
    "x_user_defined_charset",
    headers("Solicitud", reply=False, ctype='text/plain; charset="x-user-defined"')
    + "Favor de agendar verificación vehicular. Atte. Peña\n",
    ["Atte. Peña"],
    encoding="latin-1",
)

# --- HTML -------------------------------------------------------------------------------
case(
    "html_only",
    headers("Solicitud de grúa", reply=False, ctype='text/html; charset="UTF-8"')
    + "<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
    "<p>Necesitamos <b>grúa</b> urgente en Periférico Sur.</p><table><tr><td>Placas</td>"
    '<td>ABC-123-D</td></tr></table><p onclick="x()">Gracias</p></body></html>\n',
    ["Necesitamos grúa urgente en Periférico Sur.", "Placas", "ABC-123-D"],
)

case(
    "html_only_outlook_reply",
    headers("RE: [JHL#104231] Enviado a cliente", ctype='text/html; charset="utf-8"', cte="quoted-printable")
    + '<html><body><p>Recibido, lo reviso con mi jefe.</p><div style=3D"border-top:solid '
    '#E1E1E1 1.0pt"><p><b>De:</b> Soporte JHLeasing &lt;soporte@jhleasing.mx&gt;<br><b>'
    "Enviado:</b> lunes, 3 de marzo de 2025 10:12<br><b>Para:</b> Juan P=C3=A9rez<br><b>"
    "Asunto:</b> [JHL#104231] Enviado a cliente</p></div><p>Su cotizaci=C3=B3n est=C3=A1 "
    "lista.</p></body></html>\n",
    ["Recibido, lo reviso con mi jefe.", "Su cotización está lista."],
)

# --- attachments --------------------------------------------------------------------------
PDF = b"%PDF-1.4\n% factura\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def mixed(body: str, *parts: str, boundary: str = "mixed-b0undary") -> str:
    out = f"--{boundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{body}\n"
    for part in parts:
        out += f"--{boundary}\n{part}\n"
    return out + f"--{boundary}--\n"


def attached(ctype: str, disposition: str, data: bytes) -> str:
    return (
        f"Content-Type: {ctype}\nContent-Disposition: {disposition}\nContent-Transfer-Encoding: base64\n\n{b64(data)}\n"
    )


case(
    "attachment_rfc2231_filename",
    headers("Factura del servicio", reply=False, ctype='multipart/mixed; boundary="mixed-b0undary"', cte="")
    + mixed(
        "Adjunto la factura.",
        attached("application/pdf", "attachment; filename*=utf-8''Factura%20a%C3%B1o%202025.pdf", PDF),
    ),
    ["Adjunto la factura."],
)

case(
    "attachment_rfc2231_continuation",
    headers("Documentos", reply=False, ctype='multipart/mixed; boundary="mixed-b0undary"', cte="")
    + mixed(
        "Van los documentos.",
        attached(
            "application/pdf",
            "attachment;\n filename*0*=iso-8859-1''P%F3liza%20de%20seguro%20;\n filename*1*=cami%F3n%2045.pdf",
            PDF,
        ),
    ),
    ["Van los documentos."],
)

case(
    "attachment_rfc2047_filename",
    headers("Fotos del golpe", reply=False, ctype='multipart/mixed; boundary="mixed-b0undary"', cte="")
    + mixed(
        "Mando foto del golpe en la puerta.",
        attached(
            'image/png; name="=?UTF-8?Q?Puerta_da=C3=B1ada.png?="',
            'attachment; filename="=?UTF-8?Q?Puerta_da=C3=B1ada.png?="',
            PNG,
        ),
    ),
    ["golpe en la puerta"],
)

case(
    "attachment_path_filename",
    headers("Archivo", reply=False, ctype='multipart/mixed; boundary="mixed-b0undary"', cte="")
    + mixed(
        "Ver adjunto.",
        attached(
            "application/octet-stream", 'attachment; filename="..\\\\..\\\\Windows\\\\sys\tte\x01m.ini"', b"[x]\n"
        ),
        attached("text/plain", 'attachment; filename="/etc/passwd"', b"root:x:0:0\n"),
    ),
    ["Ver adjunto."],
)

case(
    "inline_image",
    headers("Tablero con testigo encendido", reply=False, ctype='multipart/related; boundary="rel"', cte="")
    + "--rel\nContent-Type: text/html; charset=utf-8\n\n<p>Se encendió este testigo:</p>"
    '<img src="cid:testigo@cliente"><p>¿Es grave?</p>\n--rel\nContent-Type: image/png\n'
    'Content-ID: <testigo@cliente>\nContent-Disposition: inline; filename="image001.png"\n'
    f"Content-Transfer-Encoding: base64\n\n{b64(PNG)}\n--rel--\n",
    ["Se encendió este testigo:", "¿Es grave?"],
)

case(
    "winmail_dat",
    headers(
        "RE: [JHL#104231] Cotización",
        mid="<EXCH-0001@cliente.local>",
        ctype='multipart/mixed; boundary="mixed-b0undary"',
        cte="",
    )
    + mixed(
        "Se anexa orden de compra.",
        attached(
            'application/ms-tnef; name="winmail.dat"',
            'attachment; filename="winmail.dat"',
            b"\x78\x9f\x3e\x22" + b"\x00" * 60,
        ),
    ),
    ["orden de compra"],
)

# --- forwards ----------------------------------------------------------------------------
STAFF = '"Laura Ejecutiva" <laura.ruiz@jhleasing.mx>'
case(
    "forward_gmail_es",
    headers("Fwd: Falla en unidad 23", sender=STAFF, reply=False)
    + "Favor de abrir ticket para este cliente.\n\n---------- Mensaje reenviado ---------\n"
    'De: "Pérez, Ana" <ana.perez@cliente.mx>\nDate: lun, 3 mar 2025 a las 9:05\n'
    "Subject: Falla en unidad 23\nTo: Laura Ruiz <laura.ruiz@jhleasing.mx>\n\n"
    "Hola Laura, la unidad 23 (placas ABC-123-D) no enciende desde ayer.\n\nAna\n",
    ["Favor de abrir ticket", "no enciende desde ayer"],
)

case(
    "forward_gmail_en",
    headers("Fwd: Flat tire", sender=STAFF, reply=False)
    + "\n---------- Forwarded message ---------\nFrom: Mary Smith <mary@client.com>\n"
    "Date: Mon, Mar 3, 2025 at 9:05 AM\nSubject: Flat tire\nTo: <laura.ruiz@jhleasing.mx>\n\n"
    "We have a flat tire on unit 7, ticket 104231 is still open?\n",
    ["We have a flat tire"],
)

case(
    "forward_outlook_es",
    headers("RV: Solicitud de cotización", sender=STAFF, reply=False)
    + "Te paso la solicitud del cliente.\n\n________________________________\n"
    "De: Ana Pérez [mailto:ana.perez@cliente.mx]\nEnviado el: lunes, 3 de marzo de 2025 "
    "09:05 a. m.\nPara: Laura Ruiz <laura.ruiz@jhleasing.mx>; Compras\n <compras@jhleasing.mx>\n"
    "Asunto: Solicitud de cotización\n\nBuen día, requiero cotización de balatas para la "
    "unidad 31.\n\nSaludos\nAna Pérez\n",
    ["cotización de balatas"],
    crlf=True,
)

case(
    "forward_outlook_en_original_message",
    headers("FW: Brake noise", sender=STAFF, reply=False)
    + "See below.\n\n-----Original Message-----\nFrom: Smith, Mary <mary@client.com>\n"
    "Sent: Monday, March 3, 2025 9:05 AM\nTo: Laura Ruiz\nSubject: Brake noise\n\n"
    "The brakes on unit 12 make noise.\n",
    ["The brakes on unit 12"],
)

case(
    "forward_outlook_top_re",
    headers("RE: Servicio urgente", sender=STAFF, reply=False)
    + "De: Ana Pérez <ana.perez@cliente.mx>\nEnviado: lunes, 3 de marzo de 2025 09:05\n"
    "Para: Laura Ruiz <laura.ruiz@jhleasing.mx>\nAsunto: Servicio urgente\n\n"
    "Necesito servicio urgente para la unidad 8.\n",
    ["servicio urgente para la unidad 8"],
)

case(
    "forward_apple_en",
    headers("Fwd: Windshield", sender=STAFF, reply=False)
    + "Please open a ticket.\n\nBegin forwarded message:\n\nFrom: Mary Smith <mary@client.com>\n"
    "Subject: Windshield\nDate: March 3, 2025 at 9:05:00 AM CST\nTo: laura.ruiz@jhleasing.mx\n\n"
    "The windshield of unit 5 is cracked.\n\nSent from my iPhone\n",
    ["The windshield of unit 5 is cracked."],
)

case(
    "forward_apple_es",
    headers("Fwd: Parabrisas", sender=STAFF, reply=False)
    + "Inicio del mensaje reenviado:\n\nDe: Ana Pérez <ana.perez@cliente.mx>\n"
    "Asunto: Parabrisas\nFecha: 3 de marzo de 2025, 9:05:00 CST\nPara: laura.ruiz@jhleasing.mx\n\n"
    "Se estrelló el parabrisas de la unidad 5.\n",
    ["Se estrelló el parabrisas"],
)

inner = (
    "From: =?iso-8859-1?Q?Ana_P=E9rez?= <ana.perez@cliente.mx>\nTo: laura.ruiz@jhleasing.mx\n"
    "Subject: =?iso-8859-1?Q?Cotizaci=F3n_llantas?=\nDate: Mon, 03 Mar 2025 09:05:00 -0600\n"
    "Message-ID: <orig-123@cliente.mx>\nContent-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n\nNecesito cotizaci=F3n de 4 llantas para la "
    "unidad 9.\n\nAna\n"
)
case(
    "forward_as_attachment",
    headers(
        "Fw: Cotización llantas", sender=STAFF, reply=False, ctype='multipart/mixed; boundary="mixed-b0undary"', cte=""
    )
    + mixed(
        "Cliente pide cotización, va adjunto su correo.",
        'Content-Type: message/rfc822\nContent-Disposition: attachment; filename="cotizacion.eml"\n\n' + inner,
    ),
    ["va adjunto su correo"],
)

# --- auto replies -------------------------------------------------------------------------
case(
    "auto_reply_out_of_office_es",
    headers(
        "Respuesta automática: [JHL#104231] Cita agendada",
        extra="X-Auto-Response-Suppress: All\nX-MS-Exchange-Inbox-Rules-Loop: juan.perez@cliente.mx",
    )
    + "Estoy fuera de la oficina hasta el 10 de marzo. Para temas urgentes escriba a "
    "flota@cliente.mx.\n",
    ["fuera de la oficina"],
)

case(
    "auto_reply_out_of_office_en",
    headers("Automatic reply: [JHL#104231] Appointment", sender="Mary Smith <mary@client.com>")
    + "I am out of the office until March 10.\n",
    ["out of the office"],
)

case(
    "auto_submitted",
    headers("Re: [JHL#104231] Cita agendada", extra="Auto-Submitted: auto-replied")
    + "Gracias por su mensaje, le responderemos pronto.\n",
    ["le responderemos pronto"],
)

case(
    "auto_submitted_no",
    headers("Re: [JHL#104231] Cita agendada", extra="Auto-Submitted: no") + "Confirmo asistencia.\n",
    ["Confirmo asistencia."],
)

case(
    "x_autoreply",
    headers("Re: [JHL#104231] Cita agendada", extra="X-Autoreply: yes") + "Mensaje recibido.\n",
    ["Mensaje recibido."],
)

case(
    "precedence_bulk",
    headers(
        "Boletín de flotillas marzo",
        reply=False,
        sender="Noticias <boletin@proveedor.mx>",
        extra="Precedence: bulk\nList-Unsubscribe: <mailto:baja@proveedor.mx>",
    )
    + "Conoce nuestras promociones de marzo.\n",
    ["promociones de marzo"],
)

case(
    "vacation_subject_with_suppress",
    headers("Vacaciones", extra="X-Auto-Response-Suppress: OOF") + "Estaré de vacaciones del 1 al 15 de abril.\n",
    ["de vacaciones"],
)

case(
    "read_receipt",
    headers(
        "Leído: [JHL#104231] Cita agendada",
        ctype='multipart/report; report-type=disposition-notification; boundary="rr"',
        cte="",
    )
    + "--rr\nContent-Type: text/plain; charset=utf-8\n\nSu mensaje fue leído el lunes.\n"
    "--rr\nContent-Type: message/disposition-notification\n\nFinal-Recipient: rfc822; "
    "juan.perez@cliente.mx\nDisposition: manual-action/MDN-sent-manually; displayed\n--rr--\n",
    ["Su mensaje fue leído"],
)

# --- bounces ------------------------------------------------------------------------------
OUR_NOTIFICATION = (
    f"From: Soporte JHLeasing <{OUR}>\nTo: nadie@cliente.mx\nSubject: [JHL#104231] Cita agendada\n"
    f"Date: {DATE}\nMessage-ID: {OUR_ID}\nContent-Type: text/plain; charset=utf-8\n\nSu cita...\n"
)


def dsn(
    name: str, recipients: str, original: str, text: str, subject: str = "Undelivered Mail Returned to Sender"
) -> None:
    case(
        name,
        "Return-Path: <>\nFrom: Mail Delivery System <MAILER-DAEMON@mx.jhleasing.mx>\n"
        f"To: {OUR}\nSubject: {subject}\nDate: {DATE}\n"
        f"Message-ID: <20250303161200.{name}@mx.jhleasing.mx>\nAuto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n"
        ' boundary="dsnb"\n\n--dsnb\nContent-Description: Notification\nContent-Type: '
        f"text/plain; charset=us-ascii\n\n{text}\n--dsnb\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.jhleasing.mx\nArrival-Date: Mon,  3 Mar 2025 10:12:01 -0600\n\n"
        f"{recipients}\n--dsnb\n{original}\n--dsnb--\n",
        [text.split("\n")[0]],
    )


dsn(
    "dsn_permanent",
    "Final-Recipient: rfc822; nadie@cliente.mx\nOriginal-Recipient: rfc822;"
    "nadie@cliente.mx\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 "
    "<nadie@cliente.mx>: Recipient address rejected: User unknown\n",
    "Content-Type: message/rfc822\n\n" + OUR_NOTIFICATION,
    "This is the mail system at host mx.jhleasing.mx.\nI'm sorry to have to inform you that "
    "your message could not be delivered.",
)

dsn(
    "dsn_temporary",
    "Final-Recipient: rfc822; lleno@cliente.mx\nAction: delayed\nStatus: 4.2.2\n"
    "Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\nWill-Retry-Until: Wed, 5 Mar 2025 10:12:01 -0600\n",
    "Content-Type: text/rfc822-headers\n\n" + OUR_NOTIFICATION.split("\n\n")[0] + "\n",
    "This is the mail system at host mx.jhleasing.mx.\n#### Delivery delayed; will keep trying.",
    subject="Delayed Mail (still being retried)",
)

dsn(
    "dsn_multiple_recipients",
    "Final-Recipient: rfc822; ok@cliente.mx\nAction: delivered\n"
    "Status: 2.0.0\n\nFinal-Recipient: rfc822;malo@cliente.mx\nAction: failed\nStatus: 5.2.1\n\n"
    "Final-Recipient: rfc822; <otro@cliente.mx>\nAction: failed\n",
    "Content-Type: message/rfc822\n\n" + OUR_NOTIFICATION,
    "Delivery report for your message.",
)

case(
    "bounce_mailer_daemon_plain",
    "Return-Path: <>\nFrom: MAILER-DAEMON@mail.cliente.mx\n"
    f"To: {OUR}\nSubject: failure notice\nDate: {DATE}\nMessage-ID: <qmail-1@mail.cliente.mx>\n\n"
    "Hi. This is the qmail-send program at mail.cliente.mx.\nI'm afraid I wasn't able to "
    "deliver your message to the following addresses.\nThis is a permanent error; I've given up.\n\n"
    "<ex.empleado@cliente.mx>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
    "--- Below this line is a copy of the message.\n\n" + OUR_NOTIFICATION,
    ["wasn't able to deliver"],
)

case(
    "bounce_exchange_postmaster_es",
    "From: postmaster@cliente.mx\n"
    f"To: {OUR}\nSubject: No se puede entregar: [JHL#104231] Cita agendada\nDate: {DATE}\n"
    "Message-ID: <ndr-77@cliente.mx>\nContent-Type: text/plain; charset=utf-8\n\n"
    "No se pudo entregar a estos destinatarios o grupos:\n\njuan.viejo@cliente.mx\n"
    "La dirección de correo electrónico no existe.\n\nServidor remoto: 550 5.1.10 "
    "RESOLVER.ADR.RecipientNotFound\n\nEncabezados del mensaje original:\n\n"
    f"Message-ID: {OUR_ID}\nSubject: [JHL#104231] Cita agendada\n",
    ["No se pudo entregar"],
)

# --- broken MIME ---------------------------------------------------------------------------
case(
    "missing_boundary",
    headers("Sin boundary", reply=False, ctype="multipart/mixed", cte="")
    + "--XyZ123\nContent-Type: text/plain; charset=utf-8\n\nLa unidad 14 requiere "
    'servicio de afinación.\n--XyZ123\nContent-Type: application/pdf; name="orden.pdf"\n'
    f'Content-Disposition: attachment; filename="orden.pdf"\nContent-Transfer-Encoding: base64\n\n{b64(PDF)}\n'
    "--XyZ123--\n",
    ["servicio de afinación"],
)

case(
    "wrong_boundary",
    headers("Boundary equivocado", reply=False, ctype='multipart/alternative; boundary="declarada"', cte="")
    + "--real-one\nContent-Type: text/plain; charset=utf-8\n\nFavor de llamarme al 55 "
    "8765 4321.\n--real-one\nContent-Type: text/html; charset=utf-8\n\n<p>Favor de llamarme"
    "</p>\n--real-one--\n",
    ["Favor de llamarme"],
)

case(
    "bad_base64",
    headers("Foto", reply=False, ctype='multipart/mixed; boundary="mixed-b0undary"', cte="")
    + mixed(
        "Foto adjunta.",
        "Content-Type: image/jpeg\nContent-Disposition: attachment; "
        'filename="foto.jpg"\nContent-Transfer-Encoding: base64\n\n/9j/4AAQSk!!ZJRgABA@@QEASABI\nAAD/==2w\n',
    ),
    ["Foto adjunta."],
)

case(
    "bad_base64_text",
    headers("Texto dañado", reply=False, cte="base64")
    + b64(b"Hola, la unidad 3 tiene una fuga de aceite.")[:-6]
    + "*%$\n",
    ["la unidad 3 tiene una fuga"],
)

case(
    "8bit_headers",
    "From: José Muñoz <jose.munoz@cliente.mx>\nTo: soporte@jhleasing.mx\n"
    "Subject: Revisión de la camioneta número 7\nDate: " + DATE + "\nMessage-ID: <8bit-1@cliente.mx>\n"
    "Content-Type: text/plain; charset=utf-8\n\nLa camioneta hace ruido.\n",
    ["hace ruido"],
)

case(
    "8bit_headers_latin1",
    "From: Iñaki Peña <inaki@cliente.mx>\nTo: soporte@jhleasing.mx\n"
    "Subject: Petición de grúa\nDate: " + DATE + "\nMessage-ID: <8bit-2@cliente.mx>\n"
    "Content-Type: text/plain; charset=iso-8859-1\n\nNecesito grúa.\n",
    ["Necesito grúa."],
    encoding="latin-1",
)

case(
    "no_from",
    f"To: {OUR}\nSubject: Sin remitente\nDate: {DATE}\nMessage-ID: <nofrom@cliente.mx>\n\nMensaje sin remitente.\n",
    ["Mensaje sin remitente."],
)

case(
    "no_message_id",
    f"From: juan.perez@cliente.mx\nTo: {OUR}\nSubject: Sin Message-ID\n\nHola, ¿me confirman la cita?\n",
    ["me confirman la cita"],
)

case(
    "rfc2047_subject",
    headers(
        "=?UTF-8?B?wr9DdcOhbmRv?= =?UTF-8?Q?_est=C3=A1_lista?=\n =?iso-8859-1?Q?_la_unidad_de_Nu=F1ez=3F?=",
        reply=False,
        sender="=?utf-8?q?P=C3=A9rez=2C_Ana?= <ana.perez@cliente.mx>",
    )
    + "Pregunto por la unidad.\n",
    ["Pregunto por la unidad."],
)

case("subject_tag_reply", headers("Re: [JHL#104231] Cotización solicitada") + "Gracias.\n", ["Gracias."])

case(
    "number_in_body",
    headers("Seguimiento", reply=False) + "Buen día, mi folio es el 104231 y nadie me ha contactado.\n",
    ["mi folio es el 104231"],
)

case(
    "plates_and_vins_no_number",
    headers("Alta de unidades", reply=False)
    + "Unidades nuevas:\nPlacas ABC-123-D, VIN 3VWFE21C04M000001, serie 104232\n"
    "Tel. 55 1234 5678, monto $104,231.00, fecha 03/03/2025, orden 1042317\n",
    ["3VWFE21C04M000001"],
)

case(
    "loop_from_own_inbox",
    headers(
        "[JHL#104231] Cita agendada",
        sender=f"Soporte JHLeasing <{OUR}>",
        mid="<jhl.104231.zz9@helpdesk.jhleasing.mx>",
        reply=False,
    )
    + "Estimado cliente: su ticket pasó a Cita agendada.\n",
    ["su ticket pasó"],
)

case(
    "loop_own_message_id",
    headers(
        "[JHL#104231] Cita agendada",
        sender="Reenvío <reenvio@cliente.mx>",
        mid="<jhl.104231.zz8@helpdesk.jhleasing.mx>",
        reply=False,
    )
    + "Estimado cliente: su ticket pasó a Cita agendada.\n",
    ["su ticket pasó"],
)

case(
    "duplicate_headers",
    headers("Primero", reply=False, extra="Subject: Segundo\nFrom: otro@cliente.mx\nMessage-ID: <dup-2@cliente.mx>")
    + "Encabezados duplicados.\n",
    ["Encabezados duplicados."],
)

case(
    "bad_date",
    headers("Fecha rara", reply=False).replace(DATE, "lunes 3 de marzo de 2025") + "Fecha ilegible.\n",
    ["Fecha ilegible."],
)

case(
    "crlf_multipart",
    headers("Re: [JHL#104231] Cita agendada", ctype='multipart/alternative; boundary="000000000000abc"', cte="")
    + alternative(
        "Sí, confirmo.\r\n\r\nOn Mon, Mar 3, 2025 at 10:12 AM Soporte\r\n"
        "<soporte@jhleasing.mx> wrote:\r\n> Cita agendada\r\n",
        "<p>Sí, confirmo.</p>",
    ),
    ["Sí, confirmo."],
    crlf=True,
)


def main() -> None:
    for name, (raw, _) in CASES.items():
        (HERE / f"{name}.eml").write_bytes(raw)
    if "--expected" in sys.argv:
        sys.path.insert(0, str(HERE.parent.parent))
        from inbound.report import describe

        for name, (raw, text_contains) in CASES.items():
            got = describe(
                raw,
                prefix="JHL",
                own_addresses={OUR},
                is_own_message_id=lambda mid: mid.endswith("@helpdesk.jhleasing.mx"),
            )
            del got["text"]
            got["text_contains"] = text_contains
            path = HERE / f"{name}.json"
            path.write_text(json.dumps(got, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"{len(CASES)} messages")


if __name__ == "__main__":
    main()
