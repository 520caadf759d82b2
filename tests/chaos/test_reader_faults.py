"""Reader faults against the real daemon: garbage on the wire, a pulled serial cable, a decoder that skips
numbers, re-sends and reboots. The daemon stays up, keeps every rejected line, reconnects, and journals
nothing twice; what it journaled reaches the cloud once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.model import Read
from tests.chaos.harness import cloud, daemon, free_port, settled, until, verdict
from tests.fixtures.links import cable_command

pytestmark = pytest.mark.chaos

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def good(i: int) -> bytes:
    return f"{i},CHIP{i:04d},{(T0 + timedelta(seconds=10 * i)).strftime('%Y-%m-%dT%H:%M:%S')}.000Z\n".encode()


# Each of these is exactly one rejected record, with a marker to find its raw text in rejected_lines.
BAD: list[tuple[str, bytes]] = [
    ("CHIPUTF", b"\xff\xfe\xfd,CHIPUTF,2026-11-22T10:00:00.000Z\n"),  # invalid UTF-8
    ("AAAAAAAA", b"A" * 1_000_000 + b"\n"),  # a 1 MB line
    ("CHIPMONTH", b"9,CHIPMONTH,2026-13-01T00:00:00Z\n"),  # out-of-range timestamps
    ("CHIPHOUR", b"9,CHIPHOUR,2026-11-22T25:00:00Z\n"),
    ("CHIPYEAR", b"9,CHIPYEAR,99999-11-22T10:00:00Z\n"),
    ("CHIPOFFSET", b"9,CHIPOFFSET,2026-11-22T10:00:00+25:00\n"),
]
TAIL = b"99,CHIPTAIL,2026-11-"  # the cable is pulled mid-line


def expected_rejections(flood: bytes) -> int:
    """What the csv framer and parser must make of random bytes, worked out from the bytes alone: records end
    at CR or LF, empty ones vanish, a blank or `#` line (valid UTF-8) is skipped, anything else is rejected
    (over 4 KiB too, once). Random bytes never make a `bib,chip,timestamp` read."""
    count = 0
    for segment in re.split(rb"[\r\n]", flood):
        if not segment:
            continue
        try:
            text = segment.decode("utf-8").lstrip("\ufeff").strip()
        except UnicodeDecodeError:
            count += 1
            continue
        if text and not text.startswith("#"):
            count += 1
    return count


async def metrics_rejected(status_url: str) -> tuple[float, int]:
    """The reader's rejected-lines counter as /metrics and /status.json show it."""
    async with aiohttp.ClientSession() as http:
        async with http.get(status_url + "/metrics") as resp:
            text = await resp.text()
        async with http.get(status_url + "/status.json") as resp:
            status = await resp.json()
    m = re.search(r'^rufus_gateway_reader_rejected_lines(?:_total)?\{reader="finish"\} (\S+)$', text, re.M)
    assert m, text[-2000:]
    reader = next(r for r in status["readers"] if r["name"] == "finish")
    return float(m.group(1)), int(reader["rejected"])


async def test_garbage_flood_and_bad_lines_are_kept_and_the_rest_flows(tmp_path: Path) -> None:
    port, status_port = free_port(), free_port()
    async with cloud(tmp_path) as emu, daemon(
        tmp_path, emu, [{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}],
        status={"listen": f"127.0.0.1:{status_port}"},
    ) as gw:  # fmt: skip
        await gw.start()
        await gw.wait_ready()
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"".join(good(i) for i in range(1, 6)))
        for _, line in BAD:
            w.write(line)
        flood = random.Random(7).randbytes(256 * 1024)  # a reader babbling at the wrong baud rate
        w.write(flood + b"\n")
        w.write(b"".join(good(i) for i in range(6, 11)) + TAIL)
        await w.drain()
        w.close()
        await w.wait_closed()
        _r2, w2 = await asyncio.open_connection("127.0.0.1", port)  # the reader comes back
        w2.write(b"".join(good(i) for i in range(11, 16)))
        await w2.drain()
        await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] >= 15, 20, "15 good reads", gw.tail)
        await until(lambda: settled(gw), 20, "passings sent", gw.tail)
        assert gw.running and await gw.ready(), gw.tail()
        w2.close()
        await w2.wait_closed()

        rows = gw.query("SELECT reason, raw, offset FROM rejected_lines ORDER BY id")
        raws = [raw for _, raw, _ in rows]
        for marker, _ in BAD:
            assert sum(marker in raw for raw in raws) == 1, (marker, rows[:10])
        assert sum(raw.startswith("99,CHIPTAIL") for raw in raws) == 1, "a cut-off line is kept, not dropped"
        flood_rejects = expected_rejections(flood)
        assert flood_rejects > 500  # 256 KiB of random bytes: about one line per 128 bytes
        assert len(rows) == len(BAD) + 1 + flood_rejects, "one kept row per rejected record, no more, no less"
        # the counter the crew sees says the same as the table
        assert await metrics_rejected(f"http://127.0.0.1:{status_port}") == (len(rows), len(rows))
        assert all(reason and "\n" not in reason for reason, _, _ in rows)
        assert max(len(raw) for raw in raws) <= 4096, "a 1 MB line is not stored whole"
        chips = sorted(c for (c,) in gw.query("SELECT chip FROM reads"))  # two connections: any interleaving
        assert chips == [f"CHIP{i:04d}" for i in range(1, 16)], "exactly the good reads, once each"

        assert await gw.terminate() == 0, gw.tail()
        report = verdict(gw, emu, claim="journaled")
        assert report.ok, report.problems()
        assert report.figures["passings_cloud"] == 15 and report.figures["rejected_lines"] == len(rows)


# Timestamps that parse but no race has: the csv format keeps whatever names a real instant (1970, 2099, even
# year 1: the reader's clock is its own business, the crew sees the passing) and rejects what does not fit
# datetime once in UTC. Either way each line ends up exactly once: a read, a passing, a cloud row; or a
# rejected_lines row. Before f7bd031 a year-1 read was stored as "1-01-01..." and the pipeline crashed on it
# at every start (exit 70, a crash loop).
ABSURD_KEPT = [
    b"1,CHIP1970,1970-01-01T00:00:00.000Z\n",
    b"2,CHIP2099,2099-12-31T23:59:59.000Z\n",
    b"3,CHIPYEAR1,0001-01-01T00:00:00.000Z\n",
    b"4,CHIPNOW,2026-11-22T10:00:00.000Z\n",
]
ABSURD_REJECTED = [b"5,CHIPOVER,9999-12-31T23:59:59-05:00\n", b"6,CHIPUNDER,0001-01-01T00:00:00+05:00\n"]


async def test_absurd_but_valid_timestamps_are_kept_end_to_end_and_impossible_ones_rejected(tmp_path: Path) -> None:
    port = free_port()
    async with (
        cloud(tmp_path) as emu,
        daemon(tmp_path, emu, [{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]) as gw,
    ):
        await gw.start()
        await gw.wait_ready()
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"".join(ABSURD_KEPT + ABSURD_REJECTED))
        await w.drain()
        await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] == 4 and settled(gw), 20, "4 passings",
                    gw.tail)  # fmt: skip
        w.close()
        assert await gw.terminate() == 0, gw.tail()
        await gw.start()  # a restart reads every one of them back
        await gw.wait_ready()
        assert gw.running and await gw.ready(), gw.tail()
        assert await gw.terminate() == 0, gw.tail()
        assert "Traceback" not in gw.tail(100_000)
        stamps = sorted(ts for (ts,) in gw.query("SELECT timestamp FROM passings WHERE state = 'Sent'"))
        assert stamps == ["0001-01-01T00:00:00.000Z", "1970-01-01T00:00:00.000Z", "2026-11-22T10:00:00.000Z",
                          "2099-12-31T23:59:59.000Z"]  # fmt: skip
        rejected = gw.query("SELECT reason, raw FROM rejected_lines ORDER BY id")
        assert [raw for _, raw in rejected] == [line.decode().strip() for line in ABSURD_REJECTED]
        assert all("out of range" in reason for reason, _ in rejected), rejected
        report = verdict(gw, emu, claim="journaled")
        assert report.ok, report.problems()
        assert report.figures["passings_cloud"] == 4 and report.figures["rejected_lines"] == 2


async def test_decoder_gap_resend_and_reboot_journal_each_read_once(tmp_path: Path) -> None:
    """A RACE RESULT decoder (played here byte for byte) skips passing numbers 4-5 (the gateway asks for
    them again), then reboots and pushes everything from 1 again plus three new ones."""
    fmt = formats.get("raceresult")
    ctx = ParseContext(reader="box1")
    reads = [
        Read(chip=f"{1000 + i}", bib=None, timestamp=T0 + timedelta(seconds=5 * i), rssi=60.0, reader="box1")
        for i in range(1, 11)
    ]
    sessions: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await sessions.put((r, w))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter, conv: object) -> None:
        # the decoder's side of the conversation: setup commands, status polls, refetch requests
        while data := await r.read(4096):
            _acked, reply = conv.on_bytes(data)  # type: ignore[attr-defined]
            if reply:
                w.write(reply)

    try:
        async with (
            cloud(tmp_path) as emu,
            daemon(tmp_path, emu, [{"name": "box", "url": f"tcp://127.0.0.1:{port}", "format": "raceresult"}]) as gw,
        ):
            await gw.start()
            r, w = await asyncio.wait_for(sessions.get(), 20)
            conv = fmt.reader_conversation(ctx)
            lines = [conv.encode(read) for read in reads[:7]]  # numbered 1..7
            talker = asyncio.create_task(answer(r, w, conv))
            w.write(b"".join(lines[:3] + lines[5:7]))  # 4 and 5 lost on the wire
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] >= 7, 20, "the gap refetched", gw.tail)
            w.write(b"".join(lines[:2]))  # a re-send of what was already taken
            await asyncio.sleep(0.5)
            w.close()  # reboot: the connection drops, the decoder forgets its session
            talker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talker
            r, w = await asyncio.wait_for(sessions.get(), 20)
            conv = fmt.reader_conversation(ctx)
            talker = asyncio.create_task(answer(r, w, conv))
            w.write(b"".join(conv.encode(read) for read in reads))  # 1..10 again: 8..10 are new
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] >= 10, 20, "the new reads", gw.tail)
            await until(lambda: settled(gw), 20, "passings sent", gw.tail)
            await asyncio.sleep(0.5)  # a late duplicate would be journaled by now
            seqs = [s for (s,) in gw.query("SELECT seq FROM reads ORDER BY seq")]
            assert seqs == list(range(1, 11)), seqs
            assert "reads missing from the reader" in gw.tail(20000)
            assert await gw.terminate() == 0, gw.tail()
            w.close()
            talker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talker
            report = verdict(gw, emu, claim="journaled")
            assert report.ok, report.problems()
            assert report.figures["passings_cloud"] == 10
    finally:
        server.close()
        await server.wait_closed()


async def test_serial_cable_pulled_and_replugged(tmp_path: Path) -> None:
    """A csv reader on a serial line (a pty pair with stable names, as udev gives /dev/serial/by-id):
    killing the cable's relay is the USB adapter pulled out; a new one is it plugged back in."""
    dev, peer = tmp_path / "ttyGW", tmp_path / "ttyREADER"

    async def plug() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *cable_command(dev, peer), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await until(lambda: dev.exists() and peer.exists(), 10, "the cable's pty links")
        return proc

    def send(data: bytes) -> None:
        fd = os.open(peer, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    cable = await plug()
    try:
        async with (
            cloud(tmp_path) as emu,
            daemon(tmp_path, emu, [{"name": "mat", "url": f"serial://{dev}?baudrate=115200", "format": "csv"}]) as gw,
        ):
            await gw.start()
            await gw.wait_ready()
            await until(lambda: "link connected" in gw.tail(100000), 10, "the serial link open", gw.tail)
            send(b"".join(good(i) for i in range(1, 4)))
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] == 3, 15, "3 reads", gw.tail)
            cable.send_signal(signal.SIGKILL)  # pulled
            await cable.wait()
            await asyncio.sleep(1.0)
            assert gw.running and await gw.ready(), "the daemon must survive a vanished serial device"
            opened = gw.tail(100000).count("link connected")
            cable = await plug()  # plugged back in
            await until(lambda: gw.tail(100000).count("link connected") > opened, 30, "the link reopened", gw.tail)
            send(b"".join(good(i) for i in range(4, 7)))
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] >= 6, 15, "reads after replug", gw.tail)
            await until(lambda: settled(gw), 20, "passings sent", gw.tail)
            await asyncio.sleep(0.3)
            assert [c for (c,) in gw.query("SELECT chip FROM reads ORDER BY id")] == [
                f"CHIP{i:04d}" for i in range(1, 7)
            ]
            assert await gw.terminate() == 0, gw.tail()
            report = verdict(gw, emu, claim="journaled")
            assert report.ok, report.problems()
            assert report.figures["passings_cloud"] == 6
    finally:
        if cable.returncode is None:
            cable.send_signal(signal.SIGKILL)
            await cable.wait()


async def test_listen_port_taken_at_start_is_retried_not_fatal(tmp_path: Path) -> None:
    """Another program holds the reader port when the daemon starts (seen in the crash loop: an ephemeral
    port reused by an outgoing connection). The daemon stays up and listens once the port is free."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        async with (
            cloud(tmp_path) as emu,
            daemon(tmp_path, emu, [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]) as gw,
        ):
            await gw.start()
            # the log, not the control socket: a ping in flight while it crashes holds its exit for 60 s
            await until(lambda: "gateway running" in gw.tail(100_000) or not gw.running, 20, "the start", gw.tail)
            await asyncio.sleep(1.5)  # several bind attempts
            assert gw.running, gw.tail()
            squatter.close()
            await until(lambda: "link listening" in gw.tail(100_000), 30, "the port bound once free", gw.tail)
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(good(1))
            await w.drain()
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] == 1, 15, "the read", gw.tail)
            w.close()
            assert await gw.terminate() == 0, gw.tail()
    finally:
        squatter.close()


async def test_decoder_numbering_restarted_with_new_reads_is_not_dropped(tmp_path: Path) -> None:
    fmt = formats.get("raceresult")
    ctx = ParseContext(reader="box1")
    first = [
        Read(chip=f"{2000 + i}", bib=None, timestamp=T0 + timedelta(seconds=5 * i), rssi=60.0, reader="box1")
        for i in range(1, 4)
    ]
    later = [
        Read(
            chip=f"{3000 + i}", bib=None, timestamp=T0 + timedelta(minutes=30, seconds=5 * i), rssi=60.0, reader="box1"
        )
        for i in range(1, 4)
    ]
    sessions: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await sessions.put(w)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            cloud(tmp_path) as emu,
            daemon(tmp_path, emu, [{"name": "box", "url": f"tcp://127.0.0.1:{port}", "format": "raceresult"}]) as gw,
        ):
            await gw.start()
            w = await asyncio.wait_for(sessions.get(), 20)
            conv = fmt.reader_conversation(ctx)
            w.write(b"".join(conv.encode(r) for r in first))  # numbered 1..3
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] == 3, 20, "the first reads", gw.tail)
            w.close()
            w = await asyncio.wait_for(sessions.get(), 20)
            conv = fmt.reader_conversation(ctx)  # wiped: numbers from 1 again, for different passings
            w.write(b"".join(conv.encode(r) for r in later))
            want = len(first) + len(later)  # reused numbers, other passings: new reads, none dropped as re-sends
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] >= want, 20, "the later reads", gw.tail)
            chips = sorted(c for (c,) in gw.query("SELECT chip FROM reads"))
            w.close()
            assert chips == sorted(r.chip or "" for r in first + later), chips
    finally:
        server.close()
        await server.wait_closed()
