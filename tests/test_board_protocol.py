"""The board-protocol codec, pinned to the worked examples of docs/board-protocol.md.

The hex frames are parsed out of the markdown, so the specification and the code
cannot drift apart; every command round-trips (hypothesis); corrupt, truncated and
garbage streams are rejected or resynchronised.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwloop import board_protocol as bp
from hwloop.device import ProgramStatus, SampleFlag
from hwloop.errors import HwloopError

DOC = Path(__file__).resolve().parents[1] / "docs" / "board-protocol.md"


def doc_frames() -> dict[str, bytes]:
    """Every ``<!-- frame: NAME -->`` + fenced hex block of the spec, as bytes."""
    text = DOC.read_text(encoding="utf-8")
    out: dict[str, bytes] = {}
    for m in re.finditer(r"<!-- frame: ([\w-]+) -->\s*```hex\n(.*?)```", text, re.S):
        hexdigits = "".join(line.split("#", 1)[0] for line in m.group(2).splitlines())
        assert m.group(1) not in out, f"duplicate example {m.group(1)}"
        out[m.group(1)] = bytes.fromhex(hexdigits)
    return out


def same(a: Any, b: Any) -> bool:
    """Field-by-field equality of two messages (arrays compared exactly, NaN == NaN)."""
    if type(a) is not type(b):
        return False
    for name in (f.name for f in dataclasses.fields(a)):
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype.kind != y.dtype.kind:
                return False
            if x.dtype.kind == "f":
                if not np.array_equal(x.view(np.uint64), y.view(np.uint64)):
                    return False
            elif not np.array_equal(x, y):
                return False
        elif isinstance(x, float) and np.isnan(x):
            if not (isinstance(y, float) and np.isnan(y)):
                return False
        elif x != y:
            return False
    return True


IDENT = bp.IdentifyReply(
    protocol_version=1,
    n_input_channels=8,
    n_nudge_channels=2,
    n_bias_channels=6,
    n_adc_channels=6,
    n_crosspoints=40,
    v_input_max_v=10.0,
    i_nudge_max_a=1e-4,
    i_bias_max_a=1e-4,
    adc_range_v=10.0,
    v_read_max_v=0.5,
    pulse_amplitude_max_v=3.0,
    pulse_width_min_s=1e-7,
    pulse_width_max_s=1e-3,
    max_samples=65535,
    max_pulses_per_crosspoint=1000,
    sample_time_s=2e-5,
    pulse_overhead_s=1e-6,
    g_read_time_s=1e-4,
    board_name="hwloop-board-8",
    serial_number="HB-0001",
    firmware="1.0.0",
)

# name -> (seq, command code, message, is_reply); the message is what the frame means
EXPECTED: dict[str, tuple[int, bp.Command, bp.Request | bp.Reply, bool]] = {
    "identify-request": (1, bp.Command.IDENTIFY, bp.Identify(), False),
    "identify-reply": (1, bp.Command.IDENTIFY, IDENT, True),
    "set-inputs-request": (2, bp.Command.SET_INPUTS, bp.SetInputs([0, 3], [0.5, -1.25]), False),
    "set-inputs-reply": (2, bp.Command.SET_INPUTS, bp.Ack(), True),
    "set-inputs-block-request": (3, bp.Command.SET_INPUTS, bp.SetInputs([4, 5], [1.0, 2.0]), False),
    "read-nodes-request": (
        4, bp.Command.READ_NODES, bp.ReadNodes([0, 5], 16, bp.ReadMode.MEAN), False
    ),
    "read-nodes-mean-reply": (
        4,
        bp.Command.READ_NODES,
        bp.ReadNodesMeanReply(16, [0.25, -0.125], [2.0**-10, 2.0**-9], [0, 2], 1.5, 1.5003),
        True,
    ),
    "pulse-request": (5, bp.Command.PULSE, bp.Pulse([5, 17], [3, -2], 1.5, 1e-6), False),
    "pulse-reply": (5, bp.Command.PULSE, bp.PulseReply(False, [3, -2], [0, 1]), True),
    "error-reply": (
        6,
        bp.Command.SET_INPUTS,
        bp.ErrorReply(bp.ErrorCode.OUT_OF_RANGE, "input 12 V beyond 10 V"),
        True,
    ),
    "read-conductance-request": (
        7, bp.Command.READ_CONDUCTANCE, bp.ReadConductance([17], 0.2), False
    ),
    "read-conductance-reply": (
        7,
        bp.Command.READ_CONDUCTANCE,
        bp.ReadConductanceReply([5e-5]),
        True,
    ),
    "last-reply-request": (8, bp.Command.LAST_REPLY, bp.LastReply(), False),
    "last-reply-reply": (
        8,
        bp.Command.LAST_REPLY,
        # the kept reply is the pulse-reply example's frame
        bp.LastReplyReply(bp.Frame(5, 0xB0, bytes.fromhex("00 02000000 03000000 feffffff 00 01"))),
        True,
    ),
}


# ---------------------------------------------------------------------------
# The specification's worked examples
# ---------------------------------------------------------------------------


def test_the_spec_has_every_required_example_and_no_unchecked_one() -> None:
    frames = doc_frames()
    assert set(frames) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_codec_matches_the_spec_example(name: str) -> None:
    raw = doc_frames()[name]
    seq, cmd, msg, is_reply = EXPECTED[name]
    # encoding the meaning gives the documented bytes ...
    if is_reply:
        assert isinstance(msg, bp.Reply)
        assert bp.encode_reply(seq, cmd, msg) == raw
    else:
        assert isinstance(msg, bp.Request)
        assert bp.encode_request(seq, msg) == raw
    # ... and decoding the documented bytes gives the meaning back
    frame = bp.decode_frame(raw)
    assert frame.seq == seq and frame.code == cmd and frame.is_reply == is_reply
    assert frame.to_bytes() == raw
    if isinstance(msg, bp.ErrorReply):
        with pytest.raises(bp.BoardError) as ei:
            bp.decode_reply(frame, cmd)
        assert ei.value.error_code == msg.code
        assert ei.value.board_message == msg.message
        assert ei.value.seq == seq
        assert frame.is_error
    elif is_reply:
        assert same(bp.decode_reply(frame, cmd), msg)
    else:
        assert same(bp.decode_request(frame), msg)


def test_last_reply_without_a_kept_reply_and_bad_layouts() -> None:
    none = bp.encode_reply(9, bp.Command.LAST_REPLY, bp.LastReplyReply(None))
    assert bp.decode_reply(bp.decode_frame(none), bp.Command.LAST_REPLY) == bp.LastReplyReply(None)
    with pytest.raises(bp.ProtocolError, match="present byte 2"):
        bp.LastReplyReply.parse(b"\x02")
    with pytest.raises(bp.ProtocolError, match="not a reply"):
        bp.LastReplyReply.parse(b"\x01\x05\x00\x30")  # a request's command byte
    with pytest.raises(bp.ProtocolError, match="beyond its layout"):
        bp.LastReplyReply.parse(b"\x00\x00")


def test_the_documented_crc_is_zlib_crc32() -> None:
    # the spec states the parameters and the check value of CRC-32/ISO-HDLC
    assert zlib.crc32(b"123456789") == 0xCBF43926
    raw = doc_frames()["identify-request"]
    assert struct.unpack("<I", raw[-4:])[0] == zlib.crc32(raw[1:-4])


def test_command_table_matches_the_spec() -> None:
    text = DOC.read_text(encoding="utf-8")
    for cmd in bp.Command:
        row = re.search(rf"\| `0x{int(cmd):02X}` \| {cmd.name} \| (\*\*no\*\*|yes) \|", text)
        assert row, f"{cmd.name} missing from the command table"
        assert (row.group(1) == "yes") == (cmd in bp.IDEMPOTENT_COMMANDS)
    for code in bp.ErrorCode:
        assert re.search(rf"\| {int(code)} \| {code.name} \|", text), code.name
    for ps in bp.PulseStatus:
        assert re.search(rf"\| {int(ps)} \| {ps.name} \|", text), ps.name


def test_pulse_status_and_sample_flags_share_the_device_codes() -> None:
    for ps in ProgramStatus:
        assert bp.PulseStatus[ps.name] == ps
    assert (SampleFlag.OVERRANGE, SampleFlag.COMPLIANCE) == (1, 2)


# ---------------------------------------------------------------------------
# Round trips (hypothesis)
# ---------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
anyfloat = st.floats(width=64)  # NaN and inf must survive the wire bit-exactly
seqs = st.integers(0, 0xFFFF)


@st.composite
def channel_sets(draw: st.DrawFn, max_size: int = 40) -> list[int]:
    if draw(st.booleans()):
        first = draw(st.integers(0, 0xFFFF - max_size))
        return list(range(first, first + draw(st.integers(0, max_size))))
    return draw(st.lists(st.integers(0, 0xFFFF), max_size=max_size, unique=True))


@st.composite
def requests(draw: st.DrawFn) -> bp.Request:
    kind = draw(st.sampled_from(list(bp.Command)))
    if kind in (bp.Command.IDENTIFY, bp.Command.GET_STATE, bp.Command.SAFE_STATE):
        return {bp.Command.IDENTIFY: bp.Identify, bp.Command.GET_STATE: bp.GetState,
                bp.Command.SAFE_STATE: bp.SafeState}[kind]()
    if kind in (bp.Command.SET_INPUTS, bp.Command.SET_NUDGE_CURRENTS, bp.Command.SET_BIAS_CURRENTS):
        ch = draw(channel_sets())
        vals = draw(st.lists(anyfloat, min_size=len(ch), max_size=len(ch)))
        cls = {bp.Command.SET_INPUTS: bp.SetInputs,
               bp.Command.SET_NUDGE_CURRENTS: bp.SetNudgeCurrents,
               bp.Command.SET_BIAS_CURRENTS: bp.SetBiasCurrents}[kind]
        return cls(np.array(ch, dtype=np.int64), vals)
    if kind == bp.Command.READ_NODES:
        ch = draw(st.lists(st.integers(0, 0xFFFF), max_size=40))  # repeats allowed
        return bp.ReadNodes(np.array(ch, dtype=np.int64), draw(st.integers(1, 2**32 - 1)),
                         draw(st.sampled_from(list(bp.ReadMode))))
    if kind == bp.Command.READ_CONDUCTANCE:
        cp = draw(st.lists(st.integers(0, 2**32 - 1), max_size=40))
        v = draw(finite.filter(lambda x: x != 0))
        return bp.ReadConductance(np.array(cp, dtype=np.int64), v)
    cp = draw(st.lists(st.integers(0, 2**32 - 1), max_size=40, unique=True))
    counts = draw(st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=len(cp),
                           max_size=len(cp)))
    pos = st.floats(min_value=1e-300, max_value=1e300)
    return bp.Pulse(np.array(cp, dtype=np.int64), np.array(counts, dtype=np.int64),
                 draw(pos), draw(pos))


@settings(max_examples=300, deadline=None)
@given(requests(), seqs)
def test_every_request_round_trips(req: bp.Request, seq: int) -> None:
    raw = bp.encode_request(seq, req)
    frame = bp.decode_frame(raw)
    assert (frame.seq, frame.code, frame.is_reply) == (seq, req.COMMAND, False)
    back = bp.decode_request(frame)
    assert same(back, req)
    assert bp.encode_request(seq, back) == raw


text8 = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)


@st.composite
def replies(draw: st.DrawFn) -> tuple[bp.Command, bp.Reply]:
    kind = draw(st.sampled_from(["ident", "state", "ack", "mean", "samples", "pulse", "g",
                                 "error"]))
    u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)
    if kind == "ident":
        fields = {}
        for f in dataclasses.fields(bp.IdentifyReply):
            name, t = f.name, str(f.type)
            if name == "protocol_version":
                fields[name] = draw(st.integers(0, 255))
            elif name in ("n_crosspoints", "max_samples", "max_pulses_per_crosspoint"):
                fields[name] = draw(u32)
            elif t == "int":
                fields[name] = draw(u16)
            elif t == "float":
                fields[name] = draw(anyfloat)
            else:
                fields[name] = draw(text8)
        return bp.Command.IDENTIFY, bp.IdentifyReply(**fields)
    if kind == "state":
        arrs = [draw(st.lists(anyfloat, max_size=20)) for _ in range(3)]
        return bp.Command.GET_STATE, bp.StateReply(draw(st.booleans()), *arrs)
    if kind == "ack":
        command = draw(st.sampled_from([bp.Command.SAFE_STATE, bp.Command.SET_INPUTS,
                                        bp.Command.SET_NUDGE_CURRENTS,
                                        bp.Command.SET_BIAS_CURRENTS]))
        return command, bp.Ack()
    if kind == "mean":
        k = draw(st.integers(0, 20))
        fl = st.lists(anyfloat, min_size=k, max_size=k)
        return bp.Command.READ_NODES, bp.ReadNodesMeanReply(
            draw(st.integers(1, 2**32 - 1)), draw(fl), draw(fl),
            draw(st.lists(st.integers(0, 255), min_size=k, max_size=k)),
            draw(anyfloat), draw(anyfloat),
        )
    if kind == "samples":
        n, k = draw(st.integers(1, 8)), draw(st.integers(0, 8))
        s = np.array(draw(st.lists(anyfloat, min_size=n * k, max_size=n * k))).reshape(n, k)
        f = np.array(draw(st.lists(st.integers(0, 255), min_size=n * k, max_size=n * k)))
        t = draw(st.lists(anyfloat, min_size=n, max_size=n))
        flags = f.reshape(n, k).astype(np.uint8)
        return bp.Command.READ_NODES, bp.ReadNodesSamplesReply(s, flags, t)
    if kind == "pulse":
        k = draw(st.integers(0, 20))
        a = draw(st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=k, max_size=k))
        s = draw(st.lists(st.sampled_from(list(bp.PulseStatus)), min_size=k, max_size=k))
        return bp.Command.PULSE, bp.PulseReply(draw(st.booleans()), np.array(a, dtype=np.int64),
                                         np.array(s, dtype=np.uint8))
    if kind == "g":
        return bp.Command.READ_CONDUCTANCE, bp.ReadConductanceReply(
            draw(st.lists(anyfloat, max_size=30)))
    return draw(st.sampled_from(list(bp.Command))), bp.ErrorReply(
        draw(st.sampled_from(list(bp.ErrorCode))), draw(text8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies(), seqs)
def test_every_reply_round_trips(item: tuple[bp.Command, bp.Reply], seq: int) -> None:
    cmd, rep = item
    raw = bp.encode_reply(seq, cmd, rep)
    frame = bp.decode_frame(raw)
    assert frame.seq == seq and frame.code == cmd and frame.is_reply
    if isinstance(rep, bp.ErrorReply):
        assert frame.is_error
        with pytest.raises(bp.BoardError) as ei:
            bp.decode_reply(frame, cmd)
        assert ei.value.error_code == rep.code and ei.value.board_message == rep.message
        return
    back = bp.decode_reply(frame, cmd)
    assert same(back, rep)
    assert bp.encode_reply(seq, cmd, back) == raw


@settings(max_examples=200, deadline=None)
@given(seqs, st.integers(0, 255), st.binary(max_size=300))
def test_raw_frames_round_trip(seq: int, command: int, payload: bytes) -> None:
    raw = bp.encode_frame(seq, command, payload)
    assert len(raw) == bp.FRAME_OVERHEAD + len(payload)
    assert bp.decode_frame(raw) == bp.Frame(seq, command, payload)


def test_a_long_error_message_is_cut_at_255_bytes_on_a_character_boundary() -> None:
    raw = bp.encode_error(9, bp.Command.PULSE, bp.ErrorCode.INTERNAL, "é" * 300)
    with pytest.raises(bp.BoardError) as ei:
        bp.decode_reply(bp.decode_frame(raw), bp.Command.PULSE)
    assert ei.value.board_message == "é" * 127


# ---------------------------------------------------------------------------
# Rejection: truncated, corrupt, oversize, malformed
# ---------------------------------------------------------------------------

GOOD = bp.encode_request(0x1234, bp.ReadNodes([1, 2, 3], 8, bp.ReadMode.SAMPLES))


def test_every_truncation_is_rejected() -> None:
    for n in range(len(GOOD)):
        with pytest.raises(bp.FrameError) as ei:
            bp.decode_frame(GOOD[:n])
        assert ei.value.reason == "truncated"


def test_every_single_bit_flip_is_rejected() -> None:
    for i in range(len(GOOD)):
        for bit in range(8):
            bad = bytearray(GOOD)
            bad[i] ^= 1 << bit
            with pytest.raises(bp.FrameError):
                bp.decode_frame(bytes(bad))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"\x5a" + b[1:], "bad_start"),
        (lambda b: b[:1] + b"\x02" + b[2:], "bad_version"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "bad_crc"),
        (lambda b: b + b"\x00", "trailing"),
        (lambda b: b[:2] + struct.pack("<I", bp.MAX_PAYLOAD_BYTES + 1) + b[6:], "oversize"),
    ],
)
def test_frame_errors_name_the_reason(mutate: Any, reason: str) -> None:
    with pytest.raises(bp.FrameError) as ei:
        bp.decode_frame(mutate(GOOD))
    assert ei.value.reason == reason
    assert isinstance(ei.value, HwloopError)


def test_the_payload_limit_is_enforced_on_encode_and_decode() -> None:
    big = bp.encode_frame(1, bp.Command.PULSE, bytes(bp.MAX_PAYLOAD_BYTES))
    assert bp.decode_frame(big).payload == bytes(bp.MAX_PAYLOAD_BYTES)
    with pytest.raises(bp.FrameError) as ei:
        bp.encode_frame(1, bp.Command.PULSE, bytes(bp.MAX_PAYLOAD_BYTES + 1))
    assert ei.value.reason == "oversize"
    with pytest.raises(bp.FrameError):
        bp.decode_frame(big, max_payload=1000)


def test_unknown_commands_and_bad_layouts_carry_the_board_error_code() -> None:
    with pytest.raises(bp.ProtocolError) as ei:
        bp.decode_request(bp.Frame(1, 0x2F, b""))
    assert ei.value.error_code == bp.ErrorCode.UNKNOWN_COMMAND
    payload = bp.SetInputs([0, 3], [1.0, 2.0]).payload()
    with pytest.raises(bp.ProtocolError) as ei:
        bp.decode_request(bp.Frame(1, bp.Command.SET_INPUTS, payload[:-1]))  # truncated payload
    assert ei.value.error_code == bp.ErrorCode.BAD_LENGTH
    with pytest.raises(bp.ProtocolError) as ei:
        bp.decode_request(bp.Frame(1, bp.Command.SET_INPUTS, payload + b"\x00"))  # trailing bytes
    assert ei.value.error_code == bp.ErrorCode.BAD_LENGTH
    with pytest.raises(bp.ProtocolError) as ei:
        bp.decode_request(bp.Frame(1, bp.Command.SET_INPUTS, b"\x07" + payload[1:]))  # bad layout
    assert ei.value.error_code == bp.ErrorCode.BAD_ARGUMENT
    with pytest.raises(bp.ProtocolError):  # duplicate channels on the wire
        payload = struct.pack("<BHHHdd", 0, 2, 1, 1, 0, 0)
        bp.decode_request(bp.Frame(1, bp.Command.SET_INPUTS, payload))
    with pytest.raises(bp.ProtocolError):  # a reply is not a request
        bp.decode_request(bp.Frame(1, bp.Command.IDENTIFY | 0x80, b""))


def test_decode_reply_checks_kind_and_command() -> None:
    with pytest.raises(bp.ProtocolError):
        bp.decode_reply(bp.Frame(1, bp.Command.GET_STATE, b""), bp.Command.GET_STATE)  # a request
    with pytest.raises(bp.ProtocolError):
        bp.decode_reply(bp.Frame(1, bp.Command.GET_STATE | 0x80, b""), bp.Command.SAFE_STATE)
    with pytest.raises(bp.ProtocolError):  # unknown error code
        bp.decode_reply(bp.Frame(1, bp.Command.PULSE | 0xC0, b"\x63\x00"), bp.Command.PULSE)


@pytest.mark.parametrize(
    "make",
    [
        lambda: bp.SetInputs([1, 1], [0.0, 0.0]),  # duplicate channel
        lambda: bp.SetInputs([70000], [0.0]),  # beyond uint16
        lambda: bp.SetInputs([0, 1], [0.0]),  # lengths differ
        lambda: bp.SetInputs([0.5], [0.0]),  # not an integer
        lambda: bp.ReadNodes([0], 0),  # no samples
        lambda: bp.ReadNodes([0], 1, 7),  # bad mode
        lambda: bp.Pulse([0], [1], 0.0, 1e-6),  # zero amplitude
        lambda: bp.Pulse([0], [1], 1.0, float("nan")),  # NaN width
        lambda: bp.Pulse([0, 0], [1, 1], 1.0, 1e-6),  # duplicate crosspoint
        lambda: bp.Pulse([0], [2**31], 1.0, 1e-6),  # beyond int32
        lambda: bp.ReadConductance([0], 0.0),  # zero read voltage
        lambda: bp.ReadConductance([-1], 0.2),  # negative crosspoint
    ],
)
def test_messages_reject_unencodable_arguments(make: Any) -> None:
    with pytest.raises(bp.ProtocolError):
        make()


def test_sequence_and_command_ranges() -> None:
    with pytest.raises(bp.ProtocolError):
        bp.encode_frame(0x10000, 1)
    with pytest.raises(bp.ProtocolError):
        bp.encode_frame(1, 256)


# ---------------------------------------------------------------------------
# The streaming decoder
# ---------------------------------------------------------------------------

FRAMES = [
    bp.encode_request(i, r)
    for i, r in enumerate(
        [bp.Identify(), bp.SetInputs([0, 3], [0.5, -1.25]), bp.ReadNodes([1], 4), bp.SafeState(),
         bp.Pulse([5, 17], [3, -2], 1.5, 1e-6)],
        start=100,
    )
]


def frames_of(events: list[bp.Frame | bp.FrameFault]) -> list[bytes]:
    return [e.to_bytes() for e in events if isinstance(e, bp.Frame)]


def test_decoder_finds_frames_split_at_every_byte() -> None:
    stream = b"".join(FRAMES)
    dec = bp.FrameDecoder()
    got: list[bp.Frame | bp.FrameFault] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert frames_of(got) == FRAMES
    assert not any(isinstance(e, bp.FrameFault) for e in got)
    assert not dec.pending


def test_decoder_wanted_never_overreads_a_clean_stream() -> None:
    stream = b"".join(FRAMES)
    dec = bp.FrameDecoder()
    pos, got = 0, []
    while pos < len(stream):
        n = dec.wanted()
        got += dec.feed(stream[pos : pos + n])
        pos += n
        # the last read ends exactly at a frame boundary
        assert pos <= len(stream)
    assert frames_of(got) == FRAMES


def test_decoder_skips_garbage_and_reports_it() -> None:
    dec = bp.FrameDecoder()
    got = dec.feed(b"\x00\x01hello" + FRAMES[0] + b"\xff" * 7 + FRAMES[1])
    assert frames_of(got) == FRAMES[:2]
    faults = [e for e in got if isinstance(e, bp.FrameFault)]
    garbage = bp.FaultKind.GARBAGE
    assert [(f.kind, f.nbytes) for f in faults] == [(garbage, 7), (garbage, 7)]


def test_decoder_resynchronises_after_a_corrupt_frame() -> None:
    bad = bytearray(FRAMES[1])
    bad[12] ^= 0x40  # payload damaged: CRC fails
    dec = bp.FrameDecoder()
    got = dec.feed(FRAMES[0] + bytes(bad) + FRAMES[2])
    assert frames_of(got) == [FRAMES[0], FRAMES[2]]
    crc = [e for e in got if isinstance(e, bp.FrameFault) and e.kind == bp.FaultKind.BAD_CRC]
    assert crc and crc[0].seq == 101 and crc[0].command == bp.Command.SET_INPUTS


def test_decoder_skips_oversize_headers() -> None:
    dec = bp.FrameDecoder(max_payload=64)
    fake = b"\xa5\x01" + struct.pack("<IHB", 10_000, 7, 1)
    got = dec.feed(fake + FRAMES[0])
    assert frames_of(got) == [FRAMES[0]]
    assert any(isinstance(e, bp.FrameFault) and e.kind == bp.FaultKind.OVERSIZE and e.seq == 7
               for e in got)


def test_a_false_start_with_a_long_length_is_dropped_after_the_frame_gap() -> None:
    # A5 01 + a plausible length: the decoder waits for bytes that never come, until
    # the reader calls drop_pending() after the frame gap; the real frame inside is found
    dec = bp.FrameDecoder()
    got = dec.feed(b"\xa5\x01\x00\x10\x00\x00" + FRAMES[0])
    assert frames_of(got) == [] and dec.pending
    got = dec.drop_pending()
    assert frames_of(got) == [FRAMES[0]]
    assert got[0] == bp.FrameFault(bp.FaultKind.STALE, 1)
    assert not dec.pending
    assert dec.drop_pending() == []


def test_decoder_reset_forgets_a_partial_frame() -> None:
    dec = bp.FrameDecoder()
    dec.feed(FRAMES[0][:5])
    assert dec.pending and dec.buffered == 5
    dec.reset()
    assert frames_of(dec.feed(FRAMES[1])) == [FRAMES[1]]


# garbage with false starts (start byte, start + version, plausible headers) and
# truncated real frames mixed in
garbage = st.lists(
    st.one_of(
        st.binary(max_size=8),
        st.sampled_from([b"\xa5", b"\xa5\x01", b"\xa5\x01\x20\x00\x00\x00\x01\x00\x01",
                         b"\xa5\x01\x00\x00\x00\x00"]),
        st.sampled_from(FRAMES).flatmap(lambda f: st.integers(1, len(f) - 1).map(lambda n: f[:n])),
    ),
    max_size=4,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(garbage, st.sampled_from(FRAMES)), max_size=6),
    garbage,
    st.lists(st.integers(1, 40), min_size=1, max_size=20),
)
def test_frames_survive_any_garbage_and_any_chunking(
    parts: list[tuple[bytes, bytes]], tail: bytes, cuts: list[int]
) -> None:
    """Whatever garbage surrounds them (false starts included), every frame is recovered."""
    stream = b"".join(g + f for g, f in parts) + tail
    dec = bp.FrameDecoder(max_payload=1 << 16)
    got: list[bp.Frame | bp.FrameFault] = []
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        got += dec.feed(stream[pos : pos + n])
        pos += n
        i += 1
    while dec.pending:  # the stream went silent: drop stalled false starts
        got += dec.drop_pending()
    found = frames_of(got)
    # every real frame is found, in order (garbage could only add a frame by forging a CRC)
    it = iter(found)
    assert all(any(f == g for g in it) for _, f in parts)
