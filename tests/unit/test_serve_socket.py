"""The server's listening socket: connections must not wait on Nagle's algorithm."""

from __future__ import annotations

import socket

from largeforge.entrypoints.http.listen import listen


def test_accepted_connections_have_nodelay() -> None:
    server = listen("127.0.0.1", 0)
    try:
        # asyncio turns TCP_NODELAY on only for sockets whose proto is IPPROTO_TCP.
        assert server.proto == socket.IPPROTO_TCP
        client = socket.create_connection(server.getsockname()[:2])
        accepted, _ = server.accept()
        try:
            assert accepted.proto == socket.IPPROTO_TCP
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            accepted.close()
            client.close()
    finally:
        server.close()
