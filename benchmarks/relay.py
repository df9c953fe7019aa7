"""Baseline: the least a process can do to relay calls between a caller and a worker.

Same event loop (uvloop) and JSON library (msgspec) as the daemon; no registry beyond
"who serves this id", no validation, no events, no id rewriting. targets.md measures the
daemon as a fraction of this.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec
import uvloop


class Head(msgspec.Struct):
    type: str
    id: str | None = None
    invocation_id: str | None = None
    function_id: str | None = None


decode = msgspec.json.Decoder(Head).decode
served: dict[str, asyncio.Transport] = {}
waiting: dict[str, asyncio.Transport] = {}


class Relay(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.t.write(b'{"type":"workerregistered","worker_id":"w","reattach_token":"t"}\n')

    def data_received(self, data: bytes) -> None:
        *lines, self.buf = (self.buf + data).split(b"\n")
        for line in lines:
            head = decode(line)
            if head.type == "invokefunction":
                if head.invocation_id is not None:
                    waiting[head.invocation_id] = self.t
                target = served.get(head.function_id or "")
                if target is not None:
                    target.write(line + b"\n")
            elif head.type == "invocationresult":
                caller = waiting.pop(head.invocation_id or "", None)
                if caller is not None:
                    caller.write(line + b"\n")
            elif head.type == "registerfunction":
                served[head.id or ""] = self.t
            elif head.type == "ping":
                self.t.write(b'{"type":"pong"}\n')


async def main(path: str) -> None:
    server = await asyncio.get_running_loop().create_unix_server(Relay, path)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
