"""Reliability: every data command on a hostile pair folder, as a new user would run them.

Builds a folder of 142 metadata lines in which most things that go wrong with scraped data do
(truncated, empty and fake images, a decompression bomb, odd colour modes, names that lead out of
the folder by ``..``, an absolute path or a symbolic link, a run of 100 missing images, empty,
undecodable and 100 kB captions, broken JSON, missing keys), then runs ``align-lite data
filter``, ``data shards``, ``train`` (a few steps) and ``eval`` on it in fresh processes, and
checks that each exits 0 without a traceback, that every line is accounted for (kept, or skipped
with its reason) and that no byte of the file outside the folder reaches any output.

    python benchmarks/hostile_inputs.py        # writes book/appendix/generated/hostile_inputs.{md,json}

``tests/test_hostile_inputs.py`` runs the same code and asserts the same things.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

GOOD = 24  # plain RGB photographs with ordinary captions
MISSING_RUN = 100  # consecutive rows whose images were never downloaded
LONG_CAPTION_BYTES = 100_000

# What each command must report for the folder below, by reason.
READ_DROPS = {"bad_json": 1, "empty_text": 2, "missing_file_name": 1, "not_utf8": 1}
IMAGE_DROPS = {"corrupt_image": 3, "empty_file": 1, "missing_file": MISSING_RUN, "unsafe_file_name": 3}


@dataclass
class HostileFolder:
    root: Path  # the pair folder
    secret: Path  # a file outside it that three rows try to reach
    lines: int  # metadata lines written
    readable: int  # rows whose image decodes and whose caption is usable
    cases: list[str] = field(default_factory=list)  # what was put in, for the report


def _photo(seed: int, size: int = 256) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    noise = rng.integers(-40, 40, (size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def build_hostile_folder(parent: Path) -> HostileFolder:
    """Write the hostile folder under ``parent`` (``parent/pairs``, and ``parent/outside.png``)."""
    root, images = parent / "pairs", parent / "pairs" / "images"
    images.mkdir(parents=True)
    secret = parent / "outside.png"
    _photo(999).save(secret)
    lines: list[bytes] = []
    cases: list[str] = []

    def row(name: str, text: str, **extra) -> None:
        lines.append(json.dumps({"file_name": name, "text": text, **extra}, ensure_ascii=False).encode())

    for i in range(GOOD):
        _photo(i).save(images / f"good_{i}.jpg", quality=90)
        row(f"images/good_{i}.jpg", f"a photo of object number {i} on a wooden table")
    cases.append(f"{GOOD} plain RGB JPEGs with ordinary captions")
    photo = _photo(100)
    photo.convert("RGBA").save(images / "rgba.png")
    photo.convert("L").save(images / "gray.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(images / "palette.png")
    photo.convert("CMYK").save(images / "cmyk.jpg")
    for mode in ("rgba.png", "gray.png", "palette.png", "cmyk.jpg"):
        row(f"images/{mode}", f"the same photo stored as {mode.split('.')[0]} colour")
    cases.append("RGBA, greyscale, palette and CMYK images (usable: converted to RGB)")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(images / "one_pixel.png")
    row("images/one_pixel.png", "a single red pixel on its own")
    cases.append("a 1×1 image (usable; data filter drops it by its size rule)")
    _photo(101).save(images / "long.jpg")
    row("images/long.jpg", ("word " * (LONG_CAPTION_BYTES // 5)).strip())
    cases.append("a 100 kB caption (usable; tokenised to its first tokens, dropped by the word-count rule)")
    Image.new("L", (12_000, 12_000)).save(images / "bomb.png")
    row("images/bomb.png", "a picture far too large to decode safely")
    raw = (images / "good_0.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    row("images/truncated.jpg", "a photo that stops a third of the way in")
    (images / "zero.jpg").write_bytes(b"")
    row("images/zero.jpg", "a file of zero bytes named like a photo")
    (images / "words.jpg").write_text("this is a text file, not a JPEG\n")
    row("images/words.jpg", "a text file that calls itself a photo")
    cases.append("a 12000×12000 decompression bomb, a truncated JPEG, a zero-byte file, text named .jpg")
    row("../outside.png", "a name that climbs out of the folder")
    row(str(secret.resolve()), "an absolute name outside the folder")
    (images / "link.png").symlink_to(secret.resolve())
    row("images/link.png", "a symbolic link to a file outside the folder")
    cases.append("`..` and absolute names and a symbolic link, all to a file outside the folder")
    for i in range(MISSING_RUN):
        row(f"images/missing_{i:03d}.jpg", f"a photo that was never downloaded, number {i}")
    cases.append(f"a run of {MISSING_RUN} rows whose images are missing")
    row("images/good_1.jpg", "")
    lines.append(b'{"file_name": "images/good_2.jpg", "text": "caf\xe9 in Latin-1, not UTF-8"}')
    lines.append(b'{"file_name": "images/good_3.jpg", "text": "a line cut short')
    lines.append(json.dumps({"text": "a caption without its image"}).encode())
    lines.append(json.dumps({"file_name": "images/good_4.jpg"}).encode())
    cases.append("an empty caption, a non-UTF-8 line, malformed JSON, a row without file_name, one without text")
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return HostileFolder(root, secret, len(lines), GOOD + 4 + 1 + 1, cases)


def align_lite(*args: str | Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``align-lite ARGS`` in a fresh Python process (what a user's shell would do)."""
    return subprocess.run([sys.executable, "-m", "align_lite.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "ALIGN_PROGRESS": "0"})


def run_all(folder: HostileFolder, work: Path) -> dict[str, dict]:
    """Every command on the folder: exit status, traceback seen, seconds and what it reported."""
    steps = {
        "data filter": ("data", "filter", folder.root, "--out", work / "kept", "--report", work / "filter.json"),
        "data shards": ("data", "shards", folder.root, "--out", work / "shards" / "shard-%06d.tar",
                        "--report", work / "shards.json"),
        "train": ("train", "--preset", "tiny", "--data", folder.root, "--out", work / "run", "--max-steps", "3",
                  "--batch-size", "8", "--eval-size", "4", "--text-length", "16", "--no-tensorboard"),
        "eval": ("eval", work / "run", "--data", folder.root, "--json"),
    }
    results = {}
    for name, args in steps.items():
        start = time.perf_counter()
        done = align_lite(*args)
        results[name] = {"returncode": done.returncode, "traceback": "Traceback" in done.stderr + done.stdout,
                         "seconds": time.perf_counter() - start, "stdout": done.stdout, "stderr": done.stderr}
    filter_report = json.loads((work / "filter.json").read_text())
    results["data filter"]["counts"] = {"rows_in": filter_report["rows_in"], "kept": filter_report["kept"],
                                        "removed": filter_report["removed"],
                                        "bad_input": filter_report["bad_input_by_reason"]}
    shards = json.loads((work / "shards.json").read_text())
    import webdataset as wds

    packed = sum(1 for _ in wds.WebDataset(shards["shards"], shardshuffle=False)) if shards["shards"] else 0
    results["data shards"]["counts"] = {"packed": packed, "skipped": shards["skipped"]["counts"]}
    results["train"]["counts"] = json.loads((work / "run" / "data_report.json").read_text())
    scores = json.loads(results["eval"]["stdout"])
    results["eval"]["counts"] = {"images": int(scores["images"]), "skipped": scores["skipped"]}
    results["outside bytes in outputs"] = {"found": outside_bytes_found(folder.secret, work)}
    return results


def outside_bytes_found(secret: Path, work: Path) -> list[str]:
    """Outputs under ``work`` that hold the outside file's bytes (copied, linked or packed)."""
    data = secret.read_bytes()
    return [str(p) for p in sorted(work.rglob("*")) if p.is_file() and data in p.read_bytes()]


def to_markdown(folder: HostileFolder, results: dict[str, dict]) -> str:
    def reasons(counts: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

    f, s, t, e = (results[k]["counts"] for k in ("data filter", "data shards", "train", "eval"))
    lines = [
        f"A pair folder of {folder.lines} metadata lines, {folder.readable} of them usable; in it:",
        "",
        *[f"- {case}" for case in folder.cases],
        "",
        "| command | exit | traceback | s | accounted for |",
        "|---|---:|---|---:|---|",
        f"| `data filter` | {results['data filter']['returncode']} "
        f"| {'yes' if results['data filter']['traceback'] else 'no'} "
        f"| {results['data filter']['seconds']:.1f} | {f['rows_in']} lines in = {f['kept']} kept + "
        f"{sum(f['bad_input'].values())} bad input ({reasons(f['bad_input'])}) + "
        f"{sum(f['removed'].values()) - sum(f['bad_input'].values())} removed by ALIGN's rules "
        f"({reasons({k: v for k, v in f['removed'].items() if v and k != 'bad_input'})}) |",
        f"| `data shards` | {results['data shards']['returncode']} "
        f"| {'yes' if results['data shards']['traceback'] else 'no'} "
        f"| {results['data shards']['seconds']:.1f} | {s['packed']} packed + {sum(s['skipped'].values())} skipped "
        f"({reasons(s['skipped'])}) |",
        f"| `train` (3 steps) | {results['train']['returncode']} | {'yes' if results['train']['traceback'] else 'no'} "
        f"| {results['train']['seconds']:.1f} | {t['rows']} rows + {sum(t['dropped_while_reading'].values())} dropped "
        f"while reading; {t['bad_images_total']} of the 24 rows drawn had bad images, replaced by the next "
        f"readable row ({reasons(t['bad_images'])}) |",
        f"| `eval` | {results['eval']['returncode']} | {'yes' if results['eval']['traceback'] else 'no'} "
        f"| {results['eval']['seconds']:.1f} | {e['images']} images scored + {sum(e['skipped'].values())} skipped "
        f"({reasons(e['skipped'])}) |",
        "",
        f"Files outside the folder read into any output: {len(results['outside bytes in outputs']['found'])}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import OUT_DIR, write_report

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_hostile_folder(Path(tmp))
        results = run_all(folder, Path(tmp) / "work")
    summary = {"lines": folder.lines, "readable": folder.readable, "cases": folder.cases,
               "results": {k: {key: v for key, v in r.items() if key not in ("stdout", "stderr")}
                           for k, r in results.items()}}
    write_report(OUT_DIR, "hostile_inputs", summary, to_markdown(folder, results))


if __name__ == "__main__":
    main()
