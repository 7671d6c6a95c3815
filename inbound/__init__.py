"""Inbound: everything that turns a message arriving at our door into a decision.

Pure steps (no database): ``parse`` (raw bytes to ``ParsedMessage``), ``quotes`` (the new
text of a reply), ``html`` (display and text forms of HTML bodies), ``classify`` (auto-reply,
bounce, loop or message), ``bounce`` (delivery reports), ``forward`` (a staff forward's
original) and ``report`` (the ``helpdesk parse --json`` object).

Errors: ``parse.UnparseableMessage`` is the only exception the pure steps raise, and only
for input that is not a message at all; the caller keeps the raw bytes in quarantine.
"""
