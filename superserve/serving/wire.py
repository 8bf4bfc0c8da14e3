"""The front door's wire format: front-end processes <-> the scheduler over ZeroMQ.

No pickle, no schema library: fixed little-endian structs, packed back to back, and the
float32 input rows / logits as raw bytes. Every message is a ZeroMQ multipart message
whose first frame (after the ROUTER's peer identity on the scheduler's side) is one kind
byte. See docs/frontdoor.md for the whole protocol.

front end -> scheduler (DEALER -> ROUTER)

* ``H`` hello: ``HELLO`` (frontend index, generation, pid). Sent once on connect; the
  scheduler answers nothing to an identity that has not said hello.
* ``R`` requests: frame 2 = N ``REQUEST`` records, frame 3 = their rows, back to back
  (record i's row is ``row_len`` bytes after the previous ones). At most ``MAX_RECORDS``
  records and ``MAX_MESSAGE_BYTES`` per message.
* ``C`` cancel: frame 2 = N uint64 request ids whose HTTP client went away.

scheduler -> front end (ROUTER -> DEALER)

* ``A`` answers: frame 2 = N ``ANSWER`` records, frame 3 = the logits of the answered ones
  (outcome in time / late) back to back in record order, frame 4 = each record's text
  (``text_len`` bytes: the SubNet id of an answer, the reason of any other outcome).
* ``S`` status: ``STATUS`` (ready, live) then the model's live calibration parameters
  as a JSON object (the model metadata endpoint shows them).
"""
from __future__ import annotations

import struct

import zmq

# request id (frontend-local, uint64), arrival (time.monotonic() at the front end: the clock
# is system-wide), slo_ms, min_accuracy, flags (bit 0: min_accuracy_strict), row_len
REQUEST = struct.Struct("<QdddII")
# request id, outcome (superserve.outcome.Outcome), accuracy floor met, worker, batch size,
# text_len, accuracy, queue_ms, compute_ms
ANSWER = struct.Struct("<QBBhHHfff2x")
HELLO = struct.Struct("<IIi")
STATUS = struct.Struct("<BB")
CANCEL = struct.Struct("<Q")

HELLO_KIND, REQUESTS, CANCELS, ANSWERS, STATUS_KIND = b"H", b"R", b"C", b"A", b"S"
STRICT = 1

MAX_RECORDS = 512  # records per requests message (a front end splits larger batches)
MAX_MESSAGE_BYTES = 32 << 20  # the scheduler's ZMQ_MAXMSGSIZE: a peer sending more is dropped
MAX_TEXT = 1000  # bytes of an error message carried back


def identity(index: int, generation: int) -> bytes:
    """A front end's ZeroMQ identity: unique per process, so a restarted front end never
    receives the answers meant for the one it replaced (the ROUTER drops those)."""
    return b"fe%d.%d" % (index, generation)


# --- sending and receiving without pyzmq's per-call flag enums (a few us per message) ---------
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS, _POLLIN, _RCVMORE = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE)


def send(sock: zmq.Socket, frames: list[bytes]) -> None:
    """A multipart message, non-blocking (raises zmq.Again at the high-water mark)."""
    last = len(frames) - 1
    for i, f in enumerate(frames):
        sock.send(f, _MORE if i < last else _NOBLOCK)


def recv(sock: zmq.Socket) -> list[bytes] | None:
    """The next multipart message, None when none is waiting (asked first: a zmq.Again per
    drain costs an exception and its message, several us)."""
    if not sock.getsockopt(_EVENTS) & _POLLIN:
        return None
    parts = [sock.recv(_NOBLOCK)]
    while sock.getsockopt(_RCVMORE):
        parts.append(sock.recv(_NOBLOCK))
    return parts


def waiting(sock: zmq.Socket) -> bool:
    """A message can be read now (ZeroMQ's fd is edge-triggered: ask after every send)."""
    return bool(sock.getsockopt(_EVENTS) & _POLLIN)
