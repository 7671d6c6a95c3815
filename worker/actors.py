"""The actors: thin functions that take outbox ids and call ``outbound.deliver``.

Dramatiq's usual shape declares actors at import time on the global broker ("set the
broker before importing actors"). Here ``declare`` binds the actor to a broker and a
``Deliverer`` given explicitly, because one process may hold several (each test its own
Redis namespace; ``helpdesk run`` an in-process broker beside nothing else), and a
module-level actor would stick to whichever broker was global at import.

A job carries a list of outbox ids: the relay puts the ids committed close together in
one job (``worker.relay``), so the broker's work and the claim statement are paid once
for several notifications. A job of one bare id, the shape before that, is still
accepted (jobs already on the queue when the worker is upgraded).

The actor is safe to run twice: ``Deliverer`` claims the rows in the database, and a
second run finds them claimed or sent and does nothing.
"""

from __future__ import annotations

import dramatiq
from dramatiq import Broker

from outbound.deliver import Deliverer

ACTOR_NAME = "send_notification"
QUEUE_NAME = "outbox"


def declare(broker: Broker, deliverer: Deliverer) -> dramatiq.Actor:
    """Declare ``send_notification(outbox_ids)`` on ``broker``, sending with ``deliverer``.

    Raises:
        ValueError: the broker already has a ``send_notification`` actor.
    """

    def send_notification(outbox_ids: list[int] | int) -> None:
        """Send the notifications of one job; loads nothing itself (``Deliverer`` does)."""
        if isinstance(outbox_ids, list):
            deliverer.deliver_many(outbox_ids)
        else:
            deliverer.deliver(int(outbox_ids))

    return dramatiq.Actor(
        send_notification,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        priority=0,
        options={"max_retries": 0},
    )
