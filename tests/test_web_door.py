"""The web door under load and its threading child: posts arriving together are each kept
once (they share commits), and ``helpdesk web`` threads what it kept in a niced child
process that does not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select

from config.settings import Settings
from inbound.keep import keep_raw
from models.message import Attachment, Message, RawMessage
from models.ticket import Ticket
from tests.cli_helpers import HELPDESK
from tests.support.ports import free_port, port_is_open, wait_until
from tests.support.twilio_server import TwilioServer, signed_webhook_post
from tests.web_helpers import OUR_NUMBER, WA_FROM, WebApp, inbound
from worker.cli_web import PUMP_NICE
from worker.inbound_pump import run_child
from worker.runtime import Runtime
from worker.web import EMPTY_TWIML

pytest_plugins = ["tests.web_fixtures"]

PATH = "/webhooks/twilio/whatsapp"


def count(rt: Runtime, model: type) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def threaded(rt: Runtime) -> bool:
    with rt.sessions() as s:
        return not s.scalar(select(func.count(RawMessage.id)).where(RawMessage.status.in_(("pending", "processing"))))


def test_posts_arriving_together_are_each_kept_once_and_each_answered(web: WebApp) -> None:
    senders = [f"whatsapp:+5215500000{i:03d}" for i in range(24)]
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(senders))

    def post(sender: str) -> None:
        headers, body = signed_webhook_post(web.url + PATH, inbound(body=f"Hola desde {sender}", frm=sender),
                                            web.auth_token)
        with httpx.Client(base_url=web.url, timeout=20, trust_env=False) as http:
            start.wait()
            response = http.post(PATH, content=body, headers=headers)
        with lock:
            answers.append((response.status_code, response.text))

    threads = [threading.Thread(target=post, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == [(200, EMPTY_TWIML)] * len(senders)
    with web.rt.sessions() as s:
        kept = list(s.scalars(select(RawMessage.envelope_from)))
    assert sorted(kept) == sorted(senders)  # every answer stands for a committed row, once
    web.processed()
    assert (count(web.rt, Message), count(web.rt, Ticket)) == (len(senders), len(senders))


def keep_whatsapp(rt: Runtime, body: str, **extra: str) -> int:
    return keep_raw(rt.sessions, source="whatsapp", data=urlencode(inbound(body=body, **extra)).encode(),
                    envelope_from=WA_FROM)


def test_the_child_loop_threads_what_was_kept_then_stops_when_asked(rt: Runtime) -> None:
    for text in ("Mi camioneta no enciende", "Está en el estacionamiento del edificio"):
        keep_whatsapp(rt, text)
    stop = threading.Event()
    loop = threading.Thread(target=run_child, args=(rt, stop), kwargs={"parent_pid": os.getppid()})
    loop.start()
    try:
        wait_until(lambda: threaded(rt), timeout=30, message="kept messages not threaded")
        keep_whatsapp(rt, "¿Me confirman la cita?")  # kept while it idles: found by its next look
        wait_until(lambda: threaded(rt), timeout=30, message="message kept later not threaded")
    finally:
        stop.set()
        loop.join(30)
    assert not loop.is_alive()
    with rt.sessions() as s:
        threaded_by = list(s.scalars(select(Message.threaded_by).order_by(Message.id)))
    assert threaded_by == ["new", "single_open", "single_open"]  # in arrival order, one ticket
    assert count(rt, Ticket) == 1


def test_the_child_loop_does_nothing_once_its_parent_is_gone(rt: Runtime) -> None:
    keep_whatsapp(rt, "Hola")
    run_child(rt, threading.Event(), parent_pid=-1)  # returns at once: not our parent
    assert not threaded(rt)


def test_the_child_loop_fetches_media_with_the_account_credentials(
    make_settings: Callable[..., Settings], twilio: TwilioServer
) -> None:
    rt = Runtime.build(make_settings(twilio_account_sid=twilio.account_sid, twilio_auth_token=twilio.auth_token,
                                     twilio_api_base=twilio.base_url,
                                     twilio_whatsapp_from=OUR_NUMBER.split(":", 1)[1]))
    photo = b"\xff\xd8\xff\xe0" + b"JPEG llanta ponchada" * 50
    url = twilio.add_media("Accounts/AC1/Messages/MM9/Media/ME9", photo, "image/jpeg")
    keep_whatsapp(rt, "La llanta", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
    stop = threading.Event()
    loop = threading.Thread(target=run_child, args=(rt, stop), kwargs={"parent_pid": os.getppid()})
    loop.start()
    try:
        def stored() -> bool:
            with rt.sessions() as s:
                return [a.size for a in s.scalars(select(Attachment))] == [len(photo)]

        wait_until(stored, timeout=30, message="media not fetched by the child loop")
    finally:
        stop.set()
        loop.join(30)
        rt.close()
    assert all(r.auth == (twilio.account_sid, twilio.auth_token)
               for r in twilio.requests if r.path.startswith("/media/"))


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_helpdesk_web_threads_in_a_niced_child_that_stops_with_it(cli_env: dict[str, str], rt: Runtime) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = "1" * 32
    env = dict(cli_env, HELPDESK_TWILIO_AUTH_TOKEN=token, HELPDESK_PUBLIC_URL=url,
               HELPDESK_TWILIO_WHATSAPP_FROM=OUR_NUMBER.split(":", 1)[1])
    web = subprocess.Popen([HELPDESK, "web", "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kids: list[int] = []
    try:
        wait_until(lambda: port_is_open("127.0.0.1", port) or web.poll() is not None, timeout=30,
                   message="helpdesk web did not listen")
        assert web.poll() is None, web.stderr.read().decode() if web.stderr else ""
        kids = wait_until(lambda: _children_of(web.pid), timeout=30, message="no threading child")
        wait_until(lambda: [os.getpriority(os.PRIO_PROCESS, k) for k in kids] == [PUMP_NICE], timeout=30,
                   message="the threading child did not lower its priority")
        headers, body = signed_webhook_post(url + PATH, inbound(body="Necesito cambio de aceite"), token)
        response = httpx.post(url + PATH, content=body, headers=headers, trust_env=False, timeout=20)
        assert (response.status_code, response.text) == (200, EMPTY_TWIML)
        wait_until(lambda: count(rt, Ticket) == 1 and threaded(rt), timeout=30,
                   message="the child did not thread the kept message")
    finally:
        web.send_signal(signal.SIGTERM)
        _, stderr = web.communicate(timeout=60)
        left = [k for k in kids if _alive(k)]
        for kid in left:
            os.kill(kid, signal.SIGKILL)
    assert web.returncode in (0, -signal.SIGTERM), stderr.decode()
    assert left == []  # the web process stopped its child before exiting


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def test_the_keeper_gives_each_post_the_id_of_its_own_row(rt: Runtime) -> None:
    from inbound.keep import GroupKeeper

    keeper = GroupKeeper(rt.sessions, max_group=8).start()
    try:
        futures = [keeper.keep(source="whatsapp", data=f"Body=mensaje+{i}".encode(),
                               envelope_from=f"whatsapp:+52155000{i:05d}")
                   for i in range(60)]
        ids = [f.result(timeout=30) for f in futures]
    finally:
        keeper.stop()
    assert len(set(ids)) == 60
    with rt.sessions() as s:
        kept = {r.id: (r.data, r.envelope_from, r.status, r.source) for r in s.scalars(select(RawMessage))}
    assert {raw_id: kept[raw_id] for raw_id in ids} == {
        raw_id: (f"Body=mensaje+{i}".encode(), f"whatsapp:+52155000{i:05d}", "pending", "whatsapp")
        for i, raw_id in enumerate(ids)
    }


# PostgreSQL only: it kills the server connection the keeper holds (SQLite has none).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_killed_keeper_connection_costs_at_most_one_503_and_acknowledges_only_what_it_kept(rt: Runtime) -> None:
    from sqlalchemy import text

    from inbound.keep import GroupKeeper, TemporaryFailure

    keeper = GroupKeeper(rt.sessions).start()
    try:
        first = keeper.keep(source="whatsapp", data=b"Body=antes").result(timeout=30)
        with rt.engine.connect() as conn:  # what a database restart does to a held connection
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        outcomes = []
        for body in (b"Body=durante", b"Body=despues"):
            try:
                outcomes.append(keeper.keep(source="whatsapp", data=body).result(timeout=30))
            except TemporaryFailure:
                outcomes.append("503")
    finally:
        keeper.stop()
    # The held connection fails the next group (503, Twilio retries) unless it had already
    # gone back to the pool, whose checkout pings first; either way the keeper recovers.
    assert isinstance(outcomes[1], int) and outcomes[1] > first
    acknowledged = [b"Body=antes"] + [b for b, o in zip((b"Body=durante", b"Body=despues"), outcomes, strict=True)
                                      if o != "503"]
    with rt.sessions() as s:
        assert list(s.scalars(select(RawMessage.data).order_by(RawMessage.id))) == acknowledged
