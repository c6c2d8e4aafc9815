"""The maintainer script data_samples/emoji_corpus/make_emoji_corpus.py, on tiny fake packages.

No torch, no network: four npm-like tarballs are built in tmp_path and the script's pins are
replaced by their hashes.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import struct
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data_samples" / "emoji_corpus" / "make_emoji_corpus.py"

RED_CIRCLE = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">'
              '<circle cx="18" cy="18" r="16" fill="#ff0000"/></svg>')
BLUE_SQUARE = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">'
               '<rect x="8" y="8" width="20" height="20" fill="#0000ff"/></svg>')
BROKEN = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36"><circle'


def load_script():
    """Import the script by path without leaving a __pycache__ in the shipped folder."""
    spec = importlib.util.spec_from_file_location("make_emoji_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    old, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = old
    return module


mec = load_script()


def emojibase_entries(lang: str) -> list[dict]:
    label = {"en": ("red circle", "blue square", "waving hand", "waving hand: light skin tone"),
             "de": ("roter Kreis", "", "winkende Hand", "winkende Hand: helle Hautfarbe")}[lang]
    return [
        {"label": label[0], "hexcode": "1F534", "emoji": "🔴", "tags": ["circle", "red"],
         "group": 0, "subgroup": 0, "order": 1},
        {"label": label[1], "hexcode": "1F7E6", "emoji": "🟦", "tags": ["blue"],
         "group": 0, "subgroup": 0, "order": 2},
        {"label": label[2], "hexcode": "1F44B", "emoji": "👋", "tags": ["wave"], "group": 1,
         "subgroup": 1, "order": 3,
         "skins": [{"label": label[3], "hexcode": "1F44B-1F3FB", "emoji": "👋🏻", "group": 1,
                    "subgroup": 1, "order": 4, "tone": 1}]},
        {"label": "light skin tone", "hexcode": "1F3FB", "emoji": "🏻", "group": 2,
         "subgroup": 2, "order": 5},
        {"label": "regional indicator A", "hexcode": "1F1E6", "emoji": "🇦", "order": 6},
    ]


def png_bytes(colour: tuple[int, int, int, int]) -> bytes:
    """A 64x64 RGBA PNG: a disc of ``colour`` on a transparent background."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=colour)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def fake_files() -> dict[str, dict[str, str | bytes]]:
    """Per role, the files of its package (paths under ``package/``)."""
    groups = {"groups": {"0": "symbols", "1": "people-body", "2": "component"},
              "subgroups": {"0": "geometric", "1": "hand-fingers-open", "2": "skin-tone"}}
    noto_json = [
        {"unified": "1F534", "image": "1f534.png", "has_img_google": True},
        {"unified": "1F7E6", "image": "1f7e6.png", "has_img_google": True},  # claimed, missing
        {"unified": "1F44B", "image": "1f44b.png", "has_img_google": True, "skin_variations": {
            "1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png",
                      "has_img_google": True}}},
    ]
    return {
        "noto": {"emoji.json": json.dumps(noto_json), "LICENSE": "MIT",
                 "img/google/64/1f534.png": png_bytes((255, 0, 0, 255)),
                 "img/google/64/1f44b.png": png_bytes((255, 200, 0, 255)),
                 "img/google/64/1f44b-1f3fb.png": png_bytes((250, 220, 180, 255))},
        "twemoji": {"1f534.svg": RED_CIRCLE, "1f7e6.svg": BLUE_SQUARE, "1f44b.svg": BROKEN,
                    "1f44b-1f3fb.svg": RED_CIRCLE, "1f1e6.svg": BLUE_SQUARE},
        "openmoji": {"color/svg/1F534.svg": RED_CIRCLE, "color/svg/1F7E6.svg": BLUE_SQUARE,
                     "color/svg/E000.svg": RED_CIRCLE, "LICENSE.txt": "CC BY-SA 4.0"},
        "emojibase": {"meta/groups.json": json.dumps(groups),
                      "en/data.json": json.dumps(emojibase_entries("en")),
                      "de/data.json": json.dumps(emojibase_entries("de"))},
    }


@pytest.fixture
def packages(tmp_path):
    """(tarball dir, pins) for the fake packages."""
    tar_dir = tmp_path / "tarballs"
    tar_dir.mkdir()
    pins = {}
    for role, files in fake_files().items():
        pin = mec.PINS[role]
        with tarfile.open(tar_dir / pin.tarball, "w:gz") as tar:
            for name, content in sorted(files.items()):
                data = content.encode() if isinstance(content, str) else content
                info = tarfile.TarInfo(f"package/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        pins[role] = dataclasses.replace(pin, integrity=mec.integrity_of(tar_dir / pin.tarball))
    return tar_dir, pins


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def png_chunks(data: bytes) -> list[bytes]:
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return kinds


def read_jsonl(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def test_build_images_metadata_alt_texts_and_failures(packages, tmp_path):
    tar_dir, pins = packages
    out = tmp_path / "corpus"
    result = mec.build(out, tar_dir, pins)
    assert out.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in (out / "images").iterdir()) == ["noto.png", "openmoji.png", "twemoji.png"]
    for style, cell, colour in [("twemoji", 0, (255, 0, 0)), ("twemoji", 1, (0, 0, 255)),
                                ("openmoji", 0, (255, 0, 0)), ("noto", 0, (255, 0, 0))]:
        path = out / "images" / f"{style}.png"
        assert png_chunks(path.read_bytes()) == [b"IHDR", b"IDAT", b"IEND"]
        sheet = Image.open(path)
        assert (sheet.mode, sheet.size) == ("RGB", (64 * mec.SHEET_COLUMNS, 64))
        image = mec.sheet_cell(sheet, cell)
        assert image.getpixel((32, 32)) == colour
        corners = [(0, 0), (63, 0), (0, 63), (63, 63)]
        assert all(image.getpixel(c) == (255, 255, 255) for c in corners)
    # the broken SVG and the missing Noto file are reported and left out
    assert result["failure_count"] == 2
    assert [f["hexcode"] for f in result["failures"]["twemoji"]] == ["1F44B"]
    assert [f["hexcode"] for f in result["failures"]["noto"]] == ["1F7E6"]
    report = json.loads((out / "build_report.json").read_text())
    assert report["failures"]["twemoji"][0]["file"] == "1f44b.svg"
    rows = read_jsonl(out / "metadata.jsonl")
    assert [r["file_name"] for r in rows] == [
        "images/noto/1f534.png", "images/noto/1f44b.png", "images/noto/1f44b-1f3fb.png",
        "images/twemoji/1f534.png", "images/twemoji/1f7e6.png", "images/twemoji/1f44b-1f3fb.png",
        "images/openmoji/1f534.png", "images/openmoji/1f7e6.png"]
    assert result["images"] == {"noto": 3, "twemoji": 3, "openmoji": 2}
    assert result["unmatched_files_skipped"] == {"noto": 0, "twemoji": 1, "openmoji": 1}
    skin = rows[2]
    assert [r["cell"] for r in rows] == [0, 1, 2, 0, 1, 2, 0, 1]  # the broken 1F44B takes no cell
    assert list(skin) == ["file_name", "cell", "style", "hexcode", "emoji", "base", "concept", "skin_tone",
                          "gender", "group", "subgroup", "order", "text"]
    assert skin | {"file_name": ""} == {
        "file_name": "", "cell": 2, "style": "noto", "hexcode": "1F44B-1F3FB", "emoji": "👋🏻",
        "base": "1F44B", "concept": "1F44B", "skin_tone": "light", "gender": "",
        "group": "people-body", "subgroup": "hand-fingers-open", "order": 4,
        "text": "waving hand: light skin tone"}
    assert gzip.decompress((out / "alt_texts.jsonl.gz").read_bytes())[:1] == b"{"
    alt = read_jsonl(out / "alt_texts.jsonl.gz")
    assert [r["hexcode"] for r in alt] == ["1F534", "1F7E6", "1F44B", "1F44B-1F3FB"]
    assert alt[0]["texts"] == {"de": {"label": "roter Kreis", "tags": ["circle", "red"]},
                               "en": {"label": "red circle", "tags": ["circle", "red"]}}
    assert list(alt[1]["texts"]) == ["en"]  # no German label upstream
    assert alt[3]["texts"]["de"] == {"label": "winkende Hand: helle Hautfarbe", "tags": []}
    assert result["alt_texts"] == (3 + 3) + 2 + (2 + 2) + (1 + 1)  # label + tags per locale
    manifest = mec.read_manifest((out / "MANIFEST.sha256").read_bytes())
    files = tree(out)
    assert set(manifest) == set(files) - {"MANIFEST.sha256"}
    assert all(hashlib.sha256(files[f]).hexdigest() == d for f, d in manifest.items())


def test_concept_and_skin_tone_names():
    assert mec.strip_gender_and_skin("1F645-1F3FD-200D-2640-FE0F") == "1F645"
    assert mec.strip_gender_and_skin("1F468-200D-2764-FE0F-200D-1F468") == \
        "1F468-200D-2764-FE0F-200D-1F468"
    assert mec.skin_tone(None) == "none"
    assert mec.skin_tone([2, 2]) == "medium-light"
    assert mec.skin_tone([1, 5]) == "mixed"
    assert mec.norm("a9") == mec.norm("00A9-FE0F") == "00A9"


def test_bad_hash_is_refused_and_nothing_written(packages, tmp_path, monkeypatch, capsys):
    tar_dir, pins = packages
    out = tmp_path / "corpus"
    mec.build(out, tar_dir, pins)
    before = tree(out)
    bad = dict(pins, openmoji=dataclasses.replace(pins["openmoji"], integrity="sha512-AAAA"))
    with pytest.raises(mec.BuildError, match="openmoji@17.0.0.*expected sha512-AAAA got sha512-"):
        mec.build(out, tar_dir, bad)
    monkeypatch.setattr(mec, "PINS", bad)
    assert mec.main(["--tarballs", str(tar_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "openmoji" in err and "sha512-AAAA" in err
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "tarballs"]


def test_failure_mid_write_keeps_old_output(packages, tmp_path, monkeypatch):
    tar_dir, pins = packages
    out = tmp_path / "corpus"
    mec.build(out, tar_dir, pins)
    (out / "LICENSE.md").write_text("licence notes\n")
    before = tree(out)
    real_write, calls = mec.write_png, []

    def flaky_write(image, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(image, path)

    monkeypatch.setattr(mec, "write_png", flaky_write)
    with pytest.raises(OSError, match="disk full"):
        mec.build(out, tar_dir, pins)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "tarballs"]
    monkeypatch.setattr(mec, "write_png", real_write)
    mec.build(out, tar_dir, pins)  # hand-written files beside the data are carried over
    assert (out / "LICENSE.md").read_text() == "licence notes\n"
    assert "LICENSE.md" not in (out / "MANIFEST.sha256").read_text()  # hand-written: not a build output


def test_two_builds_are_identical_and_check(packages, tmp_path):
    tar_dir, pins = packages
    mec.build(tmp_path / "a" / "corpus", tar_dir, pins)
    mec.build(tmp_path / "b" / "corpus", tar_dir, pins)
    assert tree(tmp_path / "a" / "corpus") == tree(tmp_path / "b" / "corpus")
    out = tmp_path / "a" / "corpus"
    assert mec.check(out, tar_dir, pins) == []
    Image.new("RGB", (64 * mec.SHEET_COLUMNS, 64), "green").save(out / "images/noto.png")
    assert mec.check(out, tar_dir, pins) == ["images/noto.png"]
