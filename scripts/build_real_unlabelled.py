"""Build data/real_unlabelled/: real human English speech without transcripts: `make unlabelled`.

    .venv/bin/python scripts/build_real_unlabelled.py [--out data/real_unlabelled] [--cache cache/real_unlabelled]

For teacher-student training: a teacher model labels the audio, so no transcript is needed.
Every source is a Debian binary package fetched from the pool by pinned file name, SHA-256
checked and unpacked with dpkg-deb (the helpers of scripts/build_devsets.py). Each clip chosen
is written as 16 kHz mono 16-bit WAV, DATA/<package>/<name>.wav; clips under 0.3 s or over 30 s,
near-silent ones and exact repeats of a clip already taken, are left out; silence
over 150 ms at either end is trimmed. DATA/manifest.tsv (path, package, version, licence,
duration_s, note) is written last; a rerun keeps the WAVs it finds. Levels are left as recorded.

  beneath-a-steel-sky 0.0372-8 (Revolution's BSD-like freeware licence, DFSG-free): the CD
        version's dialogue, the speech files (numbers 50000-59999) of sky.dsk/sky.dnr, RNC
        method-1 packed 8-bit 11 kHz; its voice cast, many characters.
  flight-of-the-amazon-queen 1.0.0-9 (BSD-like freeware licence): the talkie's speech, the
        *.SB entries of queen.1c (MP3) with dialogue, cutaway and Joe names; its voice cast.
        The few SB entries with other names (MIK_*, TOM_*, UNTITLE*, ROCKPAKS, BLANK000, GM*,
        DEBBIE_0, BLUEP*) are left out: not clearly dialogue. Sound effects are *.SAM.
  drascula 1.0+ds4-2 (Drascula licence, BSD-like freeware): the English talkie's en/*.ALS
        (raw 8-bit 11 kHz after a 32-byte header); S<n>.ALS are sound effects and left out.
        Unprefixed numbers are the player character; letter prefixes are other characters.
  tuxpaint-stamps-default 2022.06.04-1 (GPL-2): the spoken English stamp descriptions
        (NAME_desc.ogg; NAME_desc_LL.ogg are other languages, NAME.ogg mostly animal or
        object sounds) and the spoken digits of symbols/math (N.ogg US, N_en_GB.ogg British).
  klettres-data 22.12.3-1 (GPL-2+): en/ and en_GB/ letters and phonics syllables (two voices).
  kajongg 22.12.3-1 (GPL-2+): the four English mah-jongg voices (male1/2, female1/2: calls,
        tile names); de/ is German and left out. Recorded quietly (about -50 dBFS).
  boswars-data 2.7+svn160110-5 (GPL-2+): unit and building announcements ("engineer ready",
        "... under attack", "... completed"), the infantry's and buggy's acknowledgements
        (*_select, *_action, *_ready: "yes sir", "affirmative") and the spoken tutorial
        briefings; *_attack/_die, sfx_* and the vehicles' *_select/_action are effects.
  neverball-common 1.6.0+git20180603-3 (GPL-2+): the announcer (ready, set, go, time's up,
        game over, new record, par, birdie, ... player one-four); snd/gd/ is Gaelic.
  codec2-examples 1.0.5-1 (LGPL-2.1): the original (uncoded) speech samples: Harvard
        sentences, hams on air (cq_ref, g3plx, vk5qi, ve9qrp_10s, kristoff), 8 and 16 kHz.
        Codec-decoded outputs (f2400, m2400, all, david4, vk2tpm_004, 700d_end_over),
        test signals and samples over 30 s are left out; hts1*/hts2* repeat hts.raw.
  nexuiz-data 2.5.2-12 (GPL-2+): the male announcer and the team-chat lines of the human
        player models (marine, soldier, specop, insurrectionist, fricka); the creature models
        (reptilian, carni-lycan, torus) and the robotic announcer are left out.
  alsa-utils 1.2.8-1 (GPL-2): speaker-test's channel names ("front left", ...), not Noise.
  linphone-common 5.1.65-4 (GPL-3+): hello16000.wav, a man's test greeting.
  supercollider-common 3.13.0+repack-1 (GPL-2+ package): a11wlk01.wav, Apollo 11
        air-to-ground audio (NASA, public domain).

Never used: warzone2100-data, qabcs-data, ktuberling-data and asterisk-core-sounds-en* (dev
and test sets), and the PyPI packages of the dev sets. Checked and left out: sound-theme-
freedesktop (its audio-channel-* are alsa-utils' recordings again), gcompris-qt-data (voices
are downloaded at run time), pysiogame, ri-li-data, tuxtype-data, tecnoballz-data,
lincity-ng-data, tuxpaint-data (sound effects, music or ambience), openarena-data (only
"you win" and one taunt), megaglest-data (voice lines mixed with creature and animal calls,
many copied between units), csound-doc (sung vowels), puredata-doc (too short to tell),
festival/flite/mbrola/espeak voices (synthetic), hedgewars, pingus and warmux (cartoon voices).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_devsets import DEBIAN_POOL, download_checked  # noqa: E402

from talkmotion.files import atomic_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
MIN_SECONDS, MAX_SECONDS = 0.3, 30.0
SILENT_RMS = 3e-4                 # below this a clip is taken as silence
TRIM_RELATIVE, TRIM_MARGIN = 0.01, 15   # ends 40 dB below the loudest 10 ms go, but for 150 ms

# name: (path in the pool, SHA-256 of the .deb, version, licence from its debian/copyright)
PACKAGES = {
    "beneath-a-steel-sky": (
        "b/beneath-a-steel-sky/beneath-a-steel-sky_0.0372-8_all.deb",
        "e2a25c880220c26a4dfd42904b878cc655afa1c72895f9c932befbd078622934",
        "0.0372-8", "Beneath-a-Steel-Sky-License (BSD-like freeware)"),
    "flight-of-the-amazon-queen": (
        "f/flight-of-the-amazon-queen/flight-of-the-amazon-queen_1.0.0-9_all.deb",
        "40c08fd258d6fe95c46c1eaf5e9137f84ba330657995a281bd887c94a560a0f1",
        "1.0.0-9", "Flight-of-the-Amazon-Queen-License (BSD-like freeware)"),
    "drascula": (
        "d/drascula/drascula_1.0+ds4-2_all.deb",
        "ed4af8e2d41ad446e2f3b73533daa1804e2f13f62f596c0b02b8dc39544f22b4",
        "1.0+ds4-2", "Drascula-License (BSD-like freeware)"),
    "tuxpaint-stamps-default": (
        "t/tuxpaint-stamps/tuxpaint-stamps-default_2022.06.04-1_all.deb",
        "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
        "2022.06.04-1", "GPL-2"),
    "klettres-data": (
        "k/klettres/klettres-data_22.12.3-1_all.deb",
        "1186d257a19e84230856baea0b0b1ded8be9195080fcdb2588970b5cd937f5a8",
        "4:22.12.3-1", "GPL-2+"),
    "kajongg": (
        "k/kajongg/kajongg_22.12.3-1_all.deb",
        "be0a9cc0f9a97064ffa0ab01133f55e021c7c58f9869857431bf1ca951dadbaf",
        "4:22.12.3-1", "GPL-2+"),
    "boswars-data": (
        "b/boswars/boswars-data_2.7+svn160110-5_all.deb",
        "36098b478576810a786eb9d75b54e45f4d5fa507332fa8bf3360c14814ecc016",
        "2.7+svn160110-5", "GPL-2+"),
    "neverball-common": (
        "n/neverball/neverball-common_1.6.0+git20180603-3_all.deb",
        "4da26f36600148591cecdc23860dbb358c3f3f6916ab1c2bb649b9292462b3f2",
        "1.6.0+git20180603-3", "GPL-2+"),
    "codec2-examples": (
        "c/codec2/codec2-examples_1.0.5-1_all.deb",
        "7af8cd128f269a1d8116993c9d2bd7d4d452fc17da46a09899aaca2b9bd993d4",
        "1.0.5-1", "LGPL-2.1"),
    "nexuiz-data": (
        "n/nexuiz-data/nexuiz-data_2.5.2-12_all.deb",
        "5d4a4e293d9382be3b8edf6ec2d9f39d2a16f49467618b2316fbfa400acecf0e",
        "2.5.2-12", "GPL-2+"),
    "alsa-utils": (
        "a/alsa-utils/alsa-utils_1.2.8-1_amd64.deb",
        "fb24eb1a318228b974efbef726190dd90c6106a208814a3ee8f5d69b91ee0ba4",
        "1.2.8-1", "GPL-2"),
    "linphone-common": (
        "l/linphone/linphone-common_5.1.65-4_all.deb",
        "4d6fa3b4401a7f320387351241a917b9945f8afbe342ab8bbf5ac8cec4713bfa",
        "5.1.65-4", "GPL-3+"),
    "supercollider-common": (
        "s/supercollider/supercollider-common_3.13.0+repack-1_all.deb",
        "8efa43cca9a0d9bfad10d3f42578a9636925562fa301b667be14a78f953ceca6",
        "1:3.13.0+repack-1", "public domain (NASA recording); package GPL-2+"),
}


@dataclass
class Clip:
    name: str                                     # output file stem, unique within its package
    note: str                                     # speaker / content
    read: Callable[[], tuple[np.ndarray, int]]    # float32 mono samples and their rate


# ---------------------------------------------------------------- fetching

def fetch_package(name: str, cache: Path) -> Path:
    """The Debian package's unpacked files (downloaded once from the pool, SHA-256 checked)."""
    pool_path, want = PACKAGES[name][:2]
    folder = cache / name
    if folder.is_dir():
        return folder
    archive = download_checked(DEBIAN_POOL + pool_path, cache / "debs" / Path(pool_path).name, want)
    tmp = cache / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        subprocess.run(["dpkg-deb", "-x", str(archive), str(tmp)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"build_real_unlabelled: {archive}: dpkg-deb -x failed: {err}")
    tmp.rename(folder)
    return folder


# ---------------------------------------------------------------- decoding

def decode_file(path: Path) -> tuple[np.ndarray, int]:
    return decode_stream(path, str(path))


def decode_bytes(data: bytes, label: str) -> tuple[np.ndarray, int]:
    return decode_stream(io.BytesIO(data), label)


def decode_stream(source, label: str) -> tuple[np.ndarray, int]:
    """Any container PyAV reads, as float32 mono at RATE."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    chunks = []
    try:
        with av.open(source) as container:
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.error.FFmpegError as err:
        sys.exit(f"build_real_unlabelled: {label}: {err}")
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), RATE


def unsigned8(data: bytes) -> np.ndarray:
    return (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0


def signed16(data: bytes) -> np.ndarray:
    return np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / 32768.0


def to_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample float32 mono to RATE with libswresample (through PyAV)."""
    if rate == RATE or len(samples) == 0:
        return samples.astype(np.float32)
    frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# ---------------------------------------------------------------- RNC ProPack method 1 (Beneath a Steel Sky)

class _RncBits:
    """RNC's bit reader: LSB first from 16-bit little-endian words, the next word read ahead."""

    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos
        self.buf, self.count = self.word(pos), 16

    def word(self, pos: int) -> int:
        return self.data[pos] | (self.data[pos + 1] << 8) if pos + 1 < len(self.data) else 0

    def advance(self, n: int) -> None:
        self.buf >>= n
        self.count -= n
        if self.count < 16:
            self.pos += 2
            self.buf |= self.word(self.pos) << self.count
            self.count += 16

    def read(self, n: int) -> int:
        value = self.buf & ((1 << n) - 1)
        self.advance(n)
        return value

    def refill_after_literals(self) -> None:
        self.count -= 16
        self.buf &= (1 << self.count) - 1
        self.buf |= self.word(self.pos) << self.count
        self.count += 16


def _rnc_table(bits: _RncBits) -> list[tuple[int, int, int]]:
    """(mask, code, value) of one Huffman table, codes bit-reversed as they are read."""
    count = bits.read(5)
    lengths = [bits.read(4) for _ in range(count)]
    table, code = [], 0
    for length in range(1, 17):
        for value, own in enumerate(lengths):
            if own == length:
                mirrored = int(f"{code:0{length}b}"[::-1], 2)
                table.append(((1 << length) - 1, mirrored, value))
                code += 1
        code <<= 1
    return table


def _rnc_value(table: list[tuple[int, int, int]], bits: _RncBits) -> int:
    for mask, code, value in table:
        if bits.buf & mask == code:
            bits.advance(mask.bit_length())
            if value < 2:
                return value
            return (1 << (value - 1)) | bits.read(value - 1)
    raise ValueError("RNC: no Huffman code matches")


def rnc_unpack(packed: bytes) -> bytes:
    """Unpack an RNC ProPack method-1 block ("RNC\\x01" header, as ScummVM's sky engine reads);
    ValueError when the packed or unpacked CRC-16 does not match the header's."""
    if packed[:4] != b"RNC\x01":
        raise ValueError("no RNC\\x01 signature")
    size, packed_size, crc, packed_crc = struct.unpack(">IIHH", packed[4:16])
    if _rnc_crc(packed[18:18 + packed_size]) != packed_crc:
        raise ValueError("packed CRC differs")
    out = bytearray()
    bits = _RncBits(packed, 18)
    bits.advance(2)
    for _ in range(packed[17]):                         # the header's block count
        raw, dist, length = _rnc_table(bits), _rnc_table(bits), _rnc_table(bits)
        for step in range(bits.read(16), 0, -1):
            run = _rnc_value(raw, bits)
            if run:
                out += packed[bits.pos: bits.pos + run]
                bits.pos += run
                bits.refill_after_literals()
            if step == 1:
                break
            back = _rnc_value(dist, bits) + 1
            for _ in range(_rnc_value(length, bits) + 2):
                out.append(out[-back])
    if _rnc_crc(out[:size]) != crc:
        raise ValueError("unpacked CRC differs")
    return bytes(out[:size])


def _rnc_crc(data: bytes) -> int:
    """RNC's CRC-16 (reflected polynomial 0xA001, initial 0)."""
    crc = 0
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        v = i
        for _ in range(8):
            v = (v >> 1) ^ 0xA001 if v & 1 else v >> 1
        table.append(v)
    return table


_CRC_TABLE = _crc_table()


# ---------------------------------------------------------------- the packages' clips

def sky_clips(root: Path) -> list[Clip]:
    """Beneath a Steel Sky: every speech file (50000 <= number < 60000) of sky.dsk."""
    game = root / "usr/share/scummvm/beneath-a-steel-sky"
    return [Clip(f"sky_{number}", f"BASS dialogue, speech file {number}",
                 lambda o=offset, f=flags: _sky_speech(game / "sky.dsk", o, f))
            for number, offset, flags in _sky_directory(game / "sky.dnr") if 50000 <= number < 60000]


def _sky_directory(dnr: Path) -> list[tuple[int, int, int]]:
    """(file number, offset field, flags-and-size field) of each entry of sky.dnr."""
    data = dnr.read_bytes()
    entries = []
    for k in range(struct.unpack("<I", data[:4])[0]):
        entry = data[4 + 8 * k: 12 + 8 * k]
        entries.append((struct.unpack("<H", entry[:2])[0], int.from_bytes(entry[2:5], "little"),
                        int.from_bytes(entry[5:8], "little")))
    return entries


def _sky_speech(disk: Path, offset: int, flags: int) -> tuple[np.ndarray, int]:
    """One file of sky.dsk (as ScummVM's Disk::loadFile), its 22-byte header dropped."""
    size, start = flags & 0x3FFFFF, offset & 0x7FFFFF
    if (offset >> 23) & 1:
        start <<= 4
    with open(disk, "rb") as f:
        f.seek(start)
        data = f.read(size + 16)                        # a final literal run may reach past `size`
    header_flag = struct.unpack("<H", data[:2])[0]
    if (header_flag >> 7) & 1:                          # RNC packed after the header
        try:
            body = rnc_unpack(data[22:])
        except (ValueError, IndexError) as err:
            print(f"build_real_unlabelled: {disk} at {start}: RNC: {err}; left out", file=sys.stderr)
            return np.zeros(0, np.float32), 11025
        audio = body[22:] if (flags >> 22) & 1 else body
    else:
        audio = data[22:size]
    return unsigned8(audio), 11025


QUEEN_SPEECH = re.compile(r"^(\d{2}[0-9A-Z]{6}|C[0-9A-Z_]{7}|JOE\d{5}|COMIC\d{3}|CDINT\d{3}|CINTR\d{3})\.SB$")


def queen_clips(root: Path) -> list[Clip]:
    """Flight of the Amazon Queen: the dialogue entries (*.SB, MP3) of queen.1c's table."""
    path = root / "usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
    with open(path, "rb") as f:
        head = f.read(15)
        if head[:4] != b"QTBL" or head[12] != 1:
            sys.exit(f"build_real_unlabelled: {path}: not the MP3-compressed queen.1c this script knows")
        count = struct.unpack(">H", head[13:15])[0]
        table = f.read(21 * count)
    clips = []
    for k in range(count):
        entry = table[21 * k: 21 * k + 21]
        name = entry[:12].rstrip(b"\0").decode("ascii")
        offset, size = struct.unpack(">II", entry[13:21])
        if QUEEN_SPEECH.match(name):
            clips.append(Clip(name[:-3], _queen_note(name[:-3]),
                              lambda o=offset, s=size, n=name: decode_bytes(_read_at(path, o, s), f"{path}:{n}")))
    return clips


def _queen_note(stem: str) -> str:
    if stem.startswith("JOE"):
        return "FOTAQ, Joe King (descriptions)"
    if stem.startswith("C"):
        return "FOTAQ cutaway or intro speech"
    return "FOTAQ dialogue, " + ("Joe King" if stem[6] == "J" else "other character")


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def drascula_clips(root: Path) -> list[Clip]:
    """Drascula: the English speech files en/*.ALS (S<n>.ALS are sound effects)."""
    clips = []
    for path in sorted((root / "usr/share/scummvm/drascula/en").glob("*.ALS")):
        prefix = re.match(r"^([A-Z]*)\d+$", path.stem)
        if prefix is None or prefix.group(1) == "S":
            continue
        who = f"character prefix {prefix.group(1)}" if prefix.group(1) else "the player character"
        clips.append(Clip(path.stem, f"Drascula dialogue, {who}",
                          lambda p=path: (unsigned8(p.read_bytes()[32:-32]), 11025)))
    return clips


def tuxpaint_clips(root: Path) -> list[Clip]:
    stamps = root / "usr/share/tuxpaint/stamps"
    chosen = [(p, f"spoken stamp description '{p.stem[:-5]}'") for p in sorted(stamps.rglob("*_desc.ogg"))]
    for digit in sorted((stamps / "symbols/math").glob("*.ogg")):
        if re.fullmatch(r"\d", digit.stem):
            chosen.append((digit, f"spoken digit {digit.stem}, US"))
        elif re.fullmatch(r"\d_en_GB", digit.stem):
            chosen.append((digit, f"spoken digit {digit.stem[0]}, British"))
    return [file_clip(p, stamps, note) for p, note in chosen]


def klettres_clips(root: Path) -> list[Clip]:
    base = root / "usr/share/klettres"
    return [file_clip(p, base, f"{p.parts[-3]} {'letter' if p.parts[-2] == 'alpha' else 'sound'} '{p.stem}'")
            for lang in ("en", "en_GB") for kind in ("alpha", "syllab")
            for p in sorted((base / lang / kind).glob("*.ogg"))]


def kajongg_clips(root: Path) -> list[Clip]:
    base = root / "usr/share/kajongg/voices"
    return [file_clip(p, base, f"mah-jongg call '{p.stem}', voice {p.parent.name}")
            for voice in ("female1", "female2", "male1", "male2") for p in sorted((base / voice).glob("*.ogg"))]


BOSWARS_VOICE = re.compile(r"^[a-z0-9]+(\.[a-z]+)*\.(ready|underattack|completed)\.wav$"
                           r"|^(assault|bazoo|buggy|engineer|grenadier|medic)_(select|action|ready)\.wav$")


def boswars_clips(root: Path) -> list[Clip]:
    base = root / "usr/share/games/boswars"
    units = [p for p in sorted((base / "units").rglob("*.wav")) if BOSWARS_VOICE.match(p.name)]
    briefings = sorted((base / "campaigns/tutorial").glob("level*.wav"))
    return [file_clip(p, base, "unit voice / announcement") for p in units] + \
        [file_clip(p, base, "tutorial briefing") for p in briefings]


NEVERBALL_SPEECH = ("ready", "set", "go", "goal", "time", "over", "record", "success", "fall", "par", "birdie",
                    "bogey", "eagle", "double", "one", "player1", "player2", "player3", "player4", "penalty")


def neverball_clips(root: Path) -> list[Clip]:
    snd = root / "usr/share/games/neverball/snd"
    return [file_clip(snd / f"{word}.ogg", snd, f"announcer '{word}'") for word in NEVERBALL_SPEECH]


CODEC2_SPEECH = {
    "wav/big_dog.wav": "Harvard-style sentence", "wav/cross.wav": "Harvard-style sentence",
    "wav/forig.wav": "woman, sentence", "wav/morig.wav": "man, sentence", "wav/mmt1.wav": "sentence",
    "wav/vk5qi.wav": "radio amateur VK5QI", "raw/hts.raw": "Harvard sentences, one reader",
    "raw/cq_ref.raw": "radio amateur CQ call", "raw/g3plx.raw": "radio amateur G3PLX",
    "raw/kristoff.raw": "man, greeting", "raw/ve9qrp_10s.raw": "radio amateur VE9QRP",
    "raw/speech_orig_16k.wav": "Harvard sentences, 16 kHz original",
}


def codec2_clips(root: Path) -> list[Clip]:
    base = root / "usr/share/codec2"
    clips = []
    for rel, note in CODEC2_SPEECH.items():
        path = base / rel
        read = (lambda p=path: (signed16(p.read_bytes()), 8000)) if path.suffix == ".raw" else \
            (lambda p=path: decode_file(p))
        clips.append(Clip(rel.replace("/", "_").rsplit(".", 1)[0], note, read))
    return clips


NEXUIZ_SPEECH = re.compile(r"^sound/(announcer/male|player/(marine|soldier|specop|insurrectionist|fricka)/coms)"
                           r"/[^/]+\.ogg$")


def nexuiz_clips(root: Path) -> list[Clip]:
    pk3 = root / "usr/share/games/nexuiz/data/data.pk3"
    with zipfile.ZipFile(pk3) as archive:
        names = [n for n in archive.namelist() if NEXUIZ_SPEECH.match(n)]
    return [Clip(n[len("sound/"):-4].replace("/", "_"), "announcer, man" if "announcer" in n else
                 f"team chat, player model {n.split('/')[2]}",
                 lambda n=n: decode_bytes(_zip_member(pk3, n), f"{pk3}:{n}")) for n in sorted(names)]


def _zip_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def alsa_clips(root: Path) -> list[Clip]:
    base = root / "usr/share/sounds/alsa"
    return [file_clip(p, base, f"channel name '{p.stem.replace('_', ' ').lower()}'")
            for p in sorted(base.glob("*.wav")) if p.stem != "Noise"]


def linphone_clips(root: Path) -> list[Clip]:
    base = root / "usr/share/sounds/linphone"
    return [file_clip(base / "hello16000.wav", base, "man, test-call greeting")]


def supercollider_clips(root: Path) -> list[Clip]:
    base = root / "usr/share/SuperCollider/sounds"
    return [file_clip(base / "a11wlk01.wav", base, "Apollo 11 air-to-ground (NASA)")]


def file_clip(path: Path, base: Path, note: str) -> Clip:
    """A clip read from an audio file; its name is its path under `base`, folders joined by '_'."""
    name = "_".join(path.relative_to(base).with_suffix("").parts)
    return Clip(name, note, lambda: decode_file(path))


SOURCES = {
    "beneath-a-steel-sky": sky_clips, "flight-of-the-amazon-queen": queen_clips, "drascula": drascula_clips,
    "tuxpaint-stamps-default": tuxpaint_clips, "klettres-data": klettres_clips, "kajongg": kajongg_clips,
    "boswars-data": boswars_clips, "neverball-common": neverball_clips, "codec2-examples": codec2_clips,
    "nexuiz-data": nexuiz_clips, "alsa-utils": alsa_clips, "linphone-common": linphone_clips,
    "supercollider-common": supercollider_clips,
}


# ---------------------------------------------------------------- writing

def write_clip(clip: Clip, target: Path) -> float | None:
    """Write the clip as 16 kHz mono PCM-16 unless it is there; its duration, or None if left out."""
    if target.is_file():
        return soundfile.info(str(target)).frames / RATE
    samples, rate = clip.read()
    samples = trim_silence(np.clip(to_rate(samples, rate), -1.0, 1.0))
    seconds = len(samples) / RATE
    if not MIN_SECONDS <= seconds <= MAX_SECONDS or np.sqrt(np.mean(samples ** 2)) < SILENT_RMS:
        return None
    with atomic_path(target) as tmp:
        soundfile.write(str(tmp), samples, RATE, subtype="PCM_16", format="WAV")
    return seconds


def trim_silence(samples: np.ndarray) -> np.ndarray:
    """The clip less its leading and trailing stretches 40 dB below its loudest 10 ms, less a margin."""
    frame = RATE // 100
    frames = len(samples) // frame
    if frames == 0:
        return samples
    energy = np.sqrt(np.mean(samples[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(energy >= energy.max() * TRIM_RELATIVE)
    start = max(0, (loud[0] - TRIM_MARGIN) * frame)
    end = min(len(samples), (loud[-1] + 1 + TRIM_MARGIN) * frame)
    return samples[start:end]


def build_package(name: str, cache: Path, out: Path, seen: set[str]) -> list[list[str]]:
    """The manifest rows of one package's clips, written as WAVs under out/name/; a clip whose
    samples are those of one already taken (`seen`: their SHA-256s) is removed again."""
    version, licence = PACKAGES[name][2:]
    rows = []
    for clip in SOURCES[name](fetch_package(name, cache)):
        target = out / name / f"{clip.name}.wav"
        seconds = write_clip(clip, target)
        if seconds is not None and not _repeated(target, seen):
            rows.append([str(target.relative_to(out)), name, version, licence, f"{seconds:.3f}", clip.note])
    print(f"{name}: {len(rows)} clips, {sum(float(r[4]) for r in rows) / 60:.1f} min", flush=True)
    return rows


def _repeated(target: Path, seen: set[str]) -> bool:
    """True (and the file removed) when its samples repeat a clip already taken."""
    digest = hashlib.sha256(soundfile.read(str(target), dtype="int16")[0].tobytes()).hexdigest()
    if digest in seen:
        target.unlink()
        return True
    seen.add(digest)
    return False


def write_manifest(path: Path, rows: list[list[str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["path", "package", "version", "licence", "duration_s", "note"])
        writer.writerows(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "data" / "real_unlabelled"), help="where the WAVs go")
    parser.add_argument("--cache", default=str(ROOT / "cache" / "real_unlabelled"), help="downloaded packages")
    args = parser.parse_args()
    cache, out = Path(args.cache), Path(args.out)
    rows, seen = [], set()
    for name in PACKAGES:
        rows += build_package(name, cache, out, seen)
    write_manifest(out / "manifest.tsv", rows)
    print(f"{len(rows)} clips, {sum(float(r[4]) for r in rows) / 60:.1f} min -> {out / 'manifest.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
