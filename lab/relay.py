"""WAN latency for the lab bench: a TCP relay per lab host on 127.0.0.1, in front of its sshd.

This machine's kernel has no `sch_netem`, so `tc … netem` cannot delay the lab's bridge.
Instead each lab host gets a relay that listens on 127.0.0.1, connects each client to the
host's sshd (10.77.0.x:22) and holds every chunk of data, in both directions, for half the
latency before passing it on; a request and its answer therefore cost the whole latency,
the way an operator's SSH session to a distant site does.

What is delayed: every byte of data, both directions, half the latency each way. Chunks are
scheduled for the time they arrived plus half the latency and sent in order, so a stream is
pipelined as on a real link, not slowed to one chunk per delay: the latency is added, the
throughput is not limited. An EOF (half-close) follows the data before it, delayed alike.

What is not delayed: the TCP handshake with the relay and the relay's own connect to sshd,
so setting up a connection costs no added latency (on a real link it costs one more round
trip), and nothing slows this machine's CPU.

`python -m lab.relay --delay 50ms tethys=10.77.0.11:22 styx=10.77.0.12:22` prints
`tethys 127.0.0.1:PORT` per relay once all listen, and runs until SIGTERM or SIGINT.
`running()` runs the same relays on a thread for the length of a `with` block.
`ssh_config()` and `known_hosts()` point the lab's SSH config at the relays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping

LISTEN_HOST = "127.0.0.1"
CHUNK = 64 * 1024
#: Chunks held per direction before the relay stops reading (64 MiB): bounds its memory when
#: a receiver is slow, yet lets a 100 ms relay carry 640 MiB/s, so it never sets the pace.
IN_FLIGHT = 1024

_DELAY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s)?")


def parse_delay(text: str) -> float:
    """Seconds from `50ms`, `0.1s` or a bare number of milliseconds (`100`, `0`)."""
    match = _DELAY.fullmatch(text.strip())
    if not match:
        raise ValueError(
            f"delay {text!r}: not a duration; give milliseconds or seconds, e.g. 50ms, 0.1s or 0"
        )
    number, unit = match.groups()
    return float(number) if unit == "s" else float(number) / 1000


def describe(delay: float) -> str:
    """One line for the bench's output: what the relays delay and what they do not."""
    return (
        f"latency {delay * 1000:g} ms per round trip, added by a TCP relay per host "
        f"({delay * 500:g} ms each way on every byte of SSH data); "
        "not delayed: the TCP handshake and the relay's connect to sshd"
    )


async def _forward(source: asyncio.StreamReader, sink: asyncio.StreamWriter, hold: float) -> None:
    """Copy `source` to `sink`, each chunk `hold` seconds after it arrived, then the EOF."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(IN_FLIGHT)

    async def receive() -> None:
        while True:
            data = await source.read(CHUNK)
            await queue.put((loop.time() + hold, data))
            if not data:
                return

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if sink.can_write_eof():
                    sink.write_eof()  # after what is buffered: the peer reads it all, then EOF
                return
            sink.write(data)
            await sink.drain()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(receive())
        tasks.create_task(send())


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Send small writes at once: Nagle's algorithm would add its own delays to ours."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Relays:
    """Named relays in one event loop: `start()` listens, `close()` ends them and every
    connection they carry."""

    def __init__(
        self,
        targets: Mapping[str, tuple[str, int]],
        delay: float,
        listen: Mapping[str, int] | None = None,
    ) -> None:
        self.targets = dict(targets)
        self.hold = delay / 2
        self.listen = dict(listen or {})
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> dict[str, int]:
        """Listen for every target; {name: port on 127.0.0.1}."""
        ports = {}
        for name, target in self.targets.items():
            port = self.listen.get(name, 0)
            try:
                server = await asyncio.start_server(
                    lambda r, w, target=target: self._accept(target, r, w), LISTEN_HOST, port
                )
            except OSError as err:
                raise OSError(
                    f"relay {name}: cannot listen on {LISTEN_HOST}:{port}: {err.strerror or err}"
                ) from None
            self._servers.append(server)
            ports[name] = server.sockets[0].getsockname()[1]
        return ports

    def _accept(
        self, target: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Registered here, synchronously, so that close() finds every connection, even one
        # whose task has not run yet.
        self._writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._connection(target, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(
        self,
        target: tuple[str, int],
        client_reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
    ) -> None:
        writers = [client]
        clean = False
        try:
            try:
                server_reader, server = await asyncio.open_connection(*target)
            except OSError as err:
                print(f"relay: cannot reach {target[0]}:{target[1]}: {err}", file=sys.stderr)
                return
            writers.append(server)
            self._writers.add(server)
            for writer in writers:
                _no_delay(writer)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(_forward(client_reader, server, self.hold))
                    tasks.create_task(_forward(server_reader, client, self.hold))
                clean = True
            except* OSError:
                pass  # a reset on one side: the finally resets the other too
        finally:
            for writer in writers:
                self._writers.discard(writer)
                if clean:
                    writer.close()
                else:
                    writer.transport.abort()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for server in self._servers:
            await server.wait_closed()


@contextlib.contextmanager
def running(
    targets: Mapping[str, tuple[str, int]], delay: float, listen: Mapping[str, int] | None = None
) -> Iterator[dict[str, int]]:
    """The relays, on an event loop in a thread of this process, for the `with` block:
    {name: port on 127.0.0.1}. They end with the block, and with the process if it is killed."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="relays", daemon=True)
    thread.start()
    relays = Relays(targets, delay, listen)
    try:
        yield asyncio.run_coroutine_threadsafe(relays.start(), loop).result()
    finally:
        asyncio.run_coroutine_threadsafe(relays.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


_KEYWORD = re.compile(r"\s*(\w+)\s*(?:=|\s|$)")
# The options the relay decides; any other one in a relayed Host block stays as it was.
_REPLACED = ("hostname", "port", "hostkeyalias", "userknownhostsfile")


def ssh_config(original: str, ports: Mapping[str, int], known_hosts_file: str) -> str:
    """`original` (an SSH config as in .lab/ssh/config) with each Host named in `ports` sent
    to its relay: HostName 127.0.0.1 and its Port. Its host key stays checked against the same
    key: OpenSSH looks it up under `HostKeyAlias <Host name>`; pyinfra's paramiko ignores
    HostKeyAlias and looks up `[127.0.0.1]:PORT`, which `known_hosts()` adds, so both read
    `known_hosts_file`. Every other option is kept."""
    out: list[str] = []
    relayed = False
    found = set()
    for line in original.splitlines():
        match = _KEYWORD.match(line)
        keyword = match.group(1).lower() if match and not line.lstrip().startswith("#") else ""
        if keyword in ("host", "match"):
            names = line.split(None, 1)[1].split() if keyword == "host" else []
            relayed = bool(set(names) & set(ports))
            if relayed and len(names) != 1:
                raise ValueError(f"ssh config: {line.strip()!r}: relay only a single-name Host")
            out.append(line)
            if relayed:
                name = names[0]
                found.add(name)
                out += [
                    f"    HostName {LISTEN_HOST}",
                    f"    Port {ports[name]}",
                    f"    HostKeyAlias {name}",
                    f"    UserKnownHostsFile {known_hosts_file}",
                ]
            continue
        if relayed and keyword in _REPLACED:
            continue
        out.append(line)
    if missing := sorted(set(ports) - found):
        raise ValueError(f"ssh config: no `Host` block for {', '.join(missing)}")
    return "\n".join(out) + "\n"


def known_hosts(original: str, ports: Mapping[str, int]) -> str:
    """`original` (a known_hosts file listing hosts by name, as .lab/ssh/known_hosts does:
    `tethys,10.77.0.11 ssh-ed25519 …`) with each relayed host's keys also listed under
    `[127.0.0.1]:PORT`, the name paramiko looks a host key up by on a port other than 22."""
    out = []
    found = set()
    for line in original.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith(("#", "@", "|")):
            names = fields[0].split(",")
            relayed = [name for name in names if name in ports]
            found.update(relayed)
            aliases = [f"[{LISTEN_HOST}]:{ports[name]}" for name in relayed]
            if aliases:
                line = " ".join([",".join(names + aliases), *fields[1:]])
        out.append(line)
    if missing := sorted(set(ports) - found):
        raise ValueError(
            f"known_hosts: no key listed under the name {', '.join(missing)} "
            "(hashed names cannot be matched)"
        )
    return "\n".join(out) + "\n"


def _target(text: str) -> tuple[str, tuple[str, int]]:
    """NAME=HOST:PORT."""
    match = re.fullmatch(r"([\w.-]+)=([^\s:]+):(\d+)", text)
    if not match or not 0 < int(match.group(3)) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=HOST:PORT, e.g. tethys=10.77.0.11:22"
        )
    return match.group(1), (match.group(2), int(match.group(3)))


def _delay(text: str) -> float:
    try:
        return parse_delay(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


async def _serve(targets: dict[str, tuple[str, int]], delay: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    relays = Relays(targets, delay)
    try:
        try:
            ports = await relays.start()
        except OSError as err:
            print(err, file=sys.stderr)
            return 1
        for name, port in ports.items():
            print(f"{name} {LISTEN_HOST}:{port}")
        sys.stdout.flush()
        await stop.wait()
        return 0
    finally:
        await relays.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.relay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--delay", type=_delay, required=True, help="added to each round trip: 50ms, 0.1s, 0"
    )
    parser.add_argument("target", type=_target, nargs="+", help="NAME=HOST:PORT, one per relay")
    args = parser.parse_args(argv)
    targets = dict(args.target)
    if len(targets) != len(args.target):
        parser.error("each relay NAME may be given once")
    return asyncio.run(_serve(targets, args.delay))


if __name__ == "__main__":
    raise SystemExit(main())
