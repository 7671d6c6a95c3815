"""The event-loop doors' keeper (``inbound.loop_keeper.door_keeper``): every message is committed
before its id is returned, each sender gets its own row's id, a sender that hung up before
its group was sent is not kept, and a lost connection costs at most one failure. On SQLite
and PostgreSQL (``LoopKeeper``, on the event loop itself, with psycopg's async driver)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from inbound.keep import TemporaryFailure
from inbound.loop_keeper import LoopKeeper, ThreadDoorKeeper, door_keeper
from models.message import RawMessage
from tests.mailbuilder import mail
from worker.runtime import Runtime


def kept(rt: Runtime) -> dict[int, tuple[bytes, str | None, str | None, str]]:
    with rt.sessions() as s:
        return {r.id: (r.data, r.envelope_from, r.envelope_to, r.status) for r in s.scalars(select(RawMessage))}


def test_on_postgresql_the_door_keeps_on_the_event_loop_and_on_sqlite_in_a_thread(rt: Runtime) -> None:
    keeper = door_keeper(rt.sessions)
    expected = LoopKeeper if rt.engine.dialect.name == "postgresql" else ThreadDoorKeeper
    assert isinstance(keeper, expected)


def test_messages_kept_together_are_each_committed_once_under_their_own_id(rt: Runtime) -> None:
    async def main() -> list[int]:
        keeper = door_keeper(rt.sessions)
        try:
            return list(await asyncio.gather(*[
                keeper.keep(source="smtp", data=mail(subject=f"Junto {i}"),
                            envelope_from=f"u{i}@cliente.mx" if i % 3 else None,
                            envelope_to="soporte@jhleasing.mx")
                for i in range(75)  # more than one group of 32
            ]))
        finally:
            await keeper.aclose()

    ids = asyncio.run(main())
    rows = kept(rt)
    assert sorted(ids) == sorted(rows) and len(set(ids)) == 75
    for i, raw_id in enumerate(ids):
        data, envelope_from, envelope_to, status = rows[raw_id]
        assert f"Junto {i}".encode() in data
        assert (envelope_from, envelope_to, status) == (f"u{i}@cliente.mx" if i % 3 else None,
                                                        "soporte@jhleasing.mx", "pending")


# PostgreSQL only: there the group is sent by a task of this loop, so the hang-ups below
# come before it for sure; SQLite's keeper thread may take them first (its own test,
# with the thread not started yet, is in test_smtp_door.py).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_sender_that_hangs_up_before_its_group_is_sent_is_not_kept_and_the_others_are(rt: Runtime) -> None:
    async def main() -> tuple[list[int], int]:
        keeper = door_keeper(rt.sessions)
        try:
            tasks = [asyncio.create_task(keeper.keep(source="smtp", data=mail(subject=f"Colgado {i}")))
                     for i in range(6)]
            await asyncio.sleep(0)  # each task has handed its message to the keeper
            tasks[1].cancel()  # as aiosmtpd does when a client hangs up
            tasks[4].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            later = await keeper.keep(source="smtp", data=mail(subject="Después"))
        finally:
            await keeper.aclose()
        assert isinstance(done[1], asyncio.CancelledError) and isinstance(done[4], asyncio.CancelledError)
        return [i for i in done if isinstance(i, int)], later

    ids, later = asyncio.run(main())
    rows = kept(rt)
    assert set(rows) == {*ids, later}
    assert not any(b"Colgado 1" in d or b"Colgado 4" in d for d, *_ in rows.values())


def test_after_close_the_keeper_refuses_with_a_temporary_failure(rt: Runtime) -> None:
    async def main() -> None:
        keeper = door_keeper(rt.sessions)
        first = asyncio.create_task(keeper.keep(source="smtp", data=mail(subject="Antes")))
        await asyncio.sleep(0)
        await keeper.aclose()  # the message under way is committed first
        assert first.done() and isinstance(first.result(), int)
        with pytest.raises(TemporaryFailure):
            await keeper.keep(source="smtp", data=mail(subject="Tarde"))

    asyncio.run(main())
    [(data, *_)] = kept(rt).values()
    assert b"Subject: Antes" in data


def _kill_other_backends(rt: Runtime) -> None:
    """What a database restart does to the connection the keeper holds."""
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()"))


# PostgreSQL only below: they kill the server connection the keeper holds (SQLite has none).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_killed_connection_fails_at_most_one_group_and_acknowledges_only_what_it_kept(rt: Runtime) -> None:
    async def main() -> list[int | str]:
        keeper = LoopKeeper.for_engine(rt.engine, connect_timeout=5)
        try:
            outcomes: list[int | str] = [await keeper.keep(source="smtp", data=b"antes")]
            _kill_other_backends(rt)
            for body in (b"durante", b"despues"):
                try:
                    outcomes.append(await keeper.keep(source="smtp", data=body))
                except TemporaryFailure:
                    outcomes.append("451")
            return outcomes
        finally:
            await keeper.aclose()

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[2], int) and outcomes[2] > outcomes[0]  # recovered
    acknowledged = [b for b, o in zip((b"antes", b"durante", b"despues"), outcomes, strict=True) if o != "451"]
    with rt.sessions() as s:
        assert list(s.scalars(select(RawMessage.data).order_by(RawMessage.id))) == acknowledged


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_killed_while_idle_is_replaced_before_use_and_costs_no_failure(rt: Runtime) -> None:
    async def main() -> list[int]:
        # Every pause counts as idle: the held connection is checked before each group.
        keeper = LoopKeeper.for_engine(rt.engine, connect_timeout=5, idle_check_seconds=-1.0)
        try:
            first = await keeper.keep(source="smtp", data=b"antes")
            _kill_other_backends(rt)
            return [first, await keeper.keep(source="smtp", data=b"despues")]
        finally:
            await keeper.aclose()

    ids = asyncio.run(main())
    with rt.sessions() as s:
        assert list(s.scalars(select(RawMessage.id).order_by(RawMessage.id))) == ids


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_unreachable_database_fails_each_sender_with_a_temporary_failure(rt: Runtime) -> None:
    from tests.support.ports import free_port

    async def main() -> list[BaseException | int]:
        keeper = LoopKeeper(f"postgresql://postgres@127.0.0.1:{free_port()}/nada", connect_timeout=1)
        try:
            return list(await asyncio.gather(*[keeper.keep(source="smtp", data=b"x") for _ in range(3)],
                                             return_exceptions=True))
        finally:
            await keeper.aclose()

    outcomes = asyncio.run(main())
    assert all(isinstance(o, TemporaryFailure) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3  # one exception each: each sender's task raises its own
