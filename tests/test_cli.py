"""The ``align-lite data`` command-line contract: make, filter (with report), stats."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from align_lite.cli import main
from align_lite.data.records import read_pairs

RULE_NAMES = {"image_size", "aspect_ratio", "image_alt_texts", "alt_text_sharing", "text_length", "rare_tokens"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    assert main(["data", "make", "--n", "300", "--seed", "7", "--out", str(out)]) == 0
    return out


def test_make_writes_images_and_metadata(world):
    rows = read_jsonl(world / "metadata.jsonl")
    assert len(rows) == 300
    assert all({"file_name", "text"} <= row.keys() for row in rows)
    for row in rows[:20]:
        with Image.open(world / row["file_name"]) as image:
            assert image.size == (row["width"], row["height"])


def test_make_is_deterministic(world, tmp_path):
    again = tmp_path / "again"
    assert main(["data", "make", "--n", "300", "--seed", "7", "--out", str(again)]) == 0
    assert (again / "metadata.jsonl").read_bytes() == (world / "metadata.jsonl").read_bytes()
    name = read_jsonl(world / "metadata.jsonl")[5]["file_name"]
    assert (again / name).read_bytes() == (world / name).read_bytes()
    other = tmp_path / "other"
    assert main(["data", "make", "--n", "300", "--seed", "8", "--out", str(other)]) == 0
    assert (other / "metadata.jsonl").read_bytes() != (world / "metadata.jsonl").read_bytes()


def test_filter_report_adds_up_and_output_is_complete(world, tmp_path):
    out, report_path = tmp_path / "kept", tmp_path / "report.json"
    code = main(["data", "filter", str(world), "--out", str(out), "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert set(report["removed"]) == RULE_NAMES
    assert report["kept"] + sum(report["removed"].values()) == report["rows_in"] == 300
    kept_rows = read_jsonl(out / "metadata.jsonl")
    assert len(kept_rows) == report["kept"] > 0
    assert report["removed"]["image_size"] > 0 and report["removed"]["text_length"] > 0
    for row in kept_rows:
        assert (out / row["file_name"]).is_file()
        assert min(row["width"], row["height"]) > 200
        assert 3 <= len(row["text"].split()) <= 20 or "-" in row["text"]
    # the kept folder is itself valid input, and already passes every rule
    again = tmp_path / "again"
    assert main(["data", "filter", str(out), "--out", str(again), "--report", str(tmp_path / "r2.json")]) == 0
    assert json.loads((tmp_path / "r2.json").read_text())["kept"] == report["kept"]


def test_filter_thresholds_are_options(world, tmp_path):
    report_path = tmp_path / "report.json"
    args = ["data", "filter", str(world), "--out", str(tmp_path / "k"), "--report", str(report_path),
            "--min-unigrams", "1", "--max-unigrams", "1000", "--min-image-side", "0", "--max-aspect-ratio", "100"]
    assert main(args) == 0
    removed = json.loads(report_path.read_text())["removed"]
    assert removed["text_length"] == removed["image_size"] == removed["aspect_ratio"] == 0


def make_broken_folder(src: Path, dst: Path) -> int:
    """A copy of ``src`` with a corrupt image, a missing image and bad metadata lines."""
    shutil.copytree(src, dst)
    rows = read_jsonl(dst / "metadata.jsonl")
    corrupt = dst / rows[0]["file_name"]
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    (dst / rows[1]["file_name"]).unlink()
    rows_using = sum(r["file_name"] in (rows[0]["file_name"], rows[1]["file_name"]) for r in rows)
    with open(dst / "metadata.jsonl", "ab") as f:
        f.write(b'{"file_name": "images/x.png", "text": "caf\xe9 latte here"}\n')  # latin-1 byte
        f.write(b"{not json}\n")
        f.write(b'{"file_name": "images/y.png", "text": ""}\n')
        f.write(b'{"file_name": "../outside.png", "text": "an escaping path here"}\n')
    return rows_using + 4


def test_filter_counts_and_skips_bad_input(world, tmp_path):
    broken = tmp_path / "broken"
    n_bad = make_broken_folder(world, broken)
    report_path = tmp_path / "report.json"
    assert main(["data", "filter", str(broken), "--out", str(tmp_path / "k"), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["removed"]["bad_input"] == n_bad
    assert report["rows_in"] == 300 + 4
    assert report["kept"] + sum(report["removed"].values()) == report["rows_in"]
    examples = " ".join(next(r for r in report["rules"] if r["rule"] == "bad_input")["examples"])
    for reason in ("corrupt_image", "missing_file", "not_utf8", "bad_json", "empty_text", "unsafe_file_name"):
        assert reason in examples


@pytest.mark.parametrize("make_input, message", [
    (lambda tmp: tmp / "nope", "no such file"),
    (lambda tmp: tmp, "neither metadata.jsonl nor metadata.parquet"),
    (lambda tmp: (tmp / "x.csv").write_text("a,b") and tmp / "x.csv", "expected a folder"),
])
def test_filter_unusable_input_fails_with_one_line(tmp_path, capsys, make_input, message):
    code = main(["data", "filter", str(make_input(tmp_path)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("align-lite: error:") and message in err and "\n" not in err


def test_filter_all_rows_bad_is_an_error(tmp_path, capsys):
    (tmp_path / "metadata.jsonl").write_bytes(b"{bad\n\xff\xfe\n")
    assert main(["data", "filter", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no usable rows" in capsys.readouterr().err


def test_filter_refuses_to_overwrite_its_input(world, capsys):
    assert main(["data", "filter", str(world), "--out", str(world)]) == 1
    assert "must differ" in capsys.readouterr().err


def test_filter_parquet_in_parquet_out(world, tmp_path):
    table, _ = read_pairs(world)
    src = tmp_path / "pq"
    shutil.copytree(world / "images", src / "images")
    pq.write_table(table, src / "pairs.parquet")
    out = tmp_path / "out"
    assert main(["data", "filter", str(src / "pairs.parquet"), "--out", str(out)]) == 0
    kept = pq.read_table(out / "metadata.parquet")
    assert 0 < kept.num_rows < table.num_rows
    assert kept.column_names == table.column_names


def test_filter_removes_exact_and_near_duplicates_of_an_eval_set(world, tmp_path):
    rows = [r for r in read_jsonl(world / "metadata.jsonl") if r["noise"] == "clean"]
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    exact, near = rows[0], rows[1]
    shutil.copy(world / exact["file_name"], eval_dir / "exact.png")
    with Image.open(world / near["file_name"]) as image:  # a resized, re-encoded copy
        image.resize((image.width // 2, image.height // 2)).convert("RGB").save(eval_dir / "near.jpg", quality=90)
    report_path = tmp_path / "report.json"
    args = ["data", "filter", str(world), "--out", str(tmp_path / "k"), "--report", str(report_path),
            "--eval-set", str(eval_dir)]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    assert report["removed"]["eval_duplicate"] >= 2
    kept_names = {r["file_name"] for r in read_jsonl(tmp_path / "k" / "metadata.jsonl")}
    assert exact["file_name"] not in kept_names and near["file_name"] not in kept_names


def test_stats_prints_counts_and_sharing(world, capsys):
    assert main(["data", "stats", str(world)]) == 0
    out = capsys.readouterr().out
    assert "rows (pairs)" in out and "300" in out
    assert "alt-texts shared by > 10 images" in out and "length histogram" in out


def test_console_script_runs(world, tmp_path):
    exe = shutil.which("align-lite")
    command = [exe] if exe else [sys.executable, "-m", "align_lite.cli"]
    done = subprocess.run([*command, "data", "stats", str(world)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([*command, "data", "filter", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1


def test_filter_counts_undecodable_eval_images(world, tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    shutil.copy(world / read_jsonl(world / "metadata.jsonl")[0]["file_name"], eval_dir / "good.png")
    (eval_dir / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["data", "filter", str(world), "--out", str(tmp_path / "k"), "--eval-set", str(eval_dir)]) == 0
    assert "eval set: skipped 1 rows (corrupt_image: 1)" in capsys.readouterr().out


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_make_refuses_a_non_empty_out_and_overwrite_leaves_no_orphans(tmp_path, capsys):
    out = tmp_path / "pairs"
    assert main(["data", "make", "--n", "60", "--seed", "1", "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in files_under(out)}
    assert main(["data", "make", "--n", "20", "--seed", "2", "--out", str(out)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before  # untouched
    assert main(["data", "make", "--n", "20", "--seed", "2", "--out", str(out), "--overwrite"]) == 0
    rows = read_jsonl(out / "metadata.jsonl")
    assert len(rows) == 20
    assert files_under(out) == sorted({r["file_name"] for r in rows} | {"metadata.jsonl"})  # no orphan
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]  # no staging folder left behind


def test_filter_copies_images_unless_asked_to_link_and_refuses_a_non_empty_out(world, tmp_path, capsys):
    copied, linked = tmp_path / "copied", tmp_path / "linked"
    assert main(["data", "filter", str(world), "--out", str(copied)]) == 0
    assert main(["data", "filter", str(world), "--out", str(linked), "--link"]) == 0
    name = read_jsonl(copied / "metadata.jsonl")[0]["file_name"]
    assert (copied / name).read_bytes() == (world / name).read_bytes()
    assert (copied / name).stat().st_ino != (world / name).stat().st_ino  # a copy: editing it leaves the input
    assert (linked / name).stat().st_ino == (world / name).stat().st_ino
    assert main(["data", "filter", str(world), "--out", str(copied)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["data", "filter", str(world), "--out", str(copied), "--overwrite"]) == 0


def test_an_interrupted_filter_leaves_the_old_output_intact(world, tmp_path, monkeypatch):
    from align_lite.data import curate as curate_module

    out = tmp_path / "kept"
    curate_module.curate(world, out)
    before = {name: (out / name).read_bytes() for name in files_under(out)}

    def dies_halfway(file_names, src_root, dst_root, link=False):
        shutil.copy2(src_root / file_names[0], dst_root / "partial.png")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the images were written

    monkeypatch.setattr(curate_module, "copy_images", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        curate_module.curate(world, out, overwrite=True)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_train_gives_one_line_errors_for_a_file_as_out_and_a_missing_gpu(tmp_path, capsys):
    import torch

    afile = tmp_path / "afile"
    afile.write_text("not a run folder")
    assert main(["train", "--preset", "tiny", "--out", str(afile), "--max-steps", "1"]) == 1
    assert "is a file, not a run folder" in capsys.readouterr().err  # before: FileExistsError traceback
    if not torch.cuda.is_available():
        run = ["train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--max-steps", "1", "--device", "cuda"]
        assert main(run) == 1
        assert "no CUDA GPU is visible" in capsys.readouterr().err  # before: RuntimeError from torch.cuda


def test_every_train_config_field_has_a_flag_that_sets_it():
    from dataclasses import fields

    from align_lite.cli import build_parser
    from align_lite.cli.train import _train_config
    from align_lite.train import TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "--out", "run", "--label-smoothing", "0.2", "--no-augment", "--betas", "0.8",
                              "0.9", "--keep-checkpoints", "2", "--preset", "tiny-wide", "--grad-clip", "0",
                              "--fixed-temperature", "--noisy-world", "--schedule-steps", "500"])
    config = _train_config(args)
    assert (config.label_smoothing, config.augment, config.betas, config.keep_checkpoints, config.model) == (
        0.2, False, (0.8, 0.9), 2, "tiny-wide")
    assert config.grad_clip is None and not config.learnable_temperature and config.world_noisy
    assert config.schedule_steps == 500 and config.lr == TrainConfig.cpu_tiny().lr  # unset: the recipe's
    flagged = {a.dest for a in parser._subparsers._group_actions[0].choices["train"]._actions}
    offered = {f.name for f in fields(TrainConfig) if f.metadata.get("cli", True)}
    assert offered <= flagged
    assert {f.name for f in fields(TrainConfig)} - offered == {"hard_negative_share", "hard_negative_vary"}


def test_building_the_parser_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, align_lite.cli as c; c.build_parser(); "
                           "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
