"""The front door's wire format: front-end processes <-> the scheduler over one Unix stream
socket each (in a private 0700 directory), read and written by asyncio protocols.

Why not ZeroMQ (the first version): ZeroMQ passes every message through an I/O thread on
each side, so one message costs three thread wake-ups instead of one. Measured on this
project's 2-core machine, a 64-byte echo at 1,500 msg/s between two asyncio processes: the
echoing side spent 110-118 us of CPU per message over a ZeroMQ ROUTER, 23-32 us over a
Unix stream socket. Here each message is one ``transport.write`` and one ``data_received``.

No pickle, no schema library: fixed little-endian structs, packed back to back, and the
float32 input rows / logits as raw bytes. A message is ``MSG`` (payload bytes after it,
number of frames), then per frame its length (``FRAME``) and its bytes; the first frame is
one kind byte. A peer that sends a message over ``MAX_MESSAGE_BYTES``, with no frame or over
``MAX_FRAMES``, or frames that do not fill the message exactly, is disconnected.

front end -> scheduler

* ``H`` hello: ``HELLO`` (frontend index, generation, pid). The first message on a
  connection; the scheduler answers nothing before it. ``INJECTOR`` as the index: a load
  injector (benchmarks), not a supervised front end.
* ``R`` requests: frame 2 = N ``REQUEST`` records, frame 3 = their rows, back to back
  (record i's row is ``row_len`` bytes after the previous ones). At most ``MAX_RECORDS``
  records per message.
* ``C`` cancel: frame 2 = N uint64 request ids whose HTTP client went away.

scheduler -> front end

* ``A`` answers: frame 2 = N ``ANSWER`` records, frame 3 = the logits of the answered ones
  (outcome in time / late) back to back in record order, frame 4 = each record's text
  (``text_len`` bytes: the SubNet id of an answer, the reason of any other outcome).
* ``S`` status: ``STATUS`` (ready, live) then the model's live calibration parameters
  as a JSON object (the model metadata endpoint shows them).

A connection belongs to one front-end process: a restarted front end connects anew, so
answers meant for the one it replaced can never reach it.
"""
from __future__ import annotations

import asyncio
import struct
from typing import Callable, Sequence

from superserve.serving.logs import log

# request id (frontend-local, uint64), arrival (time.monotonic() at the front end: the clock
# is system-wide), slo_ms, min_accuracy, flags (bit 0: min_accuracy_strict), row_len
REQUEST = struct.Struct("<QdddII")
# request id, outcome (superserve.outcome.Outcome), accuracy floor met, worker, batch size,
# text_len, accuracy, queue_ms, compute_ms
ANSWER = struct.Struct("<QBBhHHfff2x")
HELLO = struct.Struct("<IIi")
STATUS = struct.Struct("<BB")
CANCEL = struct.Struct("<Q")
MSG = struct.Struct("<IB")  # payload bytes after this header, number of frames
FRAME = struct.Struct("<I")  # one frame's length

HELLO_KIND, REQUESTS, CANCELS, ANSWERS, STATUS_KIND = b"H", b"R", b"C", b"A", b"S"
STRICT = 1
INJECTOR = 0xFFFFFFFF  # HELLO index of a load injector

MAX_RECORDS = 512  # records per requests message (a front end splits larger batches)
MAX_MESSAGE_BYTES = 32 << 20  # a peer sending more is disconnected
MAX_FRAMES = 8
MAX_TEXT = 1000  # bytes of an error message carried back


class ProtocolError(ValueError):
    """A peer broke the framing: it is disconnected."""


def pack(frames: Sequence[bytes]) -> bytes:
    """One message, ready for one write."""
    parts: list[bytes] = [b""]
    total = 0
    for f in frames:
        parts.append(FRAME.pack(len(f)))
        parts.append(f)
        total += FRAME.size + len(f)
    parts[0] = MSG.pack(total, len(frames))
    return b"".join(parts)


class MessageReader:
    """Splits a byte stream into messages (lists of frames).

    Frames are read-only memoryviews into the bytes received (no copy: a requests message's
    rows go from the socket to the worker's slab with one copy); a message that arrives in
    pieces is joined once when complete. Compare a frame with ``==``, ``bytes()`` it for
    ``json.loads`` or ``decode``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []  # the start of an incomplete message
        self.have = 0
        self.need = MSG.size  # bytes that complete what ``parts`` holds

    def feed(self, data: bytes) -> list[list[memoryview]]:
        if self.parts:
            self.parts.append(data)
            self.have += len(data)
            if self.have < self.need:
                return []
            data = b"".join(self.parts)
            self.parts, self.have = [], 0
        out: list[list[memoryview]] = []
        view, off, n = memoryview(data), 0, len(data)
        while n - off >= MSG.size:
            total, count = MSG.unpack_from(data, off)
            if total > MAX_MESSAGE_BYTES or not 0 < count <= MAX_FRAMES:
                raise ProtocolError(f"message of {total} bytes in {count} frames")
            end = off + MSG.size + total
            if end > n:
                self.need = end - off
                break
            p, frames = off + MSG.size, []
            for _ in range(count):
                if p + FRAME.size > end:
                    raise ProtocolError("frame header past the message's end")
                (length,) = FRAME.unpack_from(data, p)
                p += FRAME.size
                if p + length > end:
                    raise ProtocolError("frame past the message's end")
                frames.append(view[p:p + length])
                p += length
            if p != end:
                raise ProtocolError("frames do not fill the message")
            out.append(frames)
            off = end
        else:
            self.need = MSG.size
        if off < n:
            self.parts, self.have = [data[off:] if off else data], n - off
        return out


class Channel(asyncio.Protocol):
    """One end of a front end <-> scheduler connection: ``on_message(channel, frames)`` per
    message, ``on_lost(channel)`` once when it closes (either side, or a framing error)."""

    def __init__(self, on_message: Callable[["Channel", list[memoryview]], None],
                 on_lost: Callable[["Channel"], None]) -> None:
        self.on_message, self.on_lost = on_message, on_lost
        self.transport: asyncio.Transport | None = None
        self.reader = MessageReader()
        self.peer: object = None  # what the owner binds to this connection (its front end)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.reader.feed(data)
        except ProtocolError:
            self.close()
            return
        for frames in messages:
            try:
                self.on_message(self, frames)
            except Exception as exc:  # noqa: BLE001 - one bad message must not close the connection
                log(30, f"front door: dropped a message that was not handled: {type(exc).__name__}: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost(self)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, frames: Sequence[bytes]) -> bool:
        """Queue one message; False if the connection is closed."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.write(pack(frames))
        return True

    def buffered(self) -> int:
        """Bytes written and not yet taken by the peer."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
