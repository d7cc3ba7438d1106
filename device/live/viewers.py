"""Stand-in viewers for the benchmark: `python -m device.live.viewers WS_URL`, in a process of its own
(a phone or a kiosk does its decoding elsewhere, not on the device's cores).

Reads a number per line on stdin and holds that many WebSocket viewers, each reading and discarding
frames as fast as they come; answers `ok N` once each of them has had a frame (or, for 0, once all have
gone), so the benchmark knows when the device's side is in the state it asked for.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp


async def _view(session: aiohttp.ClientSession, url: str, first: asyncio.Event) -> None:
    async with session.ws_connect(url, max_msg_size=16 * 2**20) as ws:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                first.set()


async def _serve(url: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as session:
        while line := await reader.readline():
            wanted = int(line)
            while len(tasks) > wanted:
                task = tasks.pop()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            firsts = []
            while len(tasks) < wanted:
                first = asyncio.Event()
                firsts.append(first)
                tasks.append(asyncio.create_task(_view(session, url, first)))
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 30)
            sys.stdout.write(f"ok {len(tasks)}\n")
            sys.stdout.flush()


def main() -> None:
    asyncio.run(_serve(sys.argv[1]))


if __name__ == "__main__":
    main()
