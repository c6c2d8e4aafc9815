"""Rebuild ``data_samples/emoji/`` from an extracted ``emoji-datasource-google`` npm package.

Maintenance script, not used at run time. Usage::

    mkdir -p /tmp/emoji && cd /tmp/emoji
    npm pack emoji-datasource-google@16.0.0 && tar xzf emoji-datasource-google-16.0.0.tgz
    cd -  # back to the repository root
    python data_samples/emoji/make_emoji_sample.py /tmp/emoji/package

What it does, all from the package's ``emoji.json``:

* keeps every base entry with ``has_img_google`` true, except the five skin-tone swatches
  (category "Component", subcategory "skin-tone"); the ``skin_variations`` of an entry are
  never taken, so each emoji appears once, in its default (yellow / unmodified) form;
* copies ``img/google/64/<image>`` byte for byte to ``images/<image>`` (no re-encoding);
* writes ``metadata.jsonl`` (via ``align_lite.data.records.write_pairs``), one row per image,
  sorted by ``sort_order``, with a caption ``text``, alt-texts ``texts`` and the upstream fields
  ``name``, ``short_names``, ``category``, ``subcategory``, ``unified``, ``sort_order``.

The output folder (default: this script's folder) has its ``images/`` and ``metadata.jsonl``
replaced; the license and README files beside them are left alone.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED_PACKAGE = ("emoji-datasource-google", "16.0.0")
FLAG_SUBCATEGORIES = {"country-flag", "subdivision-flag"}
# "_" or "-" joining two word characters is a separator; a leading "-"/"+" ("-1", "+1") is not.
_SEPARATOR = re.compile(r"(?<=\w)[_-](?=\w)")


def caption(entry: dict) -> str:
    """A short natural caption: the Unicode/CLDR name, lowercased.

    Region and subdivision flags are named "<Place> Flag" upstream; they become "flag of <place>".
    """
    name = entry["name"].strip()
    if entry["subcategory"] in FLAG_SUBCATEGORIES and name.endswith(" Flag"):
        return "flag of " + name[: -len(" Flag")].strip().lower()
    return name.lower()


def alt_texts(entry: dict) -> list[str]:
    """The caption, the lowercased name and each short name as words; deduplicated, in order."""
    candidates = [caption(entry), entry["name"].strip().lower()]
    candidates += [_SEPARATOR.sub(" ", s).strip().lower() for s in entry["short_names"]]
    out: list[str] = []
    for text in candidates:
        text = " ".join(text.split())
        if text and text not in out:
            out.append(text)
    return out


def select(entries: list[dict]) -> list[dict]:
    """Base entries with a Google image, minus the skin-tone swatches, sorted by sort_order."""
    kept = [
        e
        for e in entries
        if e.get("has_img_google")
        and not (e["category"] == "Component" and e["subcategory"] == "skin-tone")
    ]
    return sorted(kept, key=lambda e: e["sort_order"])


def rows_for(entries: list[dict]) -> list[dict]:
    return [
        {
            "file_name": f"images/{e['image']}",
            "text": caption(e),
            "texts": alt_texts(e),
            "name": e["name"],
            "short_names": list(e["short_names"]),
            "category": e["category"],
            "subcategory": e["subcategory"],
            "unified": e["unified"],
            "sort_order": int(e["sort_order"]),
        }
        for e in entries
    ]


def build(package: Path, out: Path) -> int:
    """Write the sample from ``package`` (an extracted npm package) into ``out``; returns rows."""
    meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
    if (meta.get("name"), meta.get("version")) != EXPECTED_PACKAGE:
        print(
            f"warning: {package} is {meta.get('name')} {meta.get('version')}, "
            f"the shipped sample documents {' '.join(EXPECTED_PACKAGE)}; update the READMEs",
            file=sys.stderr,
        )
    entries = select(json.loads((package / "emoji.json").read_text(encoding="utf-8")))
    src_dir = package / "img" / "google" / "64"
    missing = [e["image"] for e in entries if not (src_dir / e["image"]).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} images missing under {src_dir}, e.g. {missing[:5]}")

    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for e in entries:
        shutil.copyfile(src_dir / e["image"], images / e["image"])

    import pyarrow as pa

    try:
        from align_lite.data.records import write_pairs
    except ImportError:  # run from a checkout without an install
        sys.path.insert(0, str(HERE.parents[1]))
        from align_lite.data.records import write_pairs
    write_pairs(pa.Table.from_pylist(rows_for(entries)), out)
    return len(entries)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="extracted npm package folder (has emoji.json)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    args = parser.parse_args(argv)
    n = build(args.package, args.out)
    print(f"wrote {n} images and metadata.jsonl to {args.out}")


if __name__ == "__main__":
    main()
