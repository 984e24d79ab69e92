"""VMC over OSC: a real python-osc server on loopback receives and checks a short stream."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from talkmotion import labels
from talkmotion.frames import Frames
from talkmotion.rotation import quaternion_multiply
from talkmotion.sinks.udp import SinkError
from talkmotion.sinks.vmc import (GAZE_TARGET_M, MAX_DATAGRAM_BYTES, ROLE_PORTS, VRM0_PRESETS, VmcSink, frame_messages,
                                  pack_bundles)

FPS = 30
PERFECT_SYNC = {labels.to_pascal(n) for n in labels.BLENDSHAPES}


class Receiver:
    """python-osc UDP server recording every message as (address, args), in arrival order."""

    def __init__(self):
        self.messages: list[tuple[str, tuple]] = []
        self.lock = threading.Lock()
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._record)
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _record(self, address, *args):
        with self.lock:
            self.messages.append((address, args))

    def wait_for(self, address: str, count: int, timeout: float = 5.0) -> list[tuple[str, tuple]]:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if sum(a == address for a, _ in self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.01)
        raise AssertionError(f"only {sum(a == address for a, _ in self.messages)} of {count} {address} arrived")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _frames(n: int, head=(0.0, 0.0, 0.0)) -> Frames:
    values = np.zeros((n, labels.NUM_CHANNELS), np.float32)
    values[:, labels.index("jawOpen")] = np.linspace(0.0, 0.9, n)
    values[:, labels.index("eyeBlinkLeft")] = 0.7
    values[:, labels.index("eyeBlinkRight")] = 0.3
    values[:, labels.HEAD_SLICE] = head
    return Frames(values, fps=FPS)


def _per_frame(messages):
    """Split the message stream at each /VMC/Ext/OK, which opens a frame."""
    frames, current = [], None
    for address, args in messages:
        if address == "/VMC/Ext/OK":
            current = []
            frames.append(current)
        current.append((address, args))
    return frames


def test_short_stream_arrives_as_marionette_messages(receiver):
    frames = _frames(4)
    sink = VmcSink(f"127.0.0.1:{receiver.port}")
    sink.open(FPS)
    sink.write(frames)
    sink.close()
    per_frame = _per_frame(receiver.wait_for("/VMC/Ext/Bone/Pos", 2 * len(frames)))
    assert len(per_frame) == len(frames)
    for i, msgs in enumerate(per_frame):
        addresses = [a for a, _ in msgs]
        assert addresses[:2] == ["/VMC/Ext/OK", "/VMC/Ext/T"]
        assert msgs[0][1] == (1,) and isinstance(msgs[0][1][0], int)
        assert msgs[1][1][0] == pytest.approx(i / FPS, abs=1e-6)
        apply_at = addresses.index("/VMC/Ext/Blend/Apply")
        assert set(addresses[2:apply_at]) == {"/VMC/Ext/Blend/Val"}  # every value before Apply
        values = {args[0]: args[1] for a, args in msgs if a == "/VMC/Ext/Blend/Val"}
        assert set(values) == PERFECT_SYNC | set(VRM0_PRESETS.values())
        assert all(isinstance(v, float) for v in values.values())
        assert values["JawOpen"] == pytest.approx(frames.values[i, labels.index("jawOpen")], abs=1e-6)
        # VRM 0.x presets: "A" follows the open jaw; the shared blink goes to Blink, the rest to Blink_L.
        assert values["Blink"] == pytest.approx(0.3) and values["Blink_L"] == pytest.approx(0.4)
        assert values["Blink_R"] == pytest.approx(0.0)
        bones = [args for a, args in msgs if a == "/VMC/Ext/Bone/Pos"]
        assert [b[0] for b in bones] == ["Neck", "Head"] and all(len(b) == 8 for b in bones)
    a_values = [dict((args[0], args[1]) for a, args in m if a == "/VMC/Ext/Blend/Val")["A"] for m in per_frame]
    np.testing.assert_allclose(a_values, labels.to_vrm_presets(frames.blendshapes)["aa"], atol=1e-6)
    assert a_values[0] == 0.0 and a_values[-1] > 0.4  # the open jaw reads as "A"


@pytest.mark.parametrize("head, expected_axis", [
    ((0.0, 30.0, 0.0), (0.0, -1.0, 0.0)),   # turn to the avatar's left = negative Unity yaw
    ((20.0, 0.0, 0.0), (1.0, 0.0, 0.0)),    # look down = positive Unity pitch (about +X)
    ((0.0, 0.0, 15.0), (0.0, 0.0, -1.0)),   # tilt to the right shoulder = negative Unity roll
])
def test_head_rotation_is_converted_to_unity(receiver, head, expected_axis):
    sink = VmcSink(f"127.0.0.1:{receiver.port}", names="vrm0")
    sink.open(FPS)
    sink.write(_frames(1, head=head))
    sink.close()
    bones = {args[0]: np.array(args[4:8]) for a, args in receiver.wait_for("/VMC/Ext/Bone/Pos", 2)
             if a == "/VMC/Ext/Bone/Pos"}
    total = quaternion_multiply(bones["Neck"], bones["Head"])  # the neck carries the head
    angle = np.radians(max(abs(a) for a in head))
    expected = np.array([*(np.sin(angle / 2) * np.array(expected_axis)), np.cos(angle / 2)])
    np.testing.assert_allclose(total, expected, atol=1e-5)
    assert 0 < bones["Neck"][3] < 1 and 0 < bones["Head"][3] < 1  # both joints bend


def test_name_sets(receiver):
    sink = VmcSink(f"127.0.0.1:{receiver.port}", names="perfect-sync")
    sink.open(FPS)
    sink.write(_frames(1))
    sink.close()
    names = {args[0] for a, args in receiver.wait_for("/VMC/Ext/Bone/Pos", 2) if a == "/VMC/Ext/Blend/Val"}
    assert names == PERFECT_SYNC
    with pytest.raises(SinkError, match="unknown name set 'arkit'"):
        VmcSink("127.0.0.1:39540", names="arkit")


def test_performer_role_sends_only_the_assistant_messages(receiver):
    """VMC spec, Assistant → Performer: Blend/Val, Blend/Apply, Set/Eye; no Bone/Pos, OK or T."""
    values = np.zeros((2, labels.NUM_CHANNELS), np.float32)
    values[:, labels.index("jawOpen")] = 0.5
    values[:, labels.index("yaw")] = 20.0                                                     # ignored: no bones
    values[1, labels.index("eyeLookOutLeft")] = values[1, labels.index("eyeLookInRight")] = 1.0  # look left
    sink = VmcSink(f"127.0.0.1:{receiver.port}", names="perfect-sync", role="performer")
    sink.open(FPS)
    sink.write(Frames(values, fps=FPS))
    sink.close()
    messages = receiver.wait_for("/VMC/Ext/Set/Eye", 2)
    assert {a for a, _ in messages} == {"/VMC/Ext/Blend/Val", "/VMC/Ext/Blend/Apply", "/VMC/Ext/Set/Eye"}
    eyes = [args for a, args in messages if a == "/VMC/Ext/Set/Eye"]
    assert eyes[0][0] == 1 and np.allclose(eyes[0][1:], [0.0, 0.0, GAZE_TARGET_M], atol=1e-6)  # straight ahead
    # a full look to the avatar's left is 30 degrees toward its left: Unity's -X
    side = np.radians(labels.EYE_LOOK_FULL_YAW_DEG)
    assert np.allclose(eyes[1][1:], [-np.sin(side), 0.0, np.cos(side)], atol=1e-5)
    jaw = [args[1] for a, args in messages if a == "/VMC/Ext/Blend/Val" and args[0] == "JawOpen"]
    assert jaw == [pytest.approx(0.5)] * 2


def test_default_ports_follow_the_role():
    assert VmcSink("10.0.0.2").port == ROLE_PORTS["marionette"] == 39539
    assert VmcSink("10.0.0.2", role="performer").port == ROLE_PORTS["performer"] == 39540
    assert VmcSink("10.0.0.2:9000", role="performer").port == 9000
    with pytest.raises(SinkError, match="unknown role 'assistant'"):
        VmcSink("10.0.0.2", role="assistant")


def test_bundles_stay_under_one_ethernet_payload():
    msgs = frame_messages(0.0, [(f"Name{i}", 0.5) for i in range(80)], np.array([0, 0, 0, 1.0]),
                          np.array([0, 0, 0, 1.0]))
    datagrams = pack_bundles(msgs)
    assert len(datagrams) > 1 and all(len(d) <= MAX_DATAGRAM_BYTES for d in datagrams)
    assert all(d.startswith(b"#bundle\x00") for d in datagrams)


def test_unreachable_host_is_a_clear_error():
    with pytest.raises(SinkError, match=r"VMC no-such-host\.invalid:39539: cannot resolve host"):
        VmcSink("no-such-host.invalid").open(FPS)


def test_no_receiver_listening_is_not_fatal():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # now nothing listens on `port`
    sink = VmcSink(f"127.0.0.1:{port}")
    sink.open(FPS)
    for _ in range(3):
        sink.write(_frames(2))
    assert sink.sender.refused >= 1  # the kernel said "port unreachable" and we carried on
    sink.close()


# --- the `stream` command end to end, and its pacing ---------------------------------

@pytest.mark.slow
def test_stream_command_sends_a_file_to_vmc_and_live_link(receiver, tiny_model, tmp_path, capsys):
    from talkmotion.audio import num_frames, write_wav
    from talkmotion.checkpoint import save_checkpoint
    from talkmotion.cli import main
    from talkmotion.sinks.livelink_udp import decode_packet

    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, tiny_model)
    t = np.arange(8000) / 16000
    write_wav(tmp_path / "speech.wav", 0.3 * np.sin(2 * np.pi * 200 * t) * (1 - np.cos(2 * np.pi * 4 * t)))
    livelink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    livelink.bind(("127.0.0.1", 0))
    livelink.settimeout(5)
    try:
        code = main(["stream", str(tmp_path / "speech.wav"), "--model", str(checkpoint),
                     "--vmc", f"127.0.0.1:{receiver.port}", "--vmc-names", "vrm0",
                     "--livelink", f"127.0.0.1:{livelink.getsockname()[1]}", "-o", str(tmp_path / "out.json")])
        expected = num_frames(8000)
        packets = [decode_packet(livelink.recv(2048)) for _ in range(expected)]
    finally:
        livelink.close()
    assert code == 0
    per_frame = _per_frame(receiver.wait_for("/VMC/Ext/Bone/Pos", 2 * expected))
    assert len(per_frame) == expected
    times = [msgs[1][1][0] for msgs in per_frame]
    np.testing.assert_allclose(times, np.arange(expected) / FPS, atol=1e-6)  # every frame, in order
    frames_file = json.loads((tmp_path / "out.json").read_text())
    jaw = [row[labels.index("jawOpen")] for row in frames_file["frames"]]
    # The live outputs carry the same frames as the file written beside them.
    a_sent = [dict((args[0], args[1]) for a, args in m if a == "/VMC/Ext/Blend/Val")["A"] for m in per_frame]
    a_file = labels.to_vrm_presets(np.asarray(frames_file["frames"])[:, labels.BLENDSHAPE_SLICE])["aa"]
    np.testing.assert_allclose(a_sent, a_file, atol=1e-4)
    np.testing.assert_allclose([p["values"]["jawOpen"] for p in packets], np.clip(jaw, 0, 1), atol=1e-4)
    assert "frames" in capsys.readouterr().err


@pytest.mark.slow
def test_stream_command_errors_are_one_line(tmp_path, capsys, tiny_model):
    from talkmotion.checkpoint import save_checkpoint
    from talkmotion.cli import main

    assert main(["stream", str(tmp_path / "missing.wav"), "--vmc", "127.0.0.1"]) == 2
    assert "missing.wav: no such file" in capsys.readouterr().err
    assert main(["stream", "mic"]) == 2
    assert "no output given" in capsys.readouterr().err
    save_checkpoint(tmp_path / "tiny.safetensors", tiny_model)
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    assert main(["stream", str(tmp_path / "a.wav"), "--model", str(tmp_path / "tiny.safetensors"),
                 "--vmc", "no-such-host.invalid:39540"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resolve host 'no-such-host.invalid'" in err


def test_pacer_spreads_frame_groups_to_their_due_times():
    import asyncio

    from talkmotion.live import Pacer

    now = [100.0]
    emitted = []

    async def fake_sleep(seconds):
        now[0] += seconds

    pacer = Pacer(FPS, 0.1, lambda f: emitted.append((now[0], f.start, len(f))), clock=lambda: now[0],
                  sleep=fake_sleep)
    pacer.start()
    group = Frames(np.zeros((3, labels.NUM_CHANNELS)), fps=FPS, start=0)
    asyncio.run(pacer.send(group))       # three frames made at once leave 1/fps apart
    now[0] += 0.5                        # the model stalls: frames 3-4 are already late
    asyncio.run(pacer.send(Frames(np.zeros((2, labels.NUM_CHANNELS)), fps=FPS, start=3)))
    assert [(round(t - 100.0, 6), s, n) for t, s, n in emitted] == [
        (0.1, 0, 1), (round(0.1 + 1 / 30, 6), 1, 1), (round(0.1 + 2 / 30, 6), 2, 1), (round(0.1 + 2 / 30 + 0.5, 6), 3, 2)]
    assert pacer.stats.frames == 5 and pacer.stats.late_frames == 2
