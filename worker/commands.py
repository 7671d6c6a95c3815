"""Registers the commands that live beside their rooms (inbound, outbound, web, run).

Each import adds its commands to ``worker.cli.cli``; a room that is not built yet simply
has no module here.
"""
