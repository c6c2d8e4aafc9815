"""The experiments of Chapter 4, as functions and as ``align-lite experiment``.

* :func:`temperature_ablation`: one model trained with the temperature fixed at 1/128, 1/64,
  1/32 and learnt from 1.0, everything else equal (the paper's Table 8, on the generated world).
* :func:`noise_vs_scale`: the same compute spent on a small clean set and on larger noisy ones
  (the paper's Tables 9/10): noisy alt-texts are generated, then cleaned only by the paper's
  simple filters (:mod:`align_lite.data.filters`), as ALIGN's data was.

Every run is scored on one held-out :class:`WorldEval` set (a world drawn with another seed):
zero-shot top-1/top-5 over the 64 "colour shape" classes, on scenes that show one kind of object
(a scene "a red star left of a blue heart" has no single right class), and Recall@1 both ways on
its 512 captions (:func:`~align_lite.retrieval.retrieval_recall`: a hit is the pair's own
partner, the paper's definition; the held-out world's captions are all distinct). Results are
:class:`RunSummary` records, saved and loaded as JSON so that a chapter can show a recorded
full-size run beside a short live one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from align_lite.data.emoji import CACHE_ENV, cache_dir  # noqa: F401  (re-exported: ex.cache_dir())
from align_lite.data.filters import FilterConfig, apply_filters
from align_lite.data.images import CropToPixels
from align_lite.data.records import fresh_output
from align_lite.data.tokenizer import TokenizerConfig, train_tokenizer
from align_lite.data.world import SHAPES, WorldConfig, WorldDataset, make_world_table
from align_lite.evaluate import WORLD_CLASSNAMES, WORLD_EVAL_SEED, world_eval_set
from align_lite.models import from_pretrained, get_preset, load_tokenizer, save_pretrained
from align_lite.retrieval import retrieval_recall
from align_lite.train import TrainConfig, train, world_transform_config
from align_lite.world_probes import count_prompts
from align_lite.zero_shot import (build_classifier, classifier_from_prompts, embed_images, embed_texts,
                                  topk_accuracy)

CLASSNAMES = WORLD_CLASSNAMES  # the 64 "colour shape" classes, colour-major
TEMPLATES = ("a photo of a {}",)

EVAL_SEED = WORLD_EVAL_SEED  # held-out worlds are drawn with seeds the training worlds never use

# Paper Table 8 (B5 + BERT-base; MSCOCO zero-shot R@1 image→text, text→image; ImageNet KNN R@1).
PAPER_TABLE8 = {
    "fixed 1/128": {"i2t_r1": 52.2, "t2i_r1": 36.5, "knn_r1": 64.8},
    "fixed 1/64": {"i2t_r1": 52.2, "t2i_r1": 37.3, "knn_r1": 64.8},
    "fixed 1/32": {"i2t_r1": 39.6, "t2i_r1": 26.9, "knn_r1": 61.2},
    "learnable (init 1.0)": {"i2t_r1": 51.7, "t2i_r1": 37.5, "knn_r1": 64.6},
}
TEMPERATURE_SETTINGS: tuple[tuple[str, float, bool], ...] = (
    ("fixed 1/128", 1 / 128, False),
    ("fixed 1/64", 1 / 64, False),
    ("fixed 1/32", 1 / 32, False),
    ("learnable (init 1.0)", 1.0, True),
)


def number_prompts(classname: str, max_count: int = WorldConfig().max_count) -> list[str]:
    """The class in every number the world's captions use: "a photo of a red star", "a photo of
    two red stars", … up to ``max_count``. One template cannot say this (the plural is a different
    word), and a scene shows 1 to ``max_count`` objects; ``TEMPLATES`` only ever says one."""
    color, shape = classname.split()
    return [f"a photo of {phrase}" for phrase in count_prompts(color, shape, max_count)]


# ---------------------------------------------------------------------------------------------
# The held-out evaluation set
# ---------------------------------------------------------------------------------------------


@dataclass
class WorldEval:
    """Held-out images of a world with their captions and (for one-kind scenes) classes.

    ``pixels`` (N, 3, S, S) in [-1, 1], drawn uncropped (:func:`~align_lite.evaluate.world_eval_set`);
    ``texts`` the N captions; ``labels`` (N,) class indices into :data:`CLASSNAMES`, -1 for two-kind scenes (left out of
    zero-shot, kept for retrieval)."""

    pixels: torch.Tensor
    texts: list[str]
    labels: torch.Tensor
    seed: int

    @classmethod
    def from_world(cls, n: int = 512, seed: int = EVAL_SEED, image_size: int = 64) -> WorldEval:
        data = world_eval_set(n, seed, image_size)
        return cls(data.pixels, data.texts, data.labels, seed)

    @property
    def classified(self) -> torch.Tensor:
        """(M,) indices of the one-kind scenes (the zero-shot subset)."""
        return torch.nonzero(self.labels >= 0).flatten()


def score_world(model: torch.nn.Module, tokenizer, data: WorldEval) -> dict[str, float]:
    """Scores in [0, 1]: zero-shot top-1/top-5 over :data:`CLASSNAMES` with the single prompt
    :data:`TEMPLATES`, and how often its top-1 class has the right colour and the right shape
    (chance 1/8 each); zero-shot top-1 with the :func:`number_prompts` ensemble
    (``zero_shot_numbers_top1``); Recall@1 both ways over all N pairs (``i2t_r1``, ``t2i_r1``:
    :func:`~align_lite.retrieval.retrieval_recall`, only the pair's own partner is a hit)."""
    keep = data.classified
    all_images = embed_images(model, data.pixels)  # (N, D)
    images = all_images[keep]  # (M, D)
    scores = images @ build_classifier(model, tokenizer, CLASSNAMES, TEMPLATES).T  # (M, 64)
    labels = data.labels[keep]
    top = topk_accuracy(scores, labels, (1, 5))
    predicted = scores.argmax(1).cpu()
    n_shapes = len(SHAPES)
    numbers = images @ classifier_from_prompts(model, tokenizer, [number_prompts(c) for c in CLASSNAMES]).T
    out = {"zero_shot_top1": top[1], "zero_shot_top5": top[5],
           "colour_top1": (predicted // n_shapes == labels // n_shapes).float().mean().item(),
           "shape_top1": (predicted % n_shapes == labels % n_shapes).float().mean().item(),
           "zero_shot_numbers_top1": topk_accuracy(numbers, labels, (1,))[1]}
    texts = embed_texts(model, tokenizer, data.texts)  # (N, D), caption j belongs to image j
    out.update(retrieval_recall(all_images, texts, torch.arange(len(data.texts)), ks=(1,)))
    return out


# ---------------------------------------------------------------------------------------------
# Runs and their records
# ---------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """One training run of an experiment: its settings, curves and final held-out scores."""

    name: str
    config: dict[str, Any]
    metrics: dict[str, float]  # final scores (see :func:`score_world`)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)  # {"step", scores…} during training
    train_pairs: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


class WorldRows(torch.utils.data.Dataset):
    """Rows ``rows`` of a drawn world as training pairs (``{"image", "text", "index"}``), with
    the ``texts`` list :func:`~align_lite.train.train` learns its tokenizer from."""

    def __init__(self, world: WorldDataset, rows: Sequence[int]):
        self.world, self.rows = world, [int(r) for r in rows]
        self.table = world.table.take(self.rows)  # the rows' columns (hard-negative batches group by them)
        self.texts = self.table["text"].to_pylist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.world[self.rows[index]]
        return {"image": item["image"], "text": item["text"], "index": index}


def world_rows(world: WorldConfig, image_size: int, rows: Sequence[int] | None = None) -> WorldRows:
    """A training set of ``rows`` of ``world`` (all rows if None), drawn uncropped at
    ``image_size`` and cached (as :func:`~align_lite.train.train` draws the world)."""
    crop = CropToPixels(world_transform_config(image_size))
    drawn = WorldDataset(world, image_size=image_size, transform=crop, cache=True)
    return WorldRows(drawn, range(world.n) if rows is None else rows)


def run_experiment(name: str, config: TrainConfig, data: Any, eval_data: WorldEval, eval_points: int = 4,
                   tokenizer=None) -> RunSummary:
    """Train ``config`` on ``data`` and score on ``eval_data`` ``eval_points`` times along the way."""
    config = replace(config, eval_size=0, eval_every=max(1, config.max_steps // max(eval_points, 1)))
    if tokenizer is None:
        tok_config = TokenizerConfig(vocab_size=config.vocab_size, max_length=config.text_length)
        tokenizer = train_tokenizer(data.texts, tok_config)
    curve: list[dict[str, float]] = []

    def hook(model, step):
        scores = score_world(model, tokenizer, eval_data)
        curve.append({"step": step, **scores})
        return scores

    start = time.perf_counter()
    result = train(config, data, eval_fns=[hook], tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    scored_last = curve and curve[-1]["step"] == result.step
    final = curve[-1] if scored_last else {"step": result.step, **hook(result.model, result.step)}
    metrics = {k: v for k, v in final.items() if k != "step"}
    return RunSummary(name=name, config=config.to_dict(), metrics=metrics, steps=result.steps, losses=result.losses,
                      temperatures=result.temperatures, curve=curve, train_pairs=len(data), seconds=seconds)


# ---------------------------------------------------------------------------------------------
# The two experiments
# ---------------------------------------------------------------------------------------------


def variants(base: TrainConfig, changes: Mapping[str, Mapping[str, Any]], eval_data: WorldEval | None = None,
             eval_points: int = 4) -> list[RunSummary]:
    """An ablation: ``base`` trained once per named set of field ``changes`` (``{"name": {"field":
    value}}``; ``{}`` is ``base`` itself) on the clean world of ``base``, with the same seed and
    the same tokenizer, so that only the changed fields differ between runs."""
    eval_data = eval_data or WorldEval.from_world(image_size=_image_size(base))
    data = world_rows(WorldConfig.clean(n=base.world_n, seed=base.world_seed), _image_size(base))
    tokenizer = train_tokenizer(data.texts, TokenizerConfig(vocab_size=base.vocab_size, max_length=base.text_length))
    return [run_experiment(name, replace(base, **fields), data, eval_data, eval_points, tokenizer=tokenizer)
            for name, fields in changes.items()]


def temperature_ablation(base: TrainConfig, eval_data: WorldEval | None = None,
                         settings: Sequence[tuple[str, float, bool]] = TEMPERATURE_SETTINGS,
                         eval_points: int = 4) -> list[RunSummary]:
    """``base`` trained once per (name, temperature, learnable) setting on the same data, same
    seed and the same tokenizer; only the temperature differs."""
    changes = {name: {"temperature": temperature, "learnable_temperature": learnable}
               for name, temperature, learnable in settings}
    return variants(base, changes, eval_data, eval_points)


def over_seeds(job: Callable[[TrainConfig], list[RunSummary]], base: TrainConfig,
               seeds: Sequence[int]) -> list[RunSummary]:
    """``job(base)`` once per seed of ``seeds`` (``base.seed`` replaced), every run of every seed
    in seed order. The seed sets the weights' initialisation and the batch order; the worlds, the
    held-out set and the tokenizer stay the same, so the runs of one name differ by luck alone."""
    return [run for seed in seeds for run in job(replace(base, seed=int(seed)))]


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def _mean_lists(lists: Sequence[Sequence[float]]) -> list[float]:
    return [_mean(column) for column in zip(*lists)]  # stops at the shortest list


def seed_means(runs: Sequence[RunSummary]) -> list[RunSummary]:
    """Runs of one name (one per seed, from :func:`over_seeds`) folded into one, in the order
    names first appear: metrics, losses, temperatures and the curve averaged over the seeds;
    ``notes["seeds"]`` lists the seeds and ``notes["range"]`` each metric's ``[min, max]`` (and
    ``"final_sigma"``'s). A name with one run comes back with a range of width zero."""
    groups: dict[str, list[RunSummary]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    folded = []
    for name, group in groups.items():
        metrics = {k: _mean([r.metrics[k] for r in group]) for k in group[0].metrics}
        spread = {k: [min(r.metrics[k] for r in group), max(r.metrics[k] for r in group)] for k in metrics}
        sigmas = [r.temperatures[-1] for r in group if r.temperatures]
        if sigmas:
            spread["final_sigma"] = [min(sigmas), max(sigmas)]
        curve = [{k: _mean([point[k] for point in points]) for k in points[0]}
                 for points in zip(*(r.curve for r in group))]
        notes = {**group[0].notes, "seeds": [r.config.get("seed") for r in group], "range": spread}
        folded.append(replace(group[0], metrics=metrics, losses=_mean_lists([r.losses for r in group]),
                              temperatures=_mean_lists([r.temperatures for r in group]), curve=curve,
                              seconds=_mean([r.seconds for r in group]), notes=notes))
    return folded


def noisy_filtered_rows(world: WorldConfig,
                        filters: FilterConfig = FilterConfig()) -> tuple[np.ndarray, dict[str, int]]:
    """Rows of a (noisy) world kept by the paper's filters, and how many each rule dropped."""
    table = make_world_table(world)
    table = table.append_column("row", pa.array(np.arange(table.num_rows)))
    result = apply_filters(table, filters)
    dropped = {o.rule: o.removed for o in result.report.rules if o.removed}
    return np.asarray(result.kept["row"].to_numpy()), dropped


def noise_vs_scale(base: TrainConfig, clean_n: int = 1024, noisy_ratios: Sequence[int] = (1, 2, 4, 8),
                   eval_data: WorldEval | None = None, filters: FilterConfig = FilterConfig(),
                   eval_points: int = 4) -> list[RunSummary]:
    """The same steps x batch on ``clean_n`` clean pairs and on noisy worlds of ``ratio·clean_n``
    rows (after the paper's filters). Returns one :class:`RunSummary` per set, clean first."""
    size = _image_size(base)
    eval_data = eval_data or WorldEval.from_world(image_size=size)
    sets: list[tuple[str, WorldConfig, np.ndarray | None, dict]] = [
        (f"clean {clean_n}", WorldConfig.clean(n=clean_n, seed=base.world_seed), None, {})]
    for ratio in noisy_ratios:
        world = WorldConfig.noisy(n=ratio * clean_n, seed=base.world_seed + ratio)
        rows, dropped = noisy_filtered_rows(world, filters)
        sets.append((f"noisy {ratio}x", world, rows, dropped))
    runs = []
    for name, world, rows, dropped in sets:
        data = world_rows(world, size, rows)
        run = run_experiment(name, base, data, eval_data, eval_points)
        run.notes = {"world_rows": world.n, "kept_after_filters": len(data), "dropped_by_rule": dropped,
                     "noisy": rows is not None}
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------
# The model Chapters 5 and 6 study
# ---------------------------------------------------------------------------------------------

#: The model Chapters 5 and 6 study: the CPU recipe, 600 steps (~65 s on 2 cores). Its temperature is
#: learnt (from 0.1, 20x learning rate; Chapter 4's recorded ablation starts its learnable run at the
#: paper's 1.0, and ``benchmarks/tiny_recipe.py`` measures what starting at 0.1 is worth).
BOOK_MODEL = TrainConfig.cpu_tiny(max_steps=600, eval_size=0, eval_every=0, tensorboard=False)


def _source_digest() -> str:
    """A hash of the package's source: a cached model is reused only by the code that trained it."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.relative_to(Path(__file__).parent).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def trained_model(config: TrainConfig = BOOK_MODEL, cache: bool = True) -> tuple[torch.nn.Module, Any, dict]:
    """(model, tokenizer, record) of ``config`` trained on the generated world; the record holds
    ``steps``, ``losses``, ``temperatures``, ``seconds``, whether it came from the cache
    (``cached``) and the cached model's ``folder`` (loadable by ``align-lite eval``; None without
    ``cache``).

    With ``cache`` the model is saved (safetensors) under :func:`cache_dir`, keyed by the config
    and the package's source, so that the chapters that study one model train it once. Training
    is deterministic on a given machine, so a cached and a fresh model are the same.
    """
    return cached_training(config, lambda: train(config), cache=cache)


@contextlib.contextmanager
def caller_rng_kept() -> Iterator[None]:
    """Restore Python's, numpy's and torch's (CPU and CUDA) global random state on exit, so that
    what a notebook draws after asking for a model is the same whether the model was trained
    (:func:`~align_lite.train.train` seeds the global generators) or read from the cache."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def cached_training(config: TrainConfig, fit: Callable[[], Any], data_key: str = "",
                    cache: bool = True, extra_record: Callable[[], dict] | None = None,
                    ) -> tuple[torch.nn.Module, Any, dict]:
    """(model, tokenizer, record) of ``fit()`` (which trains ``config`` and returns a
    :class:`~align_lite.train.TrainResult`), cached under :func:`cache_dir` by ``config``,
    ``data_key`` (what the data is, when it is not the config's world) and the package's source.
    ``extra_record()``, called after ``fit``, adds to the record (e.g. a held-out curve kept by
    ``fit``'s eval hook), so a cached model comes back with it. See :func:`trained_model`; the
    record is written last, so a half-written folder is never read as a model."""
    with caller_rng_kept():  # training reseeds the global generators, loading draws an init
        return _cached_training(config, fit, data_key, cache, extra_record)


def _cached_training(config: TrainConfig, fit: Callable[[], Any], data_key: str, cache: bool,
                     extra_record: Callable[[], dict] | None) -> tuple[torch.nn.Module, Any, dict]:
    payload = json.dumps(config.to_dict(), sort_keys=True) + data_key + _source_digest()
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    folder = cache_dir() / "models" / key
    if cache and (folder / "record.json").is_file():
        record = json.loads((folder / "record.json").read_text())
        return from_pretrained(folder).eval(), load_tokenizer(folder), {**record, "cached": True, "folder": str(folder)}
    result = fit()
    record = {"steps": result.steps, "losses": result.losses, "temperatures": result.temperatures,
              "seconds": result.seconds, "config": config.to_dict(), "data": data_key,
              **(extra_record() if extra_record is not None else {})}
    if cache:
        with fresh_output(folder, overwrite=True) as staging:  # a half-written folder is replaced
            save_pretrained(result.model, staging, result.tokenizer)
            (staging / "record.json").write_text(json.dumps(record) + "\n")
    return result.model.eval(), result.tokenizer, {**record, "cached": False, "folder": str(folder) if cache else None}


def _image_size(config: TrainConfig) -> int:
    return get_preset(config.model).image.image_size


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def save_runs(runs: Sequence[RunSummary], path: str | Path, **meta: Any) -> Path:
    """Write runs (and ``meta``, e.g. the command and machine) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=1) + "\n")
    return path


def load_runs(path: str | Path) -> tuple[list[RunSummary], dict[str, Any]]:
    """Runs and meta written by :func:`save_runs`."""
    payload = json.loads(Path(path).read_text())
    return [RunSummary(**r) for r in payload["runs"]], payload.get("meta", {})


def find_recorded(stem: str, start: str | Path | None = None) -> Path | None:
    """``book/appendix/generated/{stem}.json`` (written by ``benchmarks/chapter4_experiments.py``)
    in ``start`` (default: the working folder) or a parent, i.e. inside a checkout of the
    repository; ``None`` elsewhere (a notebook opened alone, as on Colab)."""
    here = Path(start) if start is not None else Path.cwd()
    for folder in (here, *here.resolve().parents):
        candidate = folder / "book" / "appendix" / "generated" / f"{stem}.json"
        if candidate.is_file():
            return candidate
        if (folder / "appendix" / "generated" / f"{stem}.json").is_file():  # from inside book/
            return folder / "appendix" / "generated" / f"{stem}.json"
    return None


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"  # "–": recorded before the metric existed


def spread_text(run: RunSummary, key: str) -> str:
    """A metric of ``run`` in percent; for a run folded over seeds (:func:`seed_means`) with its
    range, ``"81.4 (80.1–82.9)"``: the mean, then the lowest and highest seed."""
    value = run.metrics.get(key)
    low_high = run.notes.get("range", {}).get(key)
    if value is None or not low_high or len(run.notes.get("seeds", ())) < 2:
        return _percent(value)
    return f"{_percent(value)} ({_percent(low_high[0])}–{_percent(low_high[1])})"


TABLE_METRICS = ("zero_shot_top1", "zero_shot_top5", "colour_top1", "shape_top1", "zero_shot_numbers_top1",
                 "i2t_r1", "t2i_r1")


def runs_table(runs: Sequence[RunSummary], paper: dict[str, dict[str, float]] | None = None) -> str:
    """A Markdown table of final scores (percent), with the paper's numbers where given. Runs of
    one name over several seeds are folded (:func:`seed_means`): each cell reads ``mean (min–max)``."""
    head = ("| run | zero-shot top-1 | top-5 | colour | shape | top-1, number prompts | I→T R@1 | T→I R@1 | final σ "
            "| train pairs |")
    if paper:
        head += " paper I→T R@1 | paper T→I R@1 |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in seed_means(runs):
        sigma = r.temperatures[-1] if r.temperatures else float("nan")
        cells = " | ".join(spread_text(r, key) for key in TABLE_METRICS)
        row = f"| {r.name} | {cells} | {sigma:.4f} | {r.train_pairs:,} |"
        if paper:
            p = paper.get(r.name, {})
            row += f" {p.get('i2t_r1', '–')} | {p.get('t2i_r1', '–')} |"
        lines.append(row)
    return "\n".join(lines)
