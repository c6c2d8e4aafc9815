"""Build ``data_samples/emoji_corpus/``: emoji in three styles with alt-texts in 28 languages.

Maintainer script, not part of the installed package. Rebuild (and check) with::

    nice python3 data_samples/emoji_corpus/make_emoji_corpus.py --tarballs /tmp/npm
    nice python3 data_samples/emoji_corpus/make_emoji_corpus.py --tarballs /tmp/npm --check

Inputs are four npm tarballs pinned below by version and sha512 ``integrity``; a missing tarball
is fetched with ``npm pack``, a tarball with another hash is refused. Outputs (see LICENSE.md):
``images/<style>.png`` (one sprite sheet per style: 64x64 RGB cells on white, 64 to a row,
in ``metadata.jsonl`` order; styles noto, twemoji, openmoji), ``metadata.jsonl`` (one row per
image, with its ``cell`` in its style's sheet and the ``file_name`` it gets in an imagefolder
export), ``alt_texts.jsonl.gz`` (labels and tags per locale, gzip without a timestamp),
``build_report.json`` and ``MANIFEST.sha256``. The output is built in a hidden sibling folder
and renamed into place, so a failed or killed run leaves the previous output intact.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import PIL
import resvg_py
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = 64
STYLES = ("noto", "twemoji", "openmoji")
GENERATED = {"images", "metadata.jsonl", "alt_texts.jsonl.gz", "messages.jsonl", "build_report.json", "MANIFEST.sha256"}
SHEET_COLUMNS = 64  # cells per row of a style's sprite sheet
GENDERS = {0: "woman", 1: "man"}
TONES = {1: "light", 2: "medium-light", 3: "medium", 4: "medium-dark", 5: "dark"}
SKIN_MODIFIERS = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}


@dataclass(frozen=True)
class Pin:
    """One npm package: what to fetch, its expected hash, and which members to extract."""

    name: str
    version: str
    integrity: str  # "sha512-<base64>", as `npm pack --json` / `npm view ... dist.integrity` print
    tarball: str
    keep: tuple[str, ...]  # member path prefixes to extract


PINS: dict[str, Pin] = {
    "noto": Pin("emoji-datasource-google", "16.0.0",
                "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
                "emoji-datasource-google-16.0.0.tgz",
                ("package/LICENSE", "package/emoji.json", "package/img/google/64/")),
    "twemoji": Pin("@twemoji/svg", "15.0.0",
                   "sha512-ZSPef2B6nBaYnfgdTbAy4jgW95o7pi2xPGwGCU+WMTxo7J6B1lMPTWwSq/wTuiMq+N0khQ90CcvYp1wFoQpo/w==",
                   "twemoji-svg-15.0.0.tgz", ("package/",)),
    "openmoji": Pin("openmoji", "17.0.0",
                    "sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
                    "openmoji-17.0.0.tgz", ("package/LICENSE.txt", "package/color/svg/")),
    "emojibase": Pin("emojibase-data", "17.0.0",
                     "sha512-Yvgb5AWoHViHV/gq1qr5ZAarcBip+B27/ZLRsUJkbgAEaLlZ/fof9g882LTpmEpyhBNEC0m2SEmItljHsTygjA==",
                     "emojibase-data-17.0.0.tgz", ("package/",)),
}


class BuildError(Exception):
    """A refusal (bad tarball hash, missing npm) reported as one line, exit status 1."""


# ---------------------------------------------------------------- tarballs
def integrity_of(path: Path) -> str:
    """The npm/SRI integrity string of a file: ``sha512-`` + base64 of its SHA-512 digest."""
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def verified_tarballs(tarball_dir: Path, pins: dict[str, Pin]) -> dict[str, Path]:
    """Each pinned tarball in ``tarball_dir`` (``npm pack`` fetches missing ones), hash-checked."""
    tarball_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, pin in pins.items():
        path = tarball_dir / pin.tarball
        if not path.exists():
            spec = f"{pin.name}@{pin.version}"
            print(f"fetching {spec} with npm pack", file=sys.stderr)
            try:
                subprocess.run(["npm", "pack", spec], cwd=tarball_dir, check=True,
                               stdout=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError) as err:
                raise BuildError(f"could not fetch {spec} with npm pack: {err}") from err
        got = integrity_of(path)
        if got != pin.integrity:
            raise BuildError(f"refusing {pin.name}@{pin.version} ({path}): sha512 mismatch, "
                             f"expected {pin.integrity} got {got}")
        paths[role] = path
    return paths


def extract(tarball: Path, dest: Path, keep: tuple[str, ...]) -> Path:
    """Extract the members of ``tarball`` under the ``keep`` prefixes; return ``dest/package``."""
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(keep)]
        tar.extractall(dest, members=members, filter="data")
    return dest / "package"


# ---------------------------------------------------------------- emojibase
def norm(hexcode: str) -> str:
    """Matching key: upper-case code points, 4+ digits, every FE0F dropped (``a9`` -> ``00A9``)."""
    return "-".join(f"{int(p, 16):04X}" for p in hexcode.replace("_", "-").split("-")
                    if p.upper() != "FE0F")


def skin_tone(tone: int | list[int] | None) -> str:
    """Emojibase ``tone`` (1-5, or one per person) as a name; unequal tones are "mixed"."""
    tones = set(tone) if isinstance(tone, list) else {tone}
    return "none" if tone is None else TONES[tones.pop()] if len(tones) == 1 else "mixed"


def strip_gender_and_skin(hexcode: str) -> str:
    """Drop skin-tone modifiers and ZWJ + female/male sign (with its FE0F) from a hexcode."""
    parts = [p for p in hexcode.upper().split("-") if p not in SKIN_MODIFIERS]
    out: list[str] = []
    i = 0
    while i < len(parts):
        if parts[i] == "200D" and i + 1 < len(parts) and parts[i + 1] in ("2640", "2642"):
            i += 3 if i + 2 < len(parts) and parts[i + 2] == "FE0F" else 2
            continue
        out.append(parts[i])
        i += 1
    return "-".join(out)


def load_locales(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{locale: {hexcode: {"label", "tags"}}}`` from each `<locale>/data.json`; skins: no tags."""
    locales = {}
    for path in sorted(root.glob("*/data.json")):
        texts: dict[str, dict[str, Any]] = {}
        for entry in json.loads(path.read_text(encoding="utf-8")):
            tags = entry.get("tags", [])
            texts[entry["hexcode"]] = {"label": entry.get("label", ""), "tags": tags}
            for skin in entry.get("skins", []):
                texts[skin["hexcode"]] = {"label": skin.get("label", ""), "tags": []}
        locales[path.parent.name] = texts
    return locales


def message_rows(root: Path) -> list[dict[str, Any]]:
    """One row per locale: its names of the groups, subgroups and skin tones (``messages.json``),
    ``{"locale", "groups": {key: name}, "subgroups": {…}, "skin_tones": {…}}``."""
    rows = []
    for path in sorted(root.glob("*/messages.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {field: {m["key"]: m["message"] for m in data.get(key, [])}
                 for field, key in (("groups", "groups"), ("subgroups", "subgroups"), ("skin_tones", "skinTones"))}
        rows.append({"locale": path.parent.name, **names})
    return rows


def load_entries(root: Path) -> list[dict[str, Any]]:
    """Every emojibase emoji (bases and skins) with the metadata fields, in emojibase order."""
    meta = json.loads((root / "meta" / "groups.json").read_text(encoding="utf-8"))
    groups, subgroups = meta["groups"], meta["subgroups"]
    bases = [e for e in json.loads((root / "en" / "data.json").read_text(encoding="utf-8"))
             if e.get("group") is not None and groups[str(e["group"])] != "component"]
    base_by_key = {norm(e["hexcode"]): e["hexcode"] for e in bases}
    rows = []
    for base in bases:
        for entry in [base, *base.get("skins", [])]:
            neutral = norm(strip_gender_and_skin(entry["hexcode"]))
            gender = entry.get("gender", base.get("gender"))
            rows.append({
                "hexcode": entry["hexcode"], "emoji": entry["emoji"], "base": base["hexcode"],
                "concept": base_by_key.get(neutral, base["hexcode"]),
                "skin_tone": skin_tone(entry.get("tone")), "gender": GENDERS.get(gender, ""),
                "group": groups[str(base["group"])], "subgroup": subgroups[str(base["subgroup"])],
                "order": entry["order"], "text": entry["label"]})
    return sorted(rows, key=lambda r: (r["order"], r["hexcode"]))


# ---------------------------------------------------------------- sources per style
def hex_key(name: str) -> str:
    """``norm(name)``, or "" for a file name that is not a hexcode (OpenMoji's extras)."""
    try:
        return norm(name)
    except ValueError:
        return ""


def files_by_key(paths: list[Path], known: set[str]) -> tuple[dict[str, Path], int]:
    """Map image files (named by hexcode) to emojibase keys; count the files skipped."""
    found: dict[str, Path] = {}
    for path in sorted(paths):
        if hex_key(path.stem) in known:
            found.setdefault(hex_key(path.stem), path)
    return found, len(paths) - len(found)


def noto_sources(pkg: Path, known: set[str]) -> tuple[dict[str, Path], int]:
    """Noto PNGs that emoji-datasource claims (``has_img_google``), skin variations included."""
    claimed = []
    for entry in json.loads((pkg / "emoji.json").read_text(encoding="utf-8")):
        items = [entry, *(entry.get("skin_variations") or {}).values()]
        claimed += [pkg / "img/google/64" / i["image"] for i in items if i.get("has_img_google")]
    return files_by_key(claimed, known)


def style_sources(pkgs: dict[str, Path], known: set[str]) -> dict[str, tuple[dict[str, Path], int]]:
    """Per style: ``({key: source file}, number of files matching no emojibase entry)``."""
    openmoji = list((pkgs["openmoji"] / "color" / "svg").glob("*.svg"))
    return {"noto": noto_sources(pkgs["noto"], known),
            "twemoji": files_by_key(list(pkgs["twemoji"].glob("*.svg")), known),
            "openmoji": files_by_key(openmoji, known)}


# ---------------------------------------------------------------- images
def rasterise(source: Path) -> Image.Image:
    """A 64x64 RGB image on white from an SVG (resvg) or a PNG (alpha-composited on white)."""
    if source.suffix == ".svg":
        data = resvg_py.svg_to_bytes(svg_path=str(source), width=SIZE, height=SIZE,
                                     background="#ffffff", skip_system_fonts=True)
        image = Image.open(io.BytesIO(bytes(data)))
    else:
        image = Image.open(source)
    image = image.convert("RGBA")
    if image.size != (SIZE, SIZE):
        raise ValueError(f"image is {image.size[0]}x{image.size[1]}, not {SIZE}x{SIZE}")
    flat = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return Image.frombytes("RGB", flat.size, flat.convert("RGB").tobytes())  # no info/metadata


def write_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` as a deterministic PNG (no metadata chunks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)


# ---------------------------------------------------------------- output files
def dumps(row: dict[str, Any], sort_keys: bool = False) -> str:
    """One compact JSON line, UTF-8 kept as is."""
    return json.dumps(row, ensure_ascii=False, sort_keys=sort_keys, separators=(",", ":"))


def write_sheet(images: list[Image.Image], path: Path) -> None:
    """Paste ``images`` (each 64x64) into one sheet, :data:`SHEET_COLUMNS` to a row, white
    where no cell is, and write it as a deterministic PNG. Cell ``i`` is at row
    ``i // SHEET_COLUMNS``, column ``i % SHEET_COLUMNS``."""
    rows = -(-len(images) // SHEET_COLUMNS)
    sheet = Image.new("RGB", (SHEET_COLUMNS * SIZE, rows * SIZE), (255, 255, 255))
    for i, image in enumerate(images):
        row, col = divmod(i, SHEET_COLUMNS)
        sheet.paste(image, (col * SIZE, row * SIZE))
    write_png(sheet, path)


def sheet_cell(sheet: Image.Image, cell: int) -> Image.Image:
    """Cell ``cell`` of a sheet written by :func:`write_sheet`."""
    row, col = divmod(cell, SHEET_COLUMNS)
    return sheet.crop((col * SIZE, row * SIZE, (col + 1) * SIZE, (row + 1) * SIZE))


def write_images(stage: Path, entries: list[dict[str, Any]], sources: dict[str, Any],
                 failures: dict[str, list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Render every (style, entry) with a source into ``stage/images/<style>.png``; return the
    metadata rows (``file_name`` is the image's name in an imagefolder export, ``cell`` its
    place in the style's sheet)."""
    rows = []
    for style in STYLES:
        found = sources[style][0]
        drawn: list[Image.Image] = []
        for entry in entries:
            source = found.get(norm(entry["hexcode"]))
            if source is None:
                continue
            try:
                if not source.is_file():
                    raise FileNotFoundError(f"missing file {source.name}")
                image = rasterise(source)
            except Exception as err:  # any unreadable/unrenderable source is a reported failure
                failures[style].append({"hexcode": entry["hexcode"], "file": source.name,
                                        "error": f"{type(err).__name__}: {err}"})
                continue
            rows.append({"file_name": f"images/{style}/{entry['hexcode'].lower()}.png", "cell": len(drawn),
                         "style": style, **entry})
            drawn.append(image)
        if drawn:
            write_sheet(drawn, stage / "images" / f"{style}.png")
    return rows


def alt_text_rows(entries: list[dict[str, Any]], drawn: set[str],
                  locales: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per emojibase hexcode with an image: ``{locale: {"label", "tags"}}``."""
    rows = []
    for entry in entries:
        if entry["hexcode"] not in drawn:
            continue
        texts = {loc: {"label": t[entry["hexcode"]]["label"], "tags": t[entry["hexcode"]]["tags"]}
                 for loc, t in sorted(locales.items()) if t.get(entry["hexcode"], {}).get("label")}
        rows.append({"hexcode": entry["hexcode"], "texts": texts})
    return rows


def write_manifest(folder: Path) -> None:
    """``MANIFEST.sha256`` in sha256sum format for every generated file under ``folder`` (not
    the hand-written ones: this script and ``LICENSE.md``)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    lines = [f"{hashlib.sha256((folder / f).read_bytes()).hexdigest()}  {f}\n"
             for f in files if f != "MANIFEST.sha256" and f.split("/")[0] in GENERATED]
    (folder / "MANIFEST.sha256").write_text("".join(lines), encoding="utf-8")


def report(pins: dict[str, Pin], rows: list[dict[str, Any]], sources: dict[str, Any],
           failures: dict[str, list[dict[str, str]]], extra: dict[str, Any]) -> dict[str, Any]:
    """The build report: inputs, tool versions, counts and failures per style."""
    return {
        "packages": {r: {"name": p.name, "version": p.version, "integrity": p.integrity}
                     for r, p in pins.items()},
        "tools": {"resvg-py": dist_version("resvg-py"), "Pillow": PIL.__version__,
                  "zlib": zlib.ZLIB_RUNTIME_VERSION},
        "images": {s: sum(r["style"] == s for r in rows) for s in STYLES},
        "unmatched_files_skipped": {s: sources[s][1] for s in STYLES},
        "failure_count": sum(len(f) for f in failures.values()),
        "failures": failures, **extra}


def write_corpus(stage: Path, pkgs: dict[str, Path], pins: dict[str, Pin]) -> dict[str, Any]:
    """Write images, metadata, alt-texts and the build report into ``stage``; return the report."""
    entries = load_entries(pkgs["emojibase"])
    locales = load_locales(pkgs["emojibase"])
    sources = style_sources(pkgs, {norm(e["hexcode"]) for e in entries})
    failures: dict[str, list[dict[str, str]]] = {s: [] for s in STYLES}
    rows = write_images(stage, entries, sources, failures)
    alt_rows = alt_text_rows(entries, {r["hexcode"] for r in rows}, locales)
    with open(stage / "metadata.jsonl", "w", encoding="utf-8") as f:  # rows' keys: the columns
        f.writelines(dumps(r) + "\n" for r in rows)
    with open(stage / "alt_texts.jsonl.gz", "wb") as raw:  # mtime=0, no name: same bytes every build
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write("".join(dumps(r, sort_keys=True) + "\n" for r in alt_rows).encode("utf-8"))
    with open(stage / "messages.jsonl", "w", encoding="utf-8") as f:  # names of classes and tones
        f.writelines(dumps(r, sort_keys=True) + "\n" for r in message_rows(pkgs["emojibase"]))
    n_alt = sum(1 + len(t["tags"]) for r in alt_rows for t in r["texts"].values())
    extra = {"locales": sorted(locales), "emojibase_entries": len(entries),
             "alt_text_rows": len(alt_rows), "alt_texts": n_alt}
    result = report(pins, rows, sources, failures, extra)
    (stage / "build_report.json").write_text(
        json.dumps(result, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return result


# ---------------------------------------------------------------- atomic output
def recover(out: Path) -> None:
    """Tidy after a killed run: drop stale staging folders, restore a displaced old output."""
    for stale in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        shutil.rmtree(stale)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if out.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, out)


def swap_in(stage: Path, out: Path) -> None:
    """Replace ``out`` by ``stage`` with renames; on failure the old output is put back."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    try:
        os.rename(stage, out)
    except OSError:
        if old.exists():
            os.rename(old, out)
        raise
    if old.exists():
        shutil.rmtree(old)


def build(out: Path, tarball_dir: Path, pins: dict[str, Pin] | None = None,
          carry_from: Path | None = None) -> dict[str, Any]:
    """Verify, extract and build into a sibling staging folder, then swap it in as ``out``.

    Hand-written top-level files of the old output (LICENSE.md, this script) are carried over
    from ``carry_from`` (default ``out``), so they are kept and covered by the manifest.
    """
    pins = PINS if pins is None else pins
    carry_from = out if carry_from is None else carry_from
    with tempfile.TemporaryDirectory(prefix="emoji_corpus_src-") as work:
        tarballs = verified_tarballs(tarball_dir, pins)  # refuses before anything is written
        pkgs = {r: extract(t, Path(work) / r, pins[r].keep) for r, t in tarballs.items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        recover(out)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        stage.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
        try:
            result = write_corpus(stage, pkgs, pins)
            carry_over(carry_from, stage)
            write_manifest(stage)
            swap_in(stage, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return result


def carry_over(source: Path, stage: Path) -> None:
    """Copy the non-generated top-level regular files of ``source`` into ``stage``."""
    if not source.is_dir():
        return
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in GENERATED and not path.name.startswith("."):
            shutil.copyfile(path, stage / path.name)


# ---------------------------------------------------------------- check and CLI
def read_manifest(data: bytes) -> dict[str, str]:
    """``{relative path: sha256}`` from sha256sum-format bytes."""
    return {line[66:]: line[:64] for line in data.decode("utf-8").splitlines()}


def check(out: Path, tarball_dir: Path, pins: dict[str, Pin] | None = None) -> list[str]:
    """Rebuild into a temporary folder; the files whose hashes differ from ``out``'s manifest.

    Files in ``out`` whose bytes no longer match the recorded manifest are listed too.
    """
    manifest = out / "MANIFEST.sha256"
    recorded_bytes = manifest.read_bytes() if manifest.exists() else b""
    with tempfile.TemporaryDirectory(prefix="emoji_corpus_check-") as tmp:
        build(Path(tmp) / out.name, tarball_dir, pins, carry_from=out)
        rebuilt_bytes = (Path(tmp) / out.name / "MANIFEST.sha256").read_bytes()
    recorded, rebuilt = read_manifest(recorded_bytes), read_manifest(rebuilt_bytes)
    differ = {f for f in recorded.keys() | rebuilt.keys() if recorded.get(f) != rebuilt.get(f)}
    differ |= {f for f, digest in recorded.items() if not (out / f).is_file()
               or hashlib.sha256((out / f).read_bytes()).hexdigest() != digest}
    if rebuilt_bytes != recorded_bytes and not differ:
        differ.add("MANIFEST.sha256")
    return sorted(differ)


def summarise(result: dict[str, Any], out: Path) -> None:
    """Print image counts, alt-text count and failures (count and names)."""
    print(f"wrote {out}: images {result['images']}, {result['alt_text_rows']} alt-text rows, "
        f"{result['alt_texts']} alt-texts in {len(result['locales'])} locales")
    print(f"failures: {result['failure_count']}")
    for style, items in result["failures"].items():
        for item in items:
            print(f"  {style} {item['hexcode']} ({item['file']}): {item['error']}")


def main(argv: list[str] | None = None) -> int:
    """Command line: build (default) or ``--check`` the output against a fresh rebuild."""
    default_cache = Path(os.environ.get("ALIGN_LITE_CACHE", Path.home() / ".cache" / "align_lite"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tarballs", type=Path, default=default_cache / "npm",
                        help="folder with the pinned .tgz files (missing ones are npm-packed)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in a temporary folder and compare with the output's manifest")
    args = parser.parse_args(argv)
    try:
        if args.check:
            differ = check(args.out, args.tarballs)
            print(f"{len(differ)} files differ" + "".join(f"\n  {f}" for f in differ)
                  if differ else "identical: rebuild matches MANIFEST.sha256 byte for byte")
            return 1 if differ else 0
        summarise(build(args.out, args.tarballs), args.out)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
