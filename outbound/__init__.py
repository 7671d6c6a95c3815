"""Outbound: render notifications from templates/ and send them by email or WhatsApp."""
