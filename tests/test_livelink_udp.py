"""Live Link Face UDP: packets received on a real loopback socket, read as Unreal reads them."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.frames import Frames
from talkmotion.sinks.livelink_udp import (LIVE_LINK_ORDER, NUM_VALUES, LiveLinkPacketError,
                                           LiveLinkUdpSink, decode_packet, encode_packet)
from talkmotion.sinks.udp import SinkError, parse_address

FPS = 30


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def _frames(n: int, start: int = 0) -> Frames:
    rng = np.random.default_rng(0)
    values = np.zeros((n, labels.NUM_CHANNELS), np.float32)
    values[:, labels.BLENDSHAPE_SLICE] = rng.uniform(0, 1, (n, labels.NUM_BLENDSHAPES))
    values[:, labels.HEAD_SLICE] = rng.uniform(-20, 20, (n, labels.NUM_HEAD))
    return Frames(values, fps=FPS, start=start)


# --- a receiver written from Unreal's legacy ARKit Live Link source, not from our sink ---------------
# FAppleARKitLiveLinkRemoteListener::Tick reads, network byte order (FNboSerializeFromBuffer):
# uint8 PacketVer; FString DeviceId; FString SubjectName (int32 length + bytes each);
# FQualifiedFrameTime (int32 FrameNumber, float SubFrame, int32 Numerator, int32 Denominator);
# uint8 BlendShapeCount == EARFaceBlendShape::MAX; then that many floats, index = the enum value.
EAR_FACE_BLEND_SHAPE = (  # ARTrackable.h, enum order
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawLeft", "JawRight", "JawOpen", "MouthClose",
    "MouthFunnel", "MouthPucker", "MouthLeft", "MouthRight", "MouthSmileLeft", "MouthSmileRight",
    "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft",
    "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)


def unreal_read(data: bytes) -> dict:
    at = 0

    def take(fmt):
        nonlocal at
        out = struct.unpack_from(">" + fmt, data, at)
        at += struct.calcsize(">" + fmt)
        return out

    def fstring():
        nonlocal at
        (n,) = take("i")
        text = data[at:at + n].decode("utf-8")
        at += n
        return text

    (version,) = take("B")
    device, subject = fstring(), fstring()
    frame, subframe, numerator, denominator = take("ifii")
    (count,) = take("B")
    assert count == len(EAR_FACE_BLEND_SHAPE) and len(data) == at + 4 * count
    curves = dict(zip(EAR_FACE_BLEND_SHAPE, take(f"{count}f")))
    return {"version": version, "device": device, "subject": subject, "frame": frame,
            "rate": (numerator, denominator), "curves": curves}


def test_unreal_reads_the_head_as_degrees_over_180(receiver, tmp_path):
    """A frames file streamed over loopback: Unreal's ToBlendShapeMap unit (degrees / 180), its signs."""
    from talkmotion.frames import read_frames
    from talkmotion.sinks import file_sink

    source = _frames(6)
    source.values[:, labels.index("yaw")] = [10, -10, 30, 0, 5, -45]
    path = tmp_path / "take.json"
    json_sink = file_sink(path)
    json_sink.open(FPS)
    json_sink.write(source)
    json_sink.close(source.seconds)
    frames = read_frames(path)
    sink = LiveLinkUdpSink(f"127.0.0.1:{receiver.getsockname()[1]}", subject="Anna", first_frame=500)
    sink.open(FPS)
    sink.write(frames)
    sink.close()
    packets = [unreal_read(receiver.recv(2048)) for _ in range(len(frames))]
    assert [p["frame"] for p in packets] == list(range(500, 506))
    for p, row in zip(packets, frames.values):
        c = p["curves"]
        assert p["version"] == 6 and p["subject"] == "Anna" and p["rate"] == (FPS, 1)
        assert c["HeadYaw"] == pytest.approx(-row[labels.index("yaw")] / 180, abs=1e-6)
        assert c["HeadPitch"] == pytest.approx(row[labels.index("pitch")] / 180, abs=1e-6)
        assert c["HeadRoll"] == pytest.approx(-row[labels.index("roll")] / 180, abs=1e-6)
        for name in ("JawOpen", "JawLeft", "MouthRight", "EyeBlinkLeft", "TongueOut"):
            assert c[name] == pytest.approx(row[labels.index(name[0].lower() + name[1:])], abs=1e-6)
        assert c["LeftEyeYaw"] == c["RightEyePitch"] == 0.0
    # a 10-degree turn is 0.0556 to Unreal, not 0.1745 (radians would turn the head pi times too far)
    assert abs(packets[0]["curves"]["HeadYaw"]) == pytest.approx(10 / 180, abs=1e-6)


def test_stream_of_packets_decodes_to_frames(receiver):
    frames = _frames(5, start=10)
    sink = LiveLinkUdpSink(f"127.0.0.1:{receiver.getsockname()[1]}", subject="Anna", first_frame=1000)
    sink.open(FPS)
    sink.write(frames)
    sink.close()
    packets = [decode_packet(receiver.recv(2048)) for _ in range(len(frames))]
    assert [p["frame"] for p in packets] == [1010, 1011, 1012, 1013, 1014]
    for p, row in zip(packets, frames.values):
        assert p["subject"] == "Anna" and p["fps"] == FPS and p["version"] == 6
        for name in ("jawOpen", "eyeBlinkLeft", "mouthPucker", "tongueOut"):
            assert p["values"][name] == pytest.approx(row[labels.index(name)], abs=1e-6)
        assert p["values"]["headPitch"] == pytest.approx(row[labels.index("pitch")] / 180, abs=1e-6)
        assert p["values"]["leftEyeYaw"] == 0.0


def test_packet_layout_is_big_endian_version_6():
    values = np.arange(NUM_VALUES, dtype=np.float32) / 100
    data = encode_packet(values, frame=7, fps=60, subject="S", device="dev")
    assert data[0] == 6
    assert struct.unpack(">i", data[1:5]) == (3,) and data[5:8] == b"dev"
    assert struct.unpack(">i", data[8:12]) == (1,) and data[12:13] == b"S"
    assert struct.unpack(">ifii", data[13:29]) == (7, 0.0, 60, 1)
    assert data[29] == 61 and len(data) == 30 + 4 * 61
    # jawOpen is EARFaceBlendShape's 18th value (index 17)
    assert LIVE_LINK_ORDER[17] == "jawOpen"
    assert struct.unpack(">f", data[30 + 4 * 17: 34 + 4 * 17])[0] == pytest.approx(0.17)


def test_every_arkit_name_is_sent_once():
    assert sorted(LIVE_LINK_ORDER) == sorted(labels.BLENDSHAPES)


def test_bad_packets_are_refused_with_reasons():
    good = encode_packet(np.zeros(NUM_VALUES), frame=0, fps=30)
    with pytest.raises(LiveLinkPacketError, match="version 5"):
        decode_packet(b"\x05" + good[1:])
    with pytest.raises(LiveLinkPacketError, match="truncated"):
        decode_packet(good[:40])


def test_bad_addresses_name_the_problem():
    assert parse_address("10.0.0.5", 11111, "Live Link") == ("10.0.0.5", 11111)
    assert parse_address(":9000", 11111, "Live Link") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:9000", 11111, "Live Link") == ("::1", 9000)
    with pytest.raises(SinkError, match="not a number"):
        parse_address("host:abc", 11111, "Live Link")
    with pytest.raises(SinkError, match="outside"):
        parse_address("host:70000", 11111, "Live Link")
    with pytest.raises(SinkError, match="cannot resolve host 'no-such-host.invalid'"):
        LiveLinkUdpSink("no-such-host.invalid:11111").open(FPS)
