"""The actors: thin functions that take an outbox id and call ``outbound.deliver``.

Dramatiq's usual shape declares actors at import time on the global broker ("set the
broker before importing actors"). Here ``declare`` binds the actor to a broker and a
``Deliverer`` given explicitly, because one process may hold several (each test its own
Redis namespace; ``helpdesk run`` an in-process broker beside nothing else), and a
module-level actor would stick to whichever broker was global at import.

The actor is safe to run twice: ``Deliverer.deliver`` claims the row in the database,
and a second run finds it claimed or sent and does nothing.
"""

from __future__ import annotations

import dramatiq
from dramatiq import Broker

from outbound.deliver import Deliverer, deliver

ACTOR_NAME = "send_notification"
QUEUE_NAME = "outbox"


def declare(broker: Broker, deliverer: Deliverer) -> dramatiq.Actor:
    """Declare ``send_notification(outbox_id)`` on ``broker``, sending with ``deliverer``.

    Raises:
        ValueError: the broker already has a ``send_notification`` actor.
    """

    def send_notification(outbox_id: int) -> None:
        """Send one notification; loads nothing itself (``outbound.deliver`` does)."""
        deliver(deliverer, int(outbox_id))

    return dramatiq.Actor(
        send_notification,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        priority=0,
        options={"max_retries": 0},
    )
