"""A loopback TCP proxy in front of a redis-server that can lose a reply on purpose.

``lose_next_reply()`` arms it: the next bytes coming back from the server are dropped and the client's
connection is closed — the command ran, the client never learns it did (a reply lost in the network).
"""

from __future__ import annotations

import asyncio
import contextlib


class ReplyLosingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.lost = 0
        self._armed = False
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_next_reply(self) -> None:
        self._armed = True

    async def __aenter__(self) -> ReplyLosingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if self._armed:
                    self._armed = False
                    self.lost += 1
                    client_w.close()  # the reply never reaches the client
                    return
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_w, server_w):
                with contextlib.suppress(Exception):
                    writer.close()
