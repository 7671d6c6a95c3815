"""The SMTP door reads MAIL FROM / RCPT TO paths as aiosmtpd does, plain ones without
the email package's header parser (``TolerantSMTP._getaddr``): a pure function, many cases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP

from inbound.smtp import _PLAIN_PATH, TolerantSMTP

PLAIN = [
    "<ana@cliente.mx>",
    "<ana.lopez@cliente.mx> SIZE=1200",
    "<ana.lopez@cliente.mx>  SIZE=1200 BODY=8BITMIME",
    "<a+tag@sub.dominio.com.mx>",
    "<o'brien@example.com>",
    "<x{y}|~^`@ex-ample.org>",
    "<soporte@jhleasing.mx> NOTIFY=NEVER",
    " <ana@cliente.mx>",
    "<ANA@CLIENTE.MX>",
    "<ana@localhost>",
    "<ana@cliente.mx>x",
    "<ana@cliente.mx>\tSIZE=1",
    "<ana@cliente.mx> \xa0SIZE=1",
    "<ana@cliente.mx>\xa0 SIZE=1",
    "<ana@cliente.mx>>",
    "<" + "a" * 64 + "@cliente.mx>",
    "<" + "a" * 65 + "@cliente.mx>",
]
OTHER = [
    "",
    "<>",
    "<> SIZE=10",
    "ana@cliente.mx",
    "ana@cliente.mx SIZE=10",
    '<"ana lopez"@cliente.mx>',
    "<ana@[192.0.2.1]>",
    "<@relay.mx:ana@cliente.mx>",
    "<ana..lopez@cliente.mx>",
    "<.ana@cliente.mx>",
    "<ana.@cliente.mx>",
    "<ana@cliente..mx>",
    "<ana@cliente.mx",
    "<ana (comment) @cliente.mx>",
    "<ana@cliente.mx> (comment)",
    "<josé@cliente.mx>",
    "<ana@bücher.de>",
    "<ana@>",
    "<@cliente.mx>",
    "<<ana@cliente.mx>>",
    "<ana@cliente.mx>(comment) SIZE=1",
    "<ana@cliente.mx> \t(comment) SIZE=1",
    "<ana@cli_ente.mx>",
]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SMTP, TolerantSMTP]]:
    loop = asyncio.new_event_loop()
    try:
        yield SMTP(object(), loop=loop), TolerantSMTP(object(), loop=loop)
    finally:
        loop.close()


@pytest.mark.parametrize("arg", PLAIN + OTHER)
@pytest.mark.parametrize("local_part_limit", [0, 64])
def test_a_path_reads_the_same_as_aiosmtpd_reads_it(servers: tuple[SMTP, TolerantSMTP], arg: str,
                                                    local_part_limit: int) -> None:
    stock, ours = servers
    stock.local_part_limit = ours.local_part_limit = local_part_limit
    assert ours._getaddr(arg) == stock._getaddr(arg)


@pytest.mark.parametrize("arg", PLAIN)
def test_plain_paths_take_the_quick_way(arg: str) -> None:
    assert _PLAIN_PATH.match(arg.lstrip())


@pytest.mark.parametrize("arg", [a for a in OTHER if ">(" not in a and "> " not in a])
def test_anything_else_goes_to_aiosmtpds_parser(arg: str) -> None:
    assert not _PLAIN_PATH.match(arg.lstrip())
