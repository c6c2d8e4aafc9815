"""Training on real alt-text and scoring on an unseen artist: the emoji corpus's experiments.

The corpus (:mod:`align_lite.data.emoji_corpus`) is split by style: the model learns from two
artists' drawings (Noto and OpenMoji by default) and every alt-text emojibase gives them, in all
28 languages, and is scored on the third artist's (Twemoji), whose pictures it never saw — the
book's ImageNet-R. A fifth of the concepts is never trained on in any style.

* :func:`train_pairs`: the training pair table (optionally by language, kind, ALIGN's filters).
* :func:`emoji_tokenizer`: one WordPiece vocabulary learnt from those alt-texts, keeping every
  combining mark (BERT's accent stripping would erase Hindi and Thai vowel signs).
* :class:`EmojiEval` / :func:`score`: the held-out style's base emoji, Recall@1/5/10 both ways
  with each language's labels as the captions, and zero-shot top-1 over subgroups.
* :func:`train_on_emoji`: the CPU recipe on the corpus, scored along the way.
* :func:`trained_emoji_model`: the book's real-data model (600 steps, cached, with its curve);
  :func:`book_emoji_model`: the same recipe trained far longer, shipped in ``data_samples/``.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from align_lite.data.emoji import sample_folder
from align_lite.data.emoji_corpus import (EmojiCorpus, EmojiPairs, EmojiSplit, KINDS, corpus_root,
                                          load_emoji_corpus)
from align_lite.data.filters import FilterConfig, apply_filters
from align_lite.data.tokenizer import AltTextTokenizer, TokenizerConfig, train_tokenizer
from align_lite.experiments import cached_training
from align_lite.models.checkpoint import CheckpointError, from_pretrained, load_tokenizer
from align_lite.retrieval import retrieval_recall
from align_lite.train import TrainConfig, train
from align_lite.zero_shot import build_classifier, embed_images, embed_texts, topk_accuracy

#: The CPU recipe on the corpus: ``cpu_tiny`` without hard-negative batches (real alt-text has
#: no colour/count/shape columns), a larger vocabulary (28 languages, thousands of CJK
#: characters), 32-token texts.
EMOJI_RECIPE = TrainConfig.cpu_tiny(hard_negative_share=(), hard_negative_vary=None, vocab_size=16_000,
                                    eval_size=0, eval_every=0, tensorboard=False, max_steps=600)
#: Zero-shot prompts for the subgroups (prompt ensembling averages them).
SUBGROUP_TEMPLATES = ("{}", "an emoji of {}", "a {} emoji", "an icon of {}")


def train_pairs(corpus: EmojiCorpus, split: EmojiSplit = EmojiSplit(), languages: Sequence[str] | None = None,
                kinds: Sequence[str] = KINDS, filters: FilterConfig | None = None) -> pa.Table:
    """The training pairs of ``split`` (its training styles, its seen concepts); with
    ``filters``, only the pairs ALIGN's text filters keep (statistics counted on these pairs).
    Image rules are off: every emoji is 64 px square."""
    table = corpus.pairs(split.train_rows(corpus), languages, kinds)
    if filters is None:
        return table
    filters = replace(filters, min_image_side=0, max_aspect_ratio=float("inf"))
    n = table.num_rows
    keyed = table.append_column("row", pa.array(np.arange(n)))
    for side in ("width", "height"):
        keyed = keyed.append_column(side, pa.array(np.full(n, 64, dtype=np.int64)))
    kept = apply_filters(keyed, filters).kept
    return table.take(kept["row"])


def emoji_tokenizer(texts: Sequence[str], vocab_size: int = EMOJI_RECIPE.vocab_size,
                    max_length: int = EMOJI_RECIPE.text_length) -> AltTextTokenizer:
    """A WordPiece vocabulary learnt from ``texts``, lower-cased, combining marks kept."""
    return train_tokenizer(texts, TokenizerConfig(vocab_size=vocab_size, max_length=max_length, strip_accents=False))


@dataclass
class EmojiEval:
    """The held-out style's base emoji (no skin-tone variant): ``pixels`` (N, 3, 64, 64) float in
    [-1, 1]; ``rows`` their corpus rows; ``labels`` {language: (texts, image index per text)},
    each image's label in that language (an image without one is no query there); ``subgroups``
    (N,) class ids into ``subgroup_names``."""

    pixels: torch.Tensor
    rows: np.ndarray
    labels: dict[str, tuple[list[str], torch.Tensor]]
    subgroups: torch.Tensor
    subgroup_names: tuple[str, ...]

    @classmethod
    def of(cls, corpus: EmojiCorpus, split: EmojiSplit = EmojiSplit(),
           languages: Sequence[str] | None = None) -> EmojiEval:
        test = split.test_rows(corpus)
        rows = test[corpus.column("skin_tone")[test] == "none"]
        position = {int(r): i for i, r in enumerate(rows)}
        pairs = corpus.pairs(rows, languages, kinds=["label"])
        labels = {}
        for language in (corpus.languages if languages is None else languages):
            chosen = pairs.filter(pc.equal(pairs["language"], language))
            owner = torch.tensor([position[r] for r in chosen["image_index"].to_pylist()], dtype=torch.long)
            labels[language] = (chosen["text"].to_pylist(), owner)
        names = tuple(sorted(set(corpus.column("subgroup")[rows])))
        ids = torch.tensor([names.index(s) for s in corpus.column("subgroup")[rows]])
        pixels = corpus.unit_pixels(rows)
        return cls(pixels, rows, labels, ids, names)


def subgroup_classname(subgroup: str) -> str:
    """``"face-smiling"`` → ``"face smiling"``: emojibase's subgroup keys as words."""
    return subgroup.replace("-", " ")


def score(model: torch.nn.Module, tokenizer: Any, data: EmojiEval, languages: Sequence[str] | None = None,
          ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{lang}/t2i_r10``, ``{lang}/i2t_r1``, … for each language (fractions), the mean over
    languages (``mean/…``), and ``zero_shot_subgroup_top1`` (English prompts, ensembled)."""
    images = embed_images(model, data.pixels)
    out: dict[str, float] = {"images": float(len(images))}
    for language in (data.labels if languages is None else languages):
        texts, owner = data.labels[language]
        present = torch.unique(owner)  # images with a label in this language
        remap = torch.full((len(images),), -1, dtype=torch.long)
        remap[present] = torch.arange(len(present))
        recall = retrieval_recall(images[present], embed_texts(model, tokenizer, texts), remap[owner], ks)
        out.update({f"{language}/{name}": value for name, value in recall.items()})
    for name in recall:
        values = [out[f"{lang}/{name}"] for lang in (data.labels if languages is None else languages)]
        out[f"mean/{name}"] = float(np.mean(values))
    classifier = build_classifier(model, tokenizer, [subgroup_classname(s) for s in data.subgroup_names],
                                  SUBGROUP_TEMPLATES)
    top = topk_accuracy(images @ classifier.T, data.subgroups, (1, 5))
    out.update(zero_shot_subgroup_top1=top[1], zero_shot_subgroup_top5=top[5])
    return out


def zero_shot_by_language(model: torch.nn.Module, tokenizer: Any, corpus: EmojiCorpus, data: EmojiEval,
                          languages: Sequence[str]) -> dict[str, dict[str, float]]:
    """Zero-shot subgroup classification with each language's own names of the subgroups as the
    prompts (``messages.jsonl``; the bare name, no template, since templates are English):
    ``{language: {"top1", "top5", "missing"}}``, ``missing`` counting subgroups the locale does
    not name (those keep their English name, so every language ranks the same classes)."""
    english = corpus.names("en", "subgroups")
    images = embed_images(model, data.pixels)
    out = {}
    for language in languages:
        local = corpus.names(language, "subgroups")
        names = [local.get(key) or english.get(key) or subgroup_classname(key) for key in data.subgroup_names]
        classifier = build_classifier(model, tokenizer, names, ("{}",))
        top = topk_accuracy(images @ classifier.T, data.subgroups, (1, 5))
        out[language] = {"top1": top[1], "top5": top[5],
                         "missing": sum(key not in local for key in data.subgroup_names)}
    return out


@dataclass
class EmojiRun:
    """One run: its config, the scores at each checkpoint (``curve``), losses and seconds."""

    name: str
    config: dict
    curve: list[dict[str, float]]
    steps: list[int]
    losses: list[float]
    temperatures: list[float]
    train_pairs: int
    seconds: float


def train_on_emoji(config: TrainConfig = EMOJI_RECIPE, pairs: pa.Table | None = None,
                   corpus: EmojiCorpus | None = None, eval_data: EmojiEval | None = None,
                   eval_every: int = 0, tokenizer: AltTextTokenizer | None = None,
                   name: str = "emoji") -> tuple[EmojiRun, torch.nn.Module, AltTextTokenizer]:
    """Train ``config`` on ``pairs`` (default: :func:`train_pairs` of the default split) and score
    on ``eval_data`` every ``eval_every`` steps and at the end."""
    corpus = corpus or load_emoji_corpus()
    pairs = train_pairs(corpus) if pairs is None else pairs
    data = EmojiPairs.of(corpus, pairs)
    tokenizer = tokenizer or emoji_tokenizer(data.texts, config.vocab_size, config.text_length)
    eval_data = eval_data or EmojiEval.of(corpus)
    curve: list[dict[str, float]] = []

    def hook(model, step):
        scores = score(model, tokenizer, eval_data)
        curve.append({"step": step, **scores})
        return {k: v for k, v in scores.items() if k.startswith(("en/", "mean/", "zero_shot"))}

    config = replace(config, eval_size=0, eval_every=eval_every)
    start = time.perf_counter()
    result = train(config, data, eval_fns=[hook], tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    if not curve or curve[-1]["step"] != result.step:
        hook(result.model, result.step)
    run = EmojiRun(name, config.to_dict(), curve, result.steps, result.losses, result.temperatures,
                   len(data), seconds)
    return run, result.model.eval(), tokenizer


#: The real-data model of Chapters 4–6: the CPU recipe, 600 steps (~150 s on 2 cores), on the
#: set that learns most in that budget (Chapter 4's noise-versus-scale runs): the English labels
#: of both training styles. ``benchmarks/emoji_multilingual.py`` trains the multilingual one.
EMOJI_BOOK_MODEL = EMOJI_RECIPE
EMOJI_BOOK_LANGUAGES: tuple[str, ...] = ("en",)
EMOJI_BOOK_KINDS: tuple[str, ...] = ("label",)
#: :func:`trained_emoji_model` scores the held-out style (English labels) every this many steps.
EMOJI_BOOK_EVAL_EVERY = 150
#: The shipped long run of the same recipe on the same pairs (``benchmarks/book_model.py``),
#: a folder inside ``data_samples/``.
BOOK_MODEL_DIR = "emoji_model"


def trained_emoji_model(config: TrainConfig = EMOJI_BOOK_MODEL, languages: Sequence[str] = EMOJI_BOOK_LANGUAGES,
                        kinds: Sequence[str] = EMOJI_BOOK_KINDS, corpus: EmojiCorpus | None = None,
                        cache: bool = True,
                        log_fns: Sequence[Any] = ()) -> tuple[torch.nn.Module, AltTextTokenizer, dict]:
    """(model, tokenizer, record) of ``config`` trained on the default split's pairs of
    ``languages`` × ``kinds``, cached like :func:`align_lite.experiments.trained_model` (keyed
    also by the corpus's ``MANIFEST.sha256``, the languages and the kinds), so that Chapters 4,
    5 and 6 train it once. The record adds ``train_pairs`` and ``curve``: the held-out style's
    English scores (:func:`score`) every :data:`EMOJI_BOOK_EVAL_EVERY` steps and at the end.
    ``log_fns`` (e.g. a :class:`~align_lite.plots.LiveCurves`) see the training's log records
    when it trains; a cached model comes back without training."""
    corpus = corpus or load_emoji_corpus()
    manifest = corpus.root / "MANIFEST.sha256"
    corpus_key = manifest.read_text(encoding="utf-8") if manifest.is_file() else str(corpus.root)
    data_key = json.dumps({"corpus": corpus_key, "split": asdict(EmojiSplit()), "languages": list(languages),
                           "kinds": list(kinds), "eval_every": EMOJI_BOOK_EVAL_EVERY}, sort_keys=True)
    curve: list[dict[str, float]] = []
    sizes: dict[str, int] = {}

    def fit():  # only when the cache has no such model: the pairs are built here, not on a hit
        pairs = train_pairs(corpus, EmojiSplit(), list(languages), list(kinds))
        sizes["train_pairs"] = pairs.num_rows
        data = EmojiPairs.of(corpus, pairs)
        tokenizer = emoji_tokenizer(data.texts, config.vocab_size, config.text_length)
        held_out = EmojiEval.of(corpus, EmojiSplit(), ["en"])

        def hook(model, step):
            scores = score(model, tokenizer, held_out)
            curve.append({"step": step, **{k: v for k, v in scores.items() if k != "images"}})
            return {k: v for k, v in scores.items() if k in ("en/t2i_r10", "zero_shot_subgroup_top1")}

        changed = replace(config, eval_size=0, eval_every=EMOJI_BOOK_EVAL_EVERY, tensorboard=False)
        return train(changed, data, eval_fns=[hook], tokenizer=tokenizer, log_fns=log_fns)

    return cached_training(config, fit, data_key, cache, lambda: {"curve": curve, **sizes})


def corpus_digest(root: str | Path | None = None) -> str:
    """SHA-256 of the corpus's ``MANIFEST.sha256`` (default: the shipped corpus): which corpus a
    model was trained on, as the shipped model's record keeps it."""
    root = corpus_root() if root is None else Path(root)
    return hashlib.sha256((root / "MANIFEST.sha256").read_bytes()).hexdigest()


def book_emoji_model(folder: str | Path | None = None) -> tuple[torch.nn.Module, AltTextTokenizer, dict]:
    """(model, tokenizer, record) of the shipped long run (:data:`BOOK_MODEL_DIR`): the recipe
    and pairs of :func:`trained_emoji_model`, trained far past the 3-minute budget by
    ``benchmarks/book_model.py``. The record holds its held-out curve, command and machine.
    Nothing is downloaded. Raises :class:`FileNotFoundError` when the folder is missing and
    :class:`~align_lite.models.checkpoint.CheckpointError` when it lacks the tokenizer or record;
    warns when the corpus has changed since the model was trained."""
    folder = Path(folder) if folder is not None else sample_folder(BOOK_MODEL_DIR, "the shipped emoji model",
                                                                  marker="record.json")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (the shipped emoji model)")
    if not (folder / "record.json").is_file():
        raise CheckpointError(f"{folder}: no record.json; rebuild it with python benchmarks/book_model.py")
    record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    model, tokenizer = from_pretrained(folder), load_tokenizer(folder)
    if tokenizer is None:
        raise CheckpointError(f"{folder}: no tokenizer; rebuild it with python benchmarks/book_model.py")
    if (corpus_root() / "MANIFEST.sha256").is_file() and corpus_digest() != record.get("corpus_manifest_sha256"):
        warnings.warn(f"{folder} was trained on another version of the emoji corpus; its recorded scores "
                      "may not match (rebuild it with python benchmarks/book_model.py)", stacklevel=2)
    return model.eval(), tokenizer, record


# ---------------------------------------------------------------------------------------------
# Image + text queries that edit one attribute (ALIGN §7)
# ---------------------------------------------------------------------------------------------

#: The attribute edits scored: name -> (column, value). The text of each edit in a language is
#: :func:`edit_text`.
EDITS = {"dark skin tone": ("skin_tone", "dark"), "woman": ("gender", "woman")}


def edit_pairs(corpus: EmojiCorpus, rows: Sequence[int], column: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    """(sources, targets): positions in ``rows`` of each neutral emoji (no skin tone, no gender)
    and of its variant whose ``column`` is ``value``, everything else equal (same style, same
    concept, the other attribute neutral). E.g. 👋 → 👋🏿 for ("skin_tone", "dark"), 🙅 → 🙅‍♀️ for
    ("gender", "woman")."""
    rows = np.asarray(rows)
    style, concept, hexcode = (corpus.column(c)[rows] for c in ("style", "concept", "hexcode"))
    tone, gender = corpus.column("skin_tone")[rows], corpus.column("gender")[rows]
    neutral = (tone == "none") & (gender == "") & (hexcode == concept)
    wanted = {"skin_tone": (tone == value) & (gender == ""), "gender": (gender == value) & (tone == "none")}[column]
    target_of = {(s, c): i for i, (s, c) in enumerate(zip(style, concept)) if wanted[i]}
    pairs = [(i, target_of[(style[i], concept[i])]) for i in np.flatnonzero(neutral)
             if (style[i], concept[i]) in target_of]
    sources, targets = (np.array(p, dtype=np.int64) for p in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
    return sources, targets


def edit_text(corpus: EmojiCorpus, edit: str, language: str) -> str | None:
    """The words of ``edit`` in ``language``: the locale's name of the skin tone
    (``messages.jsonl``), or its label of 👩 (1F469) for "woman"; None when it has none."""
    column, value = EDITS[edit]
    if column == "skin_tone":
        return corpus.names(language, "skin_tones").get(value)
    woman = corpus.texts.filter(pc.and_(pc.and_(pc.equal(corpus.texts["hexcode"], "1F469"),
                                                pc.equal(corpus.texts["language"], language)),
                                        pc.equal(corpus.texts["kind"], "label")))
    return woman["text"][0].as_py() if woman.num_rows else None


def attribute_edits(model: torch.nn.Module, tokenizer: Any, corpus: EmojiCorpus, rows: Sequence[int],
                    languages: Sequence[str] = ("en",), text_weight: float = 2.0) -> list[dict[str, Any]]:
    """For each edit of :data:`EDITS` and language: the success rate of image+text queries over
    the gallery of ``rows`` (:func:`~align_lite.retrieval.edit_success`), beside image-only and
    text-only queries. One dict per (edit, language)."""
    from align_lite.retrieval import edit_success

    images = embed_images(model, corpus.unit_pixels(rows))
    out = []
    for edit, (column, value) in EDITS.items():
        sources, targets = edit_pairs(corpus, rows, column, value)
        for language in languages:
            text = edit_text(corpus, edit, language)
            if text is None or not len(sources):
                continue
            scores = edit_success(images, embed_texts(model, tokenizer, [text])[0],
                                  torch.from_numpy(sources), torch.from_numpy(targets), text_weight)
            out.append({"edit": edit, "language": language, "text": text, **scores})
    return out


# ---------------------------------------------------------------------------------------------
# Chapter 4's two experiments on real alt-text
# ---------------------------------------------------------------------------------------------

#: Temperature settings of the paper's Table 8: (name, initial/fixed value, learnable).
TEMPERATURES: tuple[tuple[str, float, bool], ...] = (
    ("fixed 1/128", 1 / 128, False), ("fixed 1/64", 1 / 64, False), ("fixed 1/32", 1 / 32, False),
    ("learnable (init 1.0)", 1.0, True),
)


def temperature_ablation(config: TrainConfig = EMOJI_RECIPE, corpus: EmojiCorpus | None = None,
                         eval_data: EmojiEval | None = None, pairs: pa.Table | None = None) -> list[EmojiRun]:
    """``config`` trained once per temperature setting on the same pairs (default: all training
    pairs) with the same tokenizer and seed; only the temperature differs (paper Table 8)."""
    corpus = corpus or load_emoji_corpus()
    pairs = train_pairs(corpus) if pairs is None else pairs
    eval_data = eval_data or EmojiEval.of(corpus)
    tokenizer = emoji_tokenizer(pairs["text"].to_pylist(), config.vocab_size, config.text_length)
    runs = []
    for name, temperature, learnable in TEMPERATURES:
        changed = replace(config, temperature=temperature, learnable_temperature=learnable)
        runs.append(train_on_emoji(changed, pairs, corpus, eval_data, tokenizer=tokenizer, name=name)[0])
    return runs


def noise_sets(corpus: EmojiCorpus, split: EmojiSplit = EmojiSplit()) -> dict[str, pa.Table]:
    """The training sets of the noise-versus-scale experiment (paper Tables 9/10), smallest and
    cleanest first: the English labels of one style (a curated set: one good caption per image),
    the same for both training styles, then every alt-text in every language as scraped, and what
    ALIGN's text filters keep of it."""
    noto = np.intersect1d(split.train_rows(corpus), corpus.rows(style=split.train_styles[0]))
    return {
        f"clean: English labels, {split.train_styles[0]}": corpus.pairs(noto, ["en"], ["label"]),
        "clean: English labels, both styles": train_pairs(corpus, split, ["en"], ["label"]),
        "noisy: all alt-texts, all languages": train_pairs(corpus, split),
        "noisy, after ALIGN's text filters": train_pairs(corpus, split, filters=FilterConfig()),
    }


def noise_vs_scale(config: TrainConfig = EMOJI_RECIPE, corpus: EmojiCorpus | None = None,
                   eval_data: EmojiEval | None = None) -> list[EmojiRun]:
    """The same steps × batch on each of :func:`noise_sets`, each with its own tokenizer."""
    corpus = corpus or load_emoji_corpus()
    eval_data = eval_data or EmojiEval.of(corpus)
    return [train_on_emoji(config, pairs, corpus, eval_data, name=name)[0]
            for name, pairs in noise_sets(corpus).items()]


def runs_table(runs: Sequence[EmojiRun], languages: Sequence[str] = ("en",)) -> str:
    """A Markdown table of the runs' final scores on the held-out style (percent)."""
    per_language = " | ".join(f"T→I R@1 {lang} | T→I R@10 {lang} | I→T R@10 {lang}" for lang in languages)
    head = f"| run | train pairs | steps | final σ | {per_language} | T→I R@10, mean | zero-shot subgroup top-1 |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in runs:
        s = run.curve[-1]
        cells = [f"{100 * s[f'{lang}/{k}']:.1f}" for lang in languages for k in ("t2i_r1", "t2i_r10", "i2t_r10")]
        means = f"{100 * s['mean/t2i_r10']:.1f} | {100 * s['zero_shot_subgroup_top1']:.1f}"
        lines.append(f"| {run.name} | {run.train_pairs:,} | {run.steps[-1]} | {run.temperatures[-1]:.4f} | "
                     + " | ".join(cells) + f" | {means} |")
    return "\n".join(lines)
