"""The echo baseline's server: the host's framing, one trio task per connection, every frame
sent back unchanged (``python -m bench.echo --port 0``).

It reads with the host's own ``FrameReader`` and writes with ``encode_frame``, so that the
ratio of authorizations to echo round trips measures what the host does beyond TCP, trio and
framing. It prints one JSON line ``{"event": "listening", "port": N}`` on stdout when ready
and stops on SIGTERM or SIGINT.

Resource handling: each connection's buffer is bounded by the frame size limit.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import trio

from protocol.framing import FrameError, FrameReader, Framing, encode_frame

__all__ = ["main", "serve"]

RECEIVE_BYTES_MAX = 65_536  # as the host's server reads
FRAME_SIZE_MAX_BYTES = 4096  # the host's default server.frame_size_max_bytes


async def _echo(stream: trio.SocketStream) -> None:
    reader = FrameReader(Framing.BINARY2, FRAME_SIZE_MAX_BYTES)
    try:
        while True:
            data = await stream.receive_some(RECEIVE_BYTES_MAX)
            if not data:
                return
            for frame in reader.feed(data):
                await stream.send_all(encode_frame(frame))
    except (FrameError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await stream.aclose()


async def serve(host: str, port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    print(json.dumps({"event": "listening", "host": host, "port": bound}), flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _echo, listeners)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _signum in signals:
                break
        nursery.cancel_scope.cancel()
    print(json.dumps({"event": "stopped"}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    args = parser.parse_args(argv)
    trio.run(serve, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
