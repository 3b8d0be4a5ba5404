"""Listening sockets for the HTTP servers (`serve`, `route serve` and `local:` replicas)."""

from __future__ import annotations

import socket

from largeforge.domain.errors import ConfigError


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose connections have Nagle's algorithm off.

    asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP, which
    `socket.create_server` does not do; without it every response written in two parts (headers,
    body) waits for the client's delayed ACK: 40 ms per request.
    """
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def bind(host: str, port: int) -> socket.socket:
    """`listen`, with a failure (port taken, unknown host) as a `ConfigError` naming the address."""
    try:
        return listen(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
