"""``helpdesk worker`` (sends notifications) and ``helpdesk surveys`` (how we did).

``helpdesk worker`` runs Dramatiq's ``Worker`` in this process on the Redis broker with
``--threads`` threads, plus the outbox sweeper. With ``--processes N`` (N > 1) it starts
N consumer processes (spawned, each with its own database pool, SMTP connections and
threads) and keeps the sweeper in the parent: one sweeper per deployment is enough. It
stops on SIGTERM or SIGINT after the sends in progress finish.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from typing import Any

import click
from sqlalchemy import and_, case, func, select
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import Session

from config.pipelines import Catalog
from models.survey import Survey
from worker.cli import cli, emit, runtime
from worker.relay import OutboundService
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (the main thread then shuts down in order)."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _consumer_process(threads: int) -> None:
    """Body of one ``--processes`` child: consume only (the parent sweeps)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    stop = _stop_on_signals()
    rt = Runtime.build()
    service = OutboundService.redis(rt, threads=threads, sweep=False, publish=False).start()
    try:
        stop.wait()
    finally:
        service.stop()
        rt.close()


@cli.command("worker")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Consumer processes.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Worker threads per process.")
@click.pass_context
def worker_cmd(ctx: click.Context, processes: int, threads: int) -> None:
    """Send notifications: Dramatiq on Redis, plus the sweeper that finds what was missed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    rt = runtime(ctx)
    stop = _stop_on_signals()
    settings = rt.settings
    where = make_url(settings.redis_url).render_as_string(hide_password=True)
    children: list[multiprocessing.process.BaseProcess] = []
    if processes == 1:
        service = OutboundService.redis(rt, threads=threads).start()
    else:
        service = OutboundService.redis(rt, consume=False).start()
        spawn = multiprocessing.get_context("spawn")
        for i in range(processes):
            child = spawn.Process(target=_consumer_process, args=(threads,), name=f"consumer-{i + 1}")
            child.start()
            children.append(child)
    click.echo(f"helpdesk worker: {processes} process(es) x {threads} thread(s), broker {where} "
               f"namespace {settings.redis_namespace!r}", err=True)
    try:
        while not stop.wait(1.0):
            for child in children:
                if not child.is_alive():
                    log.error("%s exited with %s; stopping", child.name, child.exitcode)
                    stop.set()
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: the child finishes its sends and exits
        for child in children:
            child.join(60)
        service.stop()
    click.echo("helpdesk worker: stopped", err=True)


def survey_stats(session: Session, catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Per pipeline: surveys sent, answered, average score and CSAT (share of 4 and 5
    among the answered ones); every pipeline of the catalog appears, in its order."""
    answered = Survey.answered_at.is_not(None) & Survey.score.is_not(None)
    query = select(
        Survey.pipeline,
        func.count(Survey.sent_at),
        func.count(case((answered, 1))),
        func.avg(case((answered, Survey.score))),
        func.count(case((and_(answered, Survey.score >= 4), 1))),
    ).group_by(Survey.pipeline)
    found = {row[0]: row[1:] for row in session.execute(query)}
    result: dict[str, dict[str, Any]] = {}
    for pipeline in [*catalog, *sorted(set(found) - set(catalog))]:
        sent, answers, average, satisfied = found.get(pipeline, (0, 0, None, 0))
        result[pipeline] = {
            "sent": int(sent),
            "answered": int(answers),
            "average": round(float(average), 2) if answers else None,
            "csat": round(int(satisfied) / int(answers), 4) if answers else None,
        }
    return result


@cli.command("surveys")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def surveys_cmd(ctx: click.Context, as_json: bool) -> None:
    """Satisfaction surveys per pipeline: sent, answered, average score, CSAT."""
    rt = runtime(ctx)
    with rt.transaction() as session:
        stats = survey_stats(session, rt.catalog)
    if as_json:
        emit(stats)
        return
    click.echo(f"{'pipeline':14} {'sent':>6} {'answered':>9} {'average':>8} {'CSAT':>7}")
    for pipeline, s in stats.items():
        average = f"{s['average']:.2f}" if s["average"] is not None else "-"
        csat = f"{s['csat'] * 100:.1f}%" if s["csat"] is not None else "-"
        click.echo(f"{pipeline:14} {s['sent']:>6} {s['answered']:>9} {average:>8} {csat:>7}")
