"""The hwloop serial board protocol: frame codec, command table and payload layouts.

This module lives in ``hwloop`` because two packages that must not import each
other use it: the driver (:mod:`instruments.serial_board`) and the virtual board
(:mod:`simulated_device.virtual_board`). ``docs/board-protocol.md`` is the
specification; ``tests/test_board_protocol.py`` pins this code to the worked
examples written out there in hex.

Frame (all integers little-endian)::

    offset  size  field
    0       1     start byte 0xA5
    1       1     protocol version (1)
    2       4     payload length N (uint32, <= MAX_PAYLOAD_BYTES)
    6       2     sequence number (uint16; a reply echoes its request's)
    8       1     command byte: bits 0-5 command code, bit 6 error, bit 7 reply
    9       N     payload
    9+N     4     CRC-32 (zlib.crc32, uint32) over bytes 1 .. 8+N (everything
                  after the start byte and before the CRC)

Every number in a payload is little-endian; every physical value is an IEEE 754
binary64 (float64) in SI units (V, A, S, s). Channels are uint16, crosspoints
uint32, pulse counts int32.

Everything here is pure: bytes in, frozen dataclasses out (and back). Errors
are :class:`hwloop.errors.HwloopError` subclasses: :class:`FrameError` (the bytes
are not a valid frame), :class:`ProtocolError` (a valid frame whose content is
wrong; its :attr:`ProtocolError.error_code` is what a board answers with) and
:class:`BoardError` (the board answered with an error reply).
"""

from __future__ import annotations

import abc
import enum
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hwloop.errors import HwloopError

__all__ = [
    "CRC_SIZE",
    "FRAME_OVERHEAD",
    "HEADER_SIZE",
    "IDEMPOTENT_COMMANDS",
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "START_BYTE",
    "Ack",
    "BoardError",
    "Command",
    "ErrorCode",
    "ErrorReply",
    "FaultKind",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameFault",
    "GetState",
    "Identify",
    "IdentifyReply",
    "LastReply",
    "LastReplyReply",
    "ProtocolError",
    "Pulse",
    "PulseReply",
    "PulseStatus",
    "ReadConductance",
    "ReadConductanceReply",
    "ReadMode",
    "ReadNodes",
    "ReadNodesMeanReply",
    "ReadNodesSamplesReply",
    "Reply",
    "Request",
    "SafeState",
    "SetBiasCurrents",
    "SetInputs",
    "SetNudgeCurrents",
    "StateReply",
    "decode_frame",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_frame",
    "encode_reply",
    "encode_request",
    "int_vector",
]

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

START_BYTE = 0xA5
"""First byte of every frame."""
PROTOCOL_VERSION = 1
"""Version byte of the frames this module writes and accepts."""
HEADER_SIZE = 9
"""Bytes before the payload: start, version, length (4), sequence (2), command."""
CRC_SIZE = 4
"""Bytes of the CRC-32 trailer."""
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE
"""Bytes of a frame with an empty payload (13)."""
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Largest payload of one frame, bytes (4 MiB). Longer lengths are rejected."""
MAX_MESSAGE_BYTES = 255
"""Longest error-reply message, bytes of UTF-8."""
MAX_CHANNELS = 0xFFFF
"""Channel numbers and channel counts are uint16."""
MAX_CROSSPOINT = 0xFFFF_FFFF
"""Crosspoint numbers are uint32."""
MAX_PULSES = 0x7FFF_FFFF
"""Largest |pulse count| of one crosspoint in one frame (int32)."""

REPLY_BIT = 0x80
"""Command-byte bit set in every reply."""
ERROR_BIT = 0x40
"""Command-byte bit set in an error reply (together with :data:`REPLY_BIT`)."""
COMMAND_MASK = 0x3F
"""Command-byte bits that hold the command code."""

_HEADER = struct.Struct("<BBIHB")
_CRC = struct.Struct("<I")


class Command(enum.IntEnum):
    """Command codes (bits 0-5 of the command byte)."""

    IDENTIFY = 0x01
    GET_STATE = 0x02
    SAFE_STATE = 0x03
    LAST_REPLY = 0x04
    SET_INPUTS = 0x10
    SET_NUDGE_CURRENTS = 0x11
    SET_BIAS_CURRENTS = 0x12
    READ_NODES = 0x20
    READ_CONDUCTANCE = 0x21
    PULSE = 0x30


IDEMPOTENT_COMMANDS: frozenset[Command] = frozenset(
    {
        Command.IDENTIFY,
        Command.GET_STATE,
        Command.SAFE_STATE,
        Command.LAST_REPLY,
        Command.READ_NODES,
        Command.READ_CONDUCTANCE,
    }
)
"""Commands a host may repeat after a lost reply without changing the outcome.

``SET_*`` and ``PULSE`` are not in the set: after a failed exchange the host
re-reads the state (``GET_STATE``; for ``PULSE``, ``LAST_REPLY``) instead of resending.
"""


class ErrorCode(enum.IntEnum):
    """Error codes of an error reply."""

    BAD_CRC = 1
    """The request's CRC did not match; nothing was done."""
    BAD_LENGTH = 2
    """Payload length beyond the maximum or not matching the command's layout."""
    UNKNOWN_COMMAND = 3
    """The command code is not implemented by this board."""
    BAD_ARGUMENT = 4
    """A malformed argument (bad mode, channel beyond the board, NaN, duplicate)."""
    OUT_OF_RANGE = 5
    """A value beyond the board's range (reported by IDENTIFY); nothing was applied."""
    COMPLIANCE_TRIP = 6
    """A source hit its current compliance; the board went to its safe state."""
    BUSY = 7
    """The board is still executing an earlier command; nothing was done."""
    INTERNAL = 8
    """Firmware fault; the board went to its safe state."""


class ReadMode(enum.IntEnum):
    """READ_NODES reply form."""

    MEAN = 0
    """On-board averaging: per channel mean, spread (sample std) and OR of the flags."""
    SAMPLES = 1
    """Every sample, its flags and one timestamp per sample sweep."""


class PulseStatus(enum.IntEnum):
    """Per-crosspoint outcome of a PULSE (codes 0-3 equal :class:`hwloop.device.ProgramStatus`)."""

    OK = 0
    AT_MAX = 1
    """The device reached its upper bound."""
    AT_MIN = 2
    """The device reached its lower bound."""
    NO_CHANGE = 3
    """Zero pulses requested."""
    COMPLIANCE = 4
    """The train on this crosspoint stopped at a compliance trip (``applied`` is partial)."""
    SKIPPED = 5
    """Not reached: the frame was aborted at an earlier compliance trip (``applied`` = 0)."""


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class FrameError(HwloopError):
    """The bytes are not one valid frame (truncated, bad start/version/CRC, oversize).

    Attributes:
        reason: one of ``"truncated"``, ``"bad_start"``, ``"bad_version"``,
            ``"oversize"``, ``"bad_crc"``, ``"trailing"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProtocolError(HwloopError):
    """A valid frame whose content is wrong (unknown command, bad payload layout, ...).

    Attributes:
        error_code: the :class:`ErrorCode` a board answers this with.
    """

    def __init__(self, message: str, error_code: ErrorCode = ErrorCode.BAD_ARGUMENT) -> None:
        super().__init__(message)
        self.error_code = error_code


class BoardError(ProtocolError):
    """The board answered with an error reply.

    Attributes:
        error_code: the board's :class:`ErrorCode`.
        board_message: the board's message.
        command: the command that failed.
        seq: sequence number of the exchange.
    """

    def __init__(self, code: ErrorCode, board_message: str, command: int, seq: int) -> None:
        name = _command_name(command)
        super().__init__(
            f"board rejected {name} (seq {seq}): {code.name}: {board_message}", error_code=code
        )
        self.board_message = board_message
        self.command = command
        self.seq = seq


def _command_name(code: int) -> str:
    try:
        return Command(code & COMMAND_MASK).name
    except ValueError:
        return f"command 0x{code & COMMAND_MASK:02X}"


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        seq: sequence number (0..65535).
        command: the raw command byte (code plus reply/error bits).
        payload: the payload bytes.
        version: the protocol version byte.
    """

    seq: int
    command: int
    payload: bytes
    version: int = PROTOCOL_VERSION

    @property
    def code(self) -> int:
        """The command code (bits 0-5)."""
        return self.command & COMMAND_MASK

    @property
    def is_reply(self) -> bool:
        """True for a reply (bit 7)."""
        return bool(self.command & REPLY_BIT)

    @property
    def is_error(self) -> bool:
        """True for an error reply (bits 6 and 7)."""
        return bool(self.command & ERROR_BIT) and self.is_reply

    @property
    def name(self) -> str:
        """The command's name (``"READ_NODES"``), for logs."""
        return _command_name(self.command)

    def to_bytes(self) -> bytes:
        """The frame's bytes (``encode_frame`` of its fields)."""
        return encode_frame(self.seq, self.command, self.payload)


def encode_frame(seq: int, command: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Bytes of one frame.

    Args:
        seq: sequence number, 0..65535.
        command: command byte, 0..255 (code plus reply/error bits).
        payload: at most :data:`MAX_PAYLOAD_BYTES` bytes.

    Raises:
        FrameError: ``oversize`` payload.
        ProtocolError: sequence number or command byte out of range.
    """
    if not 0 <= seq <= 0xFFFF:
        raise ProtocolError(f"sequence number {seq} must be in 0..65535")
    if not 0 <= command <= 0xFF:
        raise ProtocolError(f"command byte {command} must be in 0..255")
    n = len(payload)
    if n > MAX_PAYLOAD_BYTES:
        raise FrameError(
            "oversize",
            f"payload of {n} bytes exceeds the maximum of {MAX_PAYLOAD_BYTES} bytes; "
            "split the request into several frames",
        )
    body = _HEADER.pack(START_BYTE, PROTOCOL_VERSION, n, seq, command) + bytes(payload)
    return body + _CRC.pack(zlib.crc32(memoryview(body)[1:]))


def _check_header(data: bytes | bytearray | memoryview, max_payload: int) -> tuple[int, int, int]:
    """``(version, length, total)`` of the header at the start of ``data`` (>= 9 bytes)."""
    start, version, length, _, _ = _HEADER.unpack_from(data, 0)
    if start != START_BYTE:
        raise FrameError("bad_start", f"frame starts with 0x{start:02X}, expected 0xA5")
    if version != PROTOCOL_VERSION:
        raise FrameError(
            "bad_version",
            f"frame has protocol version {version}; this host speaks version {PROTOCOL_VERSION}",
        )
    if length > max_payload:
        raise FrameError(
            "oversize", f"frame declares a {length}-byte payload; the maximum is {max_payload}"
        )
    return version, length, FRAME_OVERHEAD + length


def decode_frame(
    data: bytes | bytearray | memoryview, max_payload: int = MAX_PAYLOAD_BYTES
) -> Frame:
    """Decode exactly one frame.

    Raises:
        FrameError: with :attr:`FrameError.reason` ``truncated`` (fewer bytes than the
            header declares), ``bad_start``, ``bad_version``, ``oversize``, ``bad_crc``
            or ``trailing`` (bytes after the CRC).
    """
    mv = memoryview(bytes(data))
    if len(mv) < HEADER_SIZE:
        raise FrameError("truncated", f"frame of {len(mv)} bytes is shorter than its header")
    version, _, total = _check_header(mv, max_payload)
    if len(mv) < total:
        raise FrameError(
            "truncated", f"frame of {len(mv)} bytes is truncated: the header declares {total}"
        )
    if len(mv) > total:
        raise FrameError("trailing", f"{len(mv) - total} bytes follow the frame's CRC")
    (crc,) = _CRC.unpack_from(mv, total - CRC_SIZE)
    calc = zlib.crc32(mv[1 : total - CRC_SIZE])
    if crc != calc:
        raise FrameError("bad_crc", f"frame CRC 0x{crc:08X} does not match 0x{calc:08X}")
    _, _, _, seq, command = _HEADER.unpack_from(mv, 0)
    return Frame(seq=seq, command=command, payload=bytes(mv[HEADER_SIZE : total - CRC_SIZE]),
                 version=version)


class FaultKind(enum.StrEnum):
    """What a :class:`FrameDecoder` skipped."""

    GARBAGE = "garbage"
    """Bytes that are not part of any frame."""
    BAD_CRC = "bad_crc"
    """A complete candidate frame whose CRC did not match (its start byte was skipped)."""
    OVERSIZE = "oversize"
    """A header declaring a payload beyond the maximum (its start byte was skipped)."""
    STALE = "stale"
    """An incomplete candidate frame dropped by :meth:`FrameDecoder.drop_pending`."""


@dataclass(frozen=True)
class FrameFault:
    """Bytes skipped by the streaming decoder.

    Attributes:
        kind: why they were skipped.
        nbytes: how many bytes were discarded (the rest were rescanned).
        seq: the candidate header's sequence number (``None`` for garbage).
        command: the candidate header's command byte (``None`` for garbage).
    """

    kind: FaultKind
    nbytes: int
    seq: int | None = None
    command: int | None = None


class FrameDecoder:
    """Find frames in a byte stream and resynchronise after garbage.

    Feed it bytes as they arrive; it returns complete frames and reports what it
    skipped. Scanning rules: bytes before a start byte are garbage; a start byte
    followed by a wrong version byte, an oversize length or (once the frame is
    complete) a wrong CRC is skipped alone and scanning resumes at the next byte,
    so a real frame hidden behind a false start is still found. A false start
    that declares a long payload would wait for bytes that never come; the reader
    calls :meth:`drop_pending` after an inter-byte silence (the protocol's frame
    gap, ``docs/board-protocol.md``) to skip it.

    Args:
        max_payload: largest accepted payload, bytes.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD_BYTES) -> None:
        self._buf = bytearray()
        self._max = int(max_payload)

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of a frame."""
        return len(self._buf)

    @property
    def pending(self) -> bool:
        """True when a partial frame (a start byte and maybe more) is buffered."""
        return bool(self._buf)

    def wanted(self) -> int:
        """The fewest bytes that could complete the next frame (>= 1).

        Reading exactly this many never blocks past the end of a well-formed reply.
        """
        n = len(self._buf)
        if n < HEADER_SIZE:
            return max(1, FRAME_OVERHEAD - n)
        length = int(struct.unpack_from("<I", self._buf, 2)[0])
        return max(1, FRAME_OVERHEAD + min(length, self._max) - n)

    def reset(self) -> None:
        """Forget everything buffered."""
        self._buf.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | FrameFault]:
        """Add bytes; return the frames completed and the faults found, in stream order."""
        self._buf += data
        return self._scan()

    def drop_pending(self) -> list[Frame | FrameFault]:
        """Skip the start byte of the buffered partial frame and rescan the rest.

        Call after the stream has been silent for longer than the frame gap: a
        partial frame that stalls is a false start (or a truncated frame).
        """
        if not self._buf:
            return []
        out: list[Frame | FrameFault] = [FrameFault(FaultKind.STALE, 1)]
        del self._buf[:1]
        out += self._scan()
        return out

    def _scan(self) -> list[Frame | FrameFault]:
        out: list[Frame | FrameFault] = []
        buf = self._buf
        garbage = 0
        while buf:
            i = buf.find(START_BYTE)
            if i < 0:
                garbage += len(buf)
                buf.clear()
                break
            if i > 0:
                garbage += i
                del buf[:i]
            if len(buf) >= 2 and buf[1] != PROTOCOL_VERSION:
                garbage += 1
                del buf[:1]
                continue
            if len(buf) < HEADER_SIZE:
                break
            _, _, length, seq, command = _HEADER.unpack_from(buf, 0)
            if length > self._max:
                if garbage:
                    out.append(FrameFault(FaultKind.GARBAGE, garbage))
                    garbage = 0
                out.append(FrameFault(FaultKind.OVERSIZE, 1, seq, command))
                del buf[:1]
                continue
            total = FRAME_OVERHEAD + length
            if len(buf) < total:
                break
            mv = memoryview(buf)
            try:
                (crc,) = _CRC.unpack_from(mv, total - CRC_SIZE)
                ok = crc == zlib.crc32(mv[1 : total - CRC_SIZE])
                payload = bytes(mv[HEADER_SIZE : total - CRC_SIZE]) if ok else b""
            finally:
                mv.release()
            if garbage:
                out.append(FrameFault(FaultKind.GARBAGE, garbage))
                garbage = 0
            if ok:
                out.append(Frame(seq=seq, command=command, payload=payload))
                del buf[:total]
            else:
                out.append(FrameFault(FaultKind.BAD_CRC, 1, seq, command))
                del buf[:1]
        if garbage:
            out.append(FrameFault(FaultKind.GARBAGE, garbage))
        return out


# ---------------------------------------------------------------------------
# Payload reading and writing
# ---------------------------------------------------------------------------

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.int64]
U8Array: TypeAlias = NDArray[np.uint8]


class _Reader:
    """Sequential little-endian reader of a payload; short reads raise BAD_LENGTH."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self._mv = memoryview(data)
        self._pos = 0
        self._what = what

    def take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._mv):
            raise ProtocolError(
                f"{self._what} payload of {len(self._mv)} bytes is too short for its layout",
                ErrorCode.BAD_LENGTH,
            )
        out = self._mv[self._pos : self._pos + n]
        self._pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))

    def u8(self) -> int:
        return int(self.unpack("B")[0])

    def u16(self) -> int:
        return int(self.unpack("H")[0])

    def u32(self) -> int:
        return int(self.unpack("I")[0])

    def f64(self) -> float:
        return float(self.unpack("d")[0])

    def array(self, dtype: str, n: int) -> NDArray[Any]:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(n * dt.itemsize), dtype=dt).copy()

    def string(self) -> str:
        n = self.u8()
        raw = bytes(self.take(n))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{self._what}: a string is not valid UTF-8") from None

    def end(self) -> None:
        if self._pos != len(self._mv):
            raise ProtocolError(
                f"{self._what} payload has {len(self._mv) - self._pos} bytes beyond its layout",
                ErrorCode.BAD_LENGTH,
            )


def _str8(s: str, what: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 255:
        raise ProtocolError(f"{what} is {len(raw)} bytes of UTF-8; at most 255 fit")
    return bytes([len(raw)]) + raw


def int_vector(
    values: ArrayLike, what: str, error: type[HwloopError] = ProtocolError
) -> IntArray:
    """1-D int64 copy of ``values``; ``error`` naming ``what`` when not 1-D or not integers."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise error(f"{what} must be a 1-D array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise error(f"{what} must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def _index_array(values: ArrayLike, what: str, upper: int) -> IntArray:
    """1-D int64 copy of ``values`` with every element in ``0..upper``."""
    out = int_vector(values, what)
    if out.size and (int(out.min()) < 0 or int(out.max()) > upper):
        raise ProtocolError(f"{what} must lie in 0..{upper}")
    out.setflags(write=False)
    return out


def _float_array(values: ArrayLike, what: str, n: int | None = None) -> FloatArray:
    a = np.array(values, dtype=np.float64)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        want = "a 1-D array" if n is None else f"shape ({n},)"
        raise ProtocolError(f"{what} must have {want}, got shape {a.shape}")
    a.setflags(write=False)
    return a


def _frozen_copy(a: NDArray[Any], dtype: Any) -> NDArray[Any]:
    out = np.array(a, dtype=dtype)
    out.setflags(write=False)
    return out


def _u8_array(values: ArrayLike, what: str, shape: tuple[int, ...]) -> U8Array:
    a = np.asarray(values)
    if a.shape != shape:
        raise ProtocolError(f"{what} must have shape {shape}, got {a.shape}")
    if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 255):
        raise ProtocolError(f"{what} must be integers in 0..255")
    return _frozen_copy(a, np.uint8)


def _le(a: NDArray[Any], dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype)).tobytes()


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


class _Message(abc.ABC):
    """Base of every payload type: ``payload()`` writes it, ``parse()`` reads it."""

    @abc.abstractmethod
    def payload(self) -> bytes:
        """The payload bytes."""

    @classmethod
    @abc.abstractmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (raises :class:`ProtocolError` on a layout mismatch)."""


class Request(_Message):
    """A host-to-board message; :attr:`COMMAND` is its command code."""

    COMMAND: ClassVar[Command]


class Reply(_Message):
    """A board-to-host message (the reply to one request)."""


@dataclass(frozen=True)
class _Empty(_Message):
    def payload(self) -> bytes:
        """The payload bytes."""
        return b""

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        _Reader(payload, cls.__name__).end()
        return cls()


@dataclass(frozen=True)
class Identify(_Empty, Request):
    """IDENTIFY request (empty payload)."""

    COMMAND: ClassVar[Command] = Command.IDENTIFY


@dataclass(frozen=True)
class GetState(_Empty, Request):
    """GET_STATE request (empty payload)."""

    COMMAND: ClassVar[Command] = Command.GET_STATE


@dataclass(frozen=True)
class SafeState(_Empty, Request):
    """SAFE_STATE request (empty payload): every source to 0 and off."""

    COMMAND: ClassVar[Command] = Command.SAFE_STATE


@dataclass(frozen=True)
class LastReply(_Empty, Request):
    """LAST_REPLY request (empty payload): the board's reply to its last non-idempotent request."""

    COMMAND: ClassVar[Command] = Command.LAST_REPLY


@dataclass(frozen=True)
class LastReplyReply(Reply):
    """LAST_REPLY reply: the reply frame the board sent to its last non-idempotent request.

    Attributes:
        frame: that reply (its sequence number echoes the request's; an error reply
            too), or ``None`` when the board answered no non-idempotent request since it
            started.
    """

    frame: Frame | None

    def payload(self) -> bytes:
        """The payload bytes: ``uint8 present`` [, ``uint16 seq``, ``uint8 command``, payload]."""
        if self.frame is None:
            return b"\x00"
        return struct.pack("<BHB", 1, self.frame.seq, self.frame.command) + self.frame.payload

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "LAST_REPLY reply")
        (present,) = r.unpack("B")
        if present == 0:
            r.end()
            return cls(None)
        if present != 1:
            raise ProtocolError(f"LAST_REPLY reply: present byte {present} must be 0 or 1")
        seq, command = r.unpack("HB")
        if not command & REPLY_BIT:
            raise ProtocolError(f"LAST_REPLY reply: command byte 0x{command:02X} is not a reply")
        return cls(Frame(seq=seq, command=command, payload=bytes(payload[4:])))


@dataclass(frozen=True)
class Ack(_Empty, Reply):
    """Empty reply of SAFE_STATE and SET_*: the command was applied."""


_IDENT_FIXED = struct.Struct("<BHHHHI8dII3d")


@dataclass(frozen=True)
class IdentifyReply(Reply):
    """IDENTIFY reply: who the board is, its channel counts, ranges and timing.

    Attributes:
        protocol_version: the board's protocol version.
        n_input_channels: input voltage sources (uint16).
        n_nudge_channels: nudge current sources (uint16).
        n_bias_channels: bias current sources (uint16).
        n_adc_channels: node-voltage converter channels (uint16).
        n_crosspoints: programmable crosspoints (uint32).
        v_input_max_v: largest |input voltage|, V.
        i_nudge_max_a: largest |nudge current|, A.
        i_bias_max_a: largest |bias current|, A.
        adc_range_v: converter full scale, V (``inf``: none).
        v_read_max_v: largest |conductance read voltage|, V.
        pulse_amplitude_max_v: largest programming pulse amplitude, V.
        pulse_width_min_s: shortest pulse, s.
        pulse_width_max_s: longest pulse, s.
        max_samples: most samples per READ_NODES frame.
        max_pulses_per_crosspoint: most |pulses| per crosspoint per PULSE frame.
        sample_time_s: time of one sample sweep over the requested ADC channels, s.
        pulse_overhead_s: time per pulse beyond its width, s.
        g_read_time_s: time to read one crosspoint's conductance, s.
        board_name: model name (UTF-8, at most 255 bytes).
        serial_number: serial number.
        firmware: firmware version.
    """

    protocol_version: int
    n_input_channels: int
    n_nudge_channels: int
    n_bias_channels: int
    n_adc_channels: int
    n_crosspoints: int
    v_input_max_v: float
    i_nudge_max_a: float
    i_bias_max_a: float
    adc_range_v: float
    v_read_max_v: float
    pulse_amplitude_max_v: float
    pulse_width_min_s: float
    pulse_width_max_s: float
    max_samples: int
    max_pulses_per_crosspoint: int
    sample_time_s: float
    pulse_overhead_s: float
    g_read_time_s: float
    board_name: str
    serial_number: str
    firmware: str

    _FIXED: ClassVar[tuple[str, ...]] = (
        "protocol_version",
        "n_input_channels",
        "n_nudge_channels",
        "n_bias_channels",
        "n_adc_channels",
        "n_crosspoints",
        "v_input_max_v",
        "i_nudge_max_a",
        "i_bias_max_a",
        "adc_range_v",
        "v_read_max_v",
        "pulse_amplitude_max_v",
        "pulse_width_min_s",
        "pulse_width_max_s",
        "max_samples",
        "max_pulses_per_crosspoint",
        "sample_time_s",
        "pulse_overhead_s",
        "g_read_time_s",
    )

    def payload(self) -> bytes:
        """The payload bytes."""
        try:
            fixed = _IDENT_FIXED.pack(*(getattr(self, k) for k in self._FIXED))
        except struct.error as e:
            raise ProtocolError(f"IDENTIFY reply field out of range: {e}") from None
        return (
            fixed
            + _str8(self.board_name, "board name")
            + _str8(self.serial_number, "serial number")
            + _str8(self.firmware, "firmware")
        )

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "IDENTIFY reply")
        fixed = _IDENT_FIXED.unpack(r.take(_IDENT_FIXED.size))
        kw: dict[str, Any] = dict(zip(cls._FIXED, fixed, strict=True))
        kw["board_name"] = r.string()
        kw["serial_number"] = r.string()
        kw["firmware"] = r.string()
        r.end()
        return cls(**kw)


@dataclass(frozen=True, eq=False)
class StateReply(Reply):
    """GET_STATE reply: every source level as set, and whether any output is on.

    Attributes:
        outputs_on: True when any source output is enabled (set since the last safe state).
        inputs_v: ``(n_input_channels,)`` input source levels, V.
        nudge_a: ``(n_nudge_channels,)`` nudge current levels, A.
        bias_a: ``(n_bias_channels,)`` bias current levels, A.
    """

    outputs_on: bool
    inputs_v: FloatArray
    nudge_a: FloatArray
    bias_a: FloatArray

    def __post_init__(self) -> None:
        for name in ("inputs_v", "nudge_a", "bias_a"):
            a = _float_array(getattr(self, name), f"GET_STATE {name}")
            if a.size > MAX_CHANNELS:
                raise ProtocolError(f"GET_STATE {name} has more than {MAX_CHANNELS} channels")
            object.__setattr__(self, name, a)

    @property
    def energised(self) -> bool:
        """True when an output is on at a nonzero level."""
        return self.outputs_on and bool(
            np.any(self.inputs_v) or np.any(self.nudge_a) or np.any(self.bias_a)
        )

    def payload(self) -> bytes:
        """The payload bytes."""
        return b"".join(
            [
                struct.pack("<BHHH", int(self.outputs_on), self.inputs_v.size,
                            self.nudge_a.size, self.bias_a.size),
                _le(self.inputs_v, "<f8"),
                _le(self.nudge_a, "<f8"),
                _le(self.bias_a, "<f8"),
            ]
        )

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "GET_STATE reply")
        on, n_in, n_nu, n_bi = r.unpack("BHHH")
        if on > 1:
            raise ProtocolError(f"GET_STATE reply: outputs_on byte {on} must be 0 or 1")
        out = cls(bool(on), r.array("<f8", n_in), r.array("<f8", n_nu), r.array("<f8", n_bi))
        r.end()
        return out


_LAYOUT_LIST = 0
_LAYOUT_BLOCK = 1


@dataclass(frozen=True, eq=False)
class _SetLevels(Request):
    """Set some source levels: ``(channel, value)`` pairs.

    Written as a contiguous block (``layout 1``: first channel, count, values) when
    the channels are consecutive ascending, else as a list (``layout 0``: count,
    channels, values).

    Attributes:
        channels: ``(k,)`` channel numbers (0..65535, each at most once).
        values: ``(k,)`` levels (V for inputs, A for currents).
    """

    channels: IntArray
    values: FloatArray

    def __post_init__(self) -> None:
        ch = _index_array(self.channels, f"{self.COMMAND.name} channels", MAX_CHANNELS)
        if ch.size > MAX_CHANNELS:
            raise ProtocolError(f"{self.COMMAND.name}: at most {MAX_CHANNELS} channels per frame")
        if np.unique(ch).size != ch.size:
            raise ProtocolError(f"{self.COMMAND.name}: each channel may appear once per frame")
        object.__setattr__(self, "channels", ch)
        object.__setattr__(
            self, "values", _float_array(self.values, f"{self.COMMAND.name} values", ch.size)
        )

    @property
    def is_block(self) -> bool:
        """True when the channels are consecutive ascending (written as a block)."""
        c = self.channels
        return bool(c.size) and int(c[-1]) - int(c[0]) + 1 == c.size and bool(
            np.all(np.diff(c) == 1)
        )

    def payload(self) -> bytes:
        """The payload bytes."""
        k = self.channels.size
        if self.is_block:
            head = struct.pack("<BHH", _LAYOUT_BLOCK, int(self.channels[0]), k)
            return head + _le(self.values, "<f8")
        head = struct.pack("<BH", _LAYOUT_LIST, k)
        return head + _le(self.channels, "<u2") + _le(self.values, "<f8")

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, cls.COMMAND.name)
        layout = r.u8()
        if layout == _LAYOUT_BLOCK:
            first, k = r.unpack("HH")
            if first + k - 1 > MAX_CHANNELS:
                raise ProtocolError(f"{cls.COMMAND.name}: block runs past channel {MAX_CHANNELS}")
            ch = np.arange(first, first + k, dtype=np.int64)
        elif layout == _LAYOUT_LIST:
            k = r.u16()
            ch = r.array("<u2", k).astype(np.int64)
        else:
            raise ProtocolError(f"{cls.COMMAND.name}: layout byte {layout} must be 0 or 1")
        vals = r.array("<f8", k)
        r.end()
        return cls(ch, vals)


@dataclass(frozen=True, eq=False)
class SetInputs(_SetLevels):
    """SET_INPUTS: input voltage sources, V (turns the addressed outputs on)."""

    COMMAND: ClassVar[Command] = Command.SET_INPUTS


@dataclass(frozen=True, eq=False)
class SetNudgeCurrents(_SetLevels):
    """SET_NUDGE_CURRENTS: nudge current sources, A (turns the addressed outputs on)."""

    COMMAND: ClassVar[Command] = Command.SET_NUDGE_CURRENTS


@dataclass(frozen=True, eq=False)
class SetBiasCurrents(_SetLevels):
    """SET_BIAS_CURRENTS: bias current sources, A (turns the addressed outputs on)."""

    COMMAND: ClassVar[Command] = Command.SET_BIAS_CURRENTS


@dataclass(frozen=True, eq=False)
class ReadNodes(Request):
    """READ_NODES: sample ADC channels ``n_samples`` times.

    Attributes:
        channels: ``(k,)`` ADC channel numbers (0..65535).
        n_samples: samples per channel (1..2**32-1).
        mode: :class:`ReadMode` of the reply.
    """

    COMMAND: ClassVar[Command] = Command.READ_NODES
    channels: IntArray
    n_samples: int
    mode: ReadMode = ReadMode.MEAN

    def __post_init__(self) -> None:
        ch = _index_array(self.channels, "READ_NODES channels", MAX_CHANNELS)
        if ch.size > MAX_CHANNELS:
            raise ProtocolError(f"READ_NODES: at most {MAX_CHANNELS} channels per frame")
        object.__setattr__(self, "channels", ch)
        if not 1 <= int(self.n_samples) <= 0xFFFF_FFFF:
            raise ProtocolError(f"READ_NODES n_samples={self.n_samples} must be in 1..2**32-1")
        object.__setattr__(self, "n_samples", int(self.n_samples))
        try:
            object.__setattr__(self, "mode", ReadMode(self.mode))
        except ValueError:
            raise ProtocolError(f"READ_NODES mode {self.mode} must be 0 or 1") from None

    def payload(self) -> bytes:
        """The payload bytes."""
        head = struct.pack("<BIH", int(self.mode), self.n_samples, self.channels.size)
        return head + _le(self.channels, "<u2")

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "READ_NODES")
        mode, n, k = r.unpack("BIH")
        ch = r.array("<u2", k).astype(np.int64)
        r.end()
        return cls(ch, n, mode)


@dataclass(frozen=True, eq=False)
class ReadNodesMeanReply(Reply):
    """READ_NODES reply in :attr:`ReadMode.MEAN` (on-board averaging).

    Attributes:
        n_samples: samples averaged per channel.
        mean_v: ``(k,)`` sample mean per channel, V.
        spread_v: ``(k,)`` sample standard deviation (ddof 1; 0 for one sample), V.
        flags: ``(k,)`` OR of the samples' :class:`hwloop.device.SampleFlag` bits.
        t_first_s: time of the first sample, s on the board's clock.
        t_last_s: time of the last sample, s on the board's clock.
    """

    n_samples: int
    mean_v: FloatArray
    spread_v: FloatArray
    flags: U8Array
    t_first_s: float
    t_last_s: float

    def __post_init__(self) -> None:
        m = _float_array(self.mean_v, "READ_NODES mean")
        if m.size > MAX_CHANNELS:
            raise ProtocolError(f"READ_NODES reply: at most {MAX_CHANNELS} channels")
        object.__setattr__(self, "mean_v", m)
        object.__setattr__(self, "spread_v", _float_array(self.spread_v, "spread", m.size))
        object.__setattr__(self, "flags", _u8_array(self.flags, "flags", (m.size,)))
        if not 1 <= int(self.n_samples) <= 0xFFFF_FFFF:
            raise ProtocolError(f"READ_NODES reply n_samples={self.n_samples} out of range")

    def payload(self) -> bytes:
        """The payload bytes."""
        k = self.mean_v.size
        return b"".join(
            [
                struct.pack("<BIH", int(ReadMode.MEAN), self.n_samples, k),
                _le(self.mean_v, "<f8"),
                _le(self.spread_v, "<f8"),
                _le(self.flags, "u1"),
                struct.pack("<dd", self.t_first_s, self.t_last_s),
            ]
        )

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "READ_NODES reply")
        mode, n, k = r.unpack("BIH")
        if mode != ReadMode.MEAN:
            raise ProtocolError(f"READ_NODES reply mode {mode}: expected {int(ReadMode.MEAN)}")
        mean = r.array("<f8", k)
        spread = r.array("<f8", k)
        flags = r.array("u1", k)
        t0, t1 = r.unpack("dd")
        r.end()
        return cls(n, mean, spread, flags, t0, t1)


@dataclass(frozen=True, eq=False)
class ReadNodesSamplesReply(Reply):
    """READ_NODES reply in :attr:`ReadMode.SAMPLES` (every sample).

    Attributes:
        samples_v: ``(n_samples, k)`` samples, V (sample-major on the wire).
        flags: ``(n_samples, k)`` :class:`hwloop.device.SampleFlag` bits.
        timestamps_s: ``(n_samples,)`` time of each sample sweep, s on the board's clock.
    """

    samples_v: FloatArray
    flags: U8Array
    timestamps_s: FloatArray

    def __post_init__(self) -> None:
        s = np.array(self.samples_v, dtype=np.float64)
        if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] > MAX_CHANNELS:
            raise ProtocolError(
                f"READ_NODES samples must have shape (n_samples >= 1, k <= {MAX_CHANNELS}),"
                f" got {s.shape}"
            )
        s.setflags(write=False)
        object.__setattr__(self, "samples_v", s)
        object.__setattr__(self, "flags", _u8_array(self.flags, "flags", s.shape))
        object.__setattr__(
            self, "timestamps_s", _float_array(self.timestamps_s, "timestamps", s.shape[0])
        )

    @property
    def n_samples(self) -> int:
        """Samples per channel."""
        return int(self.samples_v.shape[0])

    def payload(self) -> bytes:
        """The payload bytes."""
        n, k = self.samples_v.shape
        return b"".join(
            [
                struct.pack("<BIH", int(ReadMode.SAMPLES), n, k),
                _le(self.samples_v, "<f8"),
                _le(self.flags, "u1"),
                _le(self.timestamps_s, "<f8"),
            ]
        )

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "READ_NODES reply")
        mode, n, k = r.unpack("BIH")
        if mode != ReadMode.SAMPLES:
            raise ProtocolError(
                f"READ_NODES reply mode {mode}: expected {int(ReadMode.SAMPLES)}"
            )
        if n < 1:
            raise ProtocolError("READ_NODES reply carries no samples")
        samples = r.array("<f8", n * k).reshape(n, k)
        flags = r.array("u1", n * k).reshape(n, k)
        stamps = r.array("<f8", n)
        r.end()
        return cls(samples, flags, stamps)


@dataclass(frozen=True, eq=False)
class Pulse(Request):
    """PULSE: trains of identical pulses on crosspoints.

    Attributes:
        crosspoints: ``(k,)`` crosspoint numbers (uint32, each at most once).
        counts: ``(k,)`` signed pulse counts (int32): + potentiates (pulses of
            +amplitude), - depresses (pulses of -amplitude), 0 does nothing.
        amplitude_v: pulse amplitude magnitude, V (> 0, finite).
        width_s: pulse width, s (> 0, finite).
    """

    COMMAND: ClassVar[Command] = Command.PULSE
    crosspoints: IntArray
    counts: IntArray
    amplitude_v: float
    width_s: float

    def __post_init__(self) -> None:
        cp = _index_array(self.crosspoints, "PULSE crosspoints", MAX_CROSSPOINT)
        if np.unique(cp).size != cp.size:
            raise ProtocolError("PULSE: each crosspoint may appear once per frame")
        c = np.asarray(self.counts)
        if c.shape != cp.shape or (c.size and not np.issubdtype(c.dtype, np.integer)):
            raise ProtocolError("PULSE counts must be integers, one per crosspoint")
        c64 = _frozen_copy(c, np.int64)
        if c64.size and int(np.abs(c64).max()) > MAX_PULSES:
            raise ProtocolError(f"PULSE counts must lie in -{MAX_PULSES}..{MAX_PULSES}")
        object.__setattr__(self, "crosspoints", cp)
        object.__setattr__(self, "counts", c64)
        for name in ("amplitude_v", "width_s"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v > 0):
                raise ProtocolError(f"PULSE {name}={v!r} must be a finite number > 0")
            object.__setattr__(self, name, v)

    def payload(self) -> bytes:
        """The payload bytes."""
        head = struct.pack("<ddI", self.amplitude_v, self.width_s, self.crosspoints.size)
        return head + _le(self.crosspoints, "<u4") + _le(self.counts, "<i4")

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "PULSE")
        amp, width, k = r.unpack("ddI")
        cp = r.array("<u4", k).astype(np.int64)
        counts = r.array("<i4", k).astype(np.int64)
        r.end()
        return cls(cp, counts, amp, width)


@dataclass(frozen=True, eq=False)
class PulseReply(Reply):
    """PULSE reply.

    Attributes:
        aborted: True when a compliance trip stopped the frame (the board is then in
            its safe state; later crosspoints are ``SKIPPED``).
        applied: ``(k,)`` signed pulses actually applied, in request order.
        status: ``(k,)`` :class:`PulseStatus` codes.
    """

    aborted: bool
    applied: IntArray
    status: U8Array

    def __post_init__(self) -> None:
        a = np.asarray(self.applied)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ProtocolError("PULSE reply applied counts must be a 1-D integer array")
        if a.size and int(np.abs(a.astype(np.int64)).max()) > MAX_PULSES:
            raise ProtocolError("PULSE reply applied counts beyond int32")
        object.__setattr__(self, "applied", _frozen_copy(a, np.int64))
        object.__setattr__(self, "status", _u8_array(self.status, "PULSE status", a.shape))

    def payload(self) -> bytes:
        """The payload bytes."""
        head = struct.pack("<BI", int(self.aborted), self.applied.size)
        return head + _le(self.applied, "<i4") + _le(self.status, "u1")

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "PULSE reply")
        aborted, k = r.unpack("BI")
        if aborted > 1:
            raise ProtocolError(f"PULSE reply: status byte {aborted} must be 0 or 1")
        applied = r.array("<i4", k).astype(np.int64)
        status = r.array("u1", k)
        r.end()
        return cls(bool(aborted), applied, status)


@dataclass(frozen=True, eq=False)
class ReadConductance(Request):
    """READ_CONDUCTANCE: measure crosspoint conductances at a read voltage.

    Attributes:
        crosspoints: ``(k,)`` crosspoint numbers (uint32).
        v_read_v: read voltage, V (finite, nonzero).
    """

    COMMAND: ClassVar[Command] = Command.READ_CONDUCTANCE
    crosspoints: IntArray
    v_read_v: float

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "crosspoints",
            _index_array(self.crosspoints, "READ_CONDUCTANCE crosspoints", MAX_CROSSPOINT),
        )
        v = float(self.v_read_v)
        if not (np.isfinite(v) and v != 0):
            raise ProtocolError(f"READ_CONDUCTANCE v_read_v={v!r} must be finite and nonzero")
        object.__setattr__(self, "v_read_v", v)

    def payload(self) -> bytes:
        """The payload bytes."""
        head = struct.pack("<dI", self.v_read_v, self.crosspoints.size)
        return head + _le(self.crosspoints, "<u4")

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "READ_CONDUCTANCE")
        v, k = r.unpack("dI")
        cp = r.array("<u4", k).astype(np.int64)
        r.end()
        return cls(cp, v)


@dataclass(frozen=True, eq=False)
class ReadConductanceReply(Reply):
    """READ_CONDUCTANCE reply.

    Attributes:
        g_s: ``(k,)`` conductances, S, in request order.
    """

    g_s: FloatArray

    def __post_init__(self) -> None:
        object.__setattr__(self, "g_s", _float_array(self.g_s, "READ_CONDUCTANCE reply"))

    def payload(self) -> bytes:
        """The payload bytes."""
        return struct.pack("<I", self.g_s.size) + _le(self.g_s, "<f8")

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "READ_CONDUCTANCE reply")
        k = r.u32()
        g = r.array("<f8", k)
        r.end()
        return cls(g)


@dataclass(frozen=True)
class ErrorReply(Reply):
    """Error reply payload: code and a short message.

    Attributes:
        code: the :class:`ErrorCode`.
        message: what went wrong (UTF-8, at most 255 bytes; longer text is cut).
    """

    code: ErrorCode
    message: str

    def payload(self) -> bytes:
        """The payload bytes."""
        raw = self.message.encode("utf-8")[:MAX_MESSAGE_BYTES]
        raw = raw.decode("utf-8", errors="ignore").encode("utf-8")
        return bytes([int(self.code), len(raw)]) + raw

    @classmethod
    def parse(cls, payload: bytes | memoryview) -> Self:
        """Read a payload (:class:`ProtocolError` on a layout mismatch)."""
        r = _Reader(payload, "error reply")
        code = r.u8()
        msg = r.string()
        r.end()
        try:
            ec = ErrorCode(code)
        except ValueError:
            raise ProtocolError(f"error reply carries unknown error code {code}") from None
        return cls(ec, msg)


REQUEST_TYPES: dict[Command, type[Request]] = {
    Command.IDENTIFY: Identify,
    Command.GET_STATE: GetState,
    Command.SAFE_STATE: SafeState,
    Command.LAST_REPLY: LastReply,
    Command.SET_INPUTS: SetInputs,
    Command.SET_NUDGE_CURRENTS: SetNudgeCurrents,
    Command.SET_BIAS_CURRENTS: SetBiasCurrents,
    Command.READ_NODES: ReadNodes,
    Command.READ_CONDUCTANCE: ReadConductance,
    Command.PULSE: Pulse,
}
"""Request payload type of each command."""


def _parse_read_nodes_reply(payload: bytes | memoryview) -> Reply:
    if len(payload) < 1:
        raise ProtocolError("READ_NODES reply is empty", ErrorCode.BAD_LENGTH)
    if payload[0] == ReadMode.SAMPLES:
        return ReadNodesSamplesReply.parse(payload)
    return ReadNodesMeanReply.parse(payload)


REPLY_PARSERS: dict[Command, Callable[[bytes | memoryview], Reply]] = {
    Command.IDENTIFY: IdentifyReply.parse,
    Command.GET_STATE: StateReply.parse,
    Command.SAFE_STATE: Ack.parse,
    Command.LAST_REPLY: LastReplyReply.parse,
    Command.SET_INPUTS: Ack.parse,
    Command.SET_NUDGE_CURRENTS: Ack.parse,
    Command.SET_BIAS_CURRENTS: Ack.parse,
    Command.READ_NODES: _parse_read_nodes_reply,
    Command.READ_CONDUCTANCE: ReadConductanceReply.parse,
    Command.PULSE: PulseReply.parse,
}
"""Reply payload parser of each command."""


# ---------------------------------------------------------------------------
# Message <-> frame
# ---------------------------------------------------------------------------


def encode_request(seq: int, request: Request) -> bytes:
    """Bytes of the request frame for ``request`` with sequence number ``seq``."""
    return encode_frame(seq, int(request.COMMAND), request.payload())


def encode_reply(seq: int, command: int, reply: Reply) -> bytes:
    """Bytes of the reply frame answering ``command`` (its code) with ``reply``."""
    if isinstance(reply, ErrorReply):
        return encode_error(seq, command, reply.code, reply.message)
    return encode_frame(seq, (command & COMMAND_MASK) | REPLY_BIT, reply.payload())


def encode_error(seq: int, command: int, code: ErrorCode, message: str) -> bytes:
    """Bytes of an error reply to ``command`` (echoed code) with sequence number ``seq``."""
    body = ErrorReply(ErrorCode(code), message).payload()
    return encode_frame(seq, (command & COMMAND_MASK) | REPLY_BIT | ERROR_BIT, body)


def decode_request(frame: Frame) -> Request:
    """The request carried by ``frame``.

    Raises:
        ProtocolError: a reply frame (``BAD_ARGUMENT``), an unknown command
            (``UNKNOWN_COMMAND``) or a payload that does not fit the command's
            layout (``BAD_LENGTH`` / ``BAD_ARGUMENT``).
    """
    if frame.is_reply:
        raise ProtocolError(f"frame seq {frame.seq} is a reply, not a request")
    try:
        cmd = Command(frame.command)
    except ValueError:
        raise ProtocolError(
            f"unknown command 0x{frame.command:02X}", ErrorCode.UNKNOWN_COMMAND
        ) from None
    return REQUEST_TYPES[cmd].parse(frame.payload)


def decode_reply(frame: Frame, command: int) -> Reply:
    """The reply to ``command`` carried by ``frame``.

    Raises:
        BoardError: an error reply (the board's code and message).
        ProtocolError: not a reply, a reply to another command, or a payload
            that does not fit the layout.
    """
    code = command & COMMAND_MASK
    if not frame.is_reply:
        raise ProtocolError(f"frame seq {frame.seq} is a request, expected a reply")
    if frame.code != code:
        raise ProtocolError(
            f"reply seq {frame.seq} answers {frame.name}, expected {_command_name(code)}"
        )
    if frame.is_error:
        err = ErrorReply.parse(frame.payload)
        raise BoardError(err.code, err.message, code, frame.seq)
    try:
        parser = REPLY_PARSERS[Command(code)]
    except ValueError:
        raise ProtocolError(f"no reply layout for command 0x{code:02X}") from None
    return parser(frame.payload)
