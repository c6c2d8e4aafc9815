"""Hard-negative batches: runs of rows that share some attributes and differ in one.

The contrastive loss only teaches what tells a pair apart from the other pairs *in its batch*.
In a shuffled batch of 64 world rows, a caption has about two negatives of the same colour and
the same number of objects (there are 32 such cells), so the cheapest way to win is colour,
count, size and position, and the shape of a lone object is learnt last. A shuffled batch of
ALIGN's 16,384 world rows would hold hundreds of such near misses for every pair. A CPU batch of 64 can hold them too
if it is *composed*: :func:`hard_negative_order` lays the rows out in runs that share the
``shared`` attributes (say colour and count) and differ in ``varied`` (say shape), so that
within a run, only the varied attribute tells the pairs apart. Batches cut from that order (as
:class:`~align_lite.train.StepBatchSampler` cuts a shuffled one) are made of such runs.

The order is a permutation: every row is used exactly once per epoch, as with plain shuffling.
Dense-retrieval training composes batches the same way (e.g. TAS-Balanced's topic-clustered
batches, Hofstätter et al., SIGIR 2021).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def hard_negative_runs(shared: Sequence[Hashable], varied: Sequence[Hashable],
                       rng: np.random.Generator) -> list[list[int]]:
    """Positions ``0 … n-1`` split into runs: a run's rows share ``shared[i]`` and have pairwise
    different ``varied[i]``. Rows whose shared key or varied value is ``None`` become runs of one.

    Within a group of rows that share a key, each varied value's rows are shuffled, and run ``r``
    takes the ``r``-th row of every value that has one (in shuffled value order), so runs are as
    long as there are varied values until the rarer values run out. Every position is in exactly
    one run; runs come back in no particular order (:func:`hard_negative_order` shuffles them)."""
    if len(shared) != len(varied):
        raise ValueError(f"shared has {len(shared)} rows but varied has {len(varied)}")
    groups: dict[Hashable, dict[Hashable, list[int]]] = {}
    runs: list[list[int]] = []
    for i, (key, value) in enumerate(zip(shared, varied)):
        if key is None or value is None:
            runs.append([i])
        else:
            groups.setdefault(key, {}).setdefault(value, []).append(i)
    for key in sorted(groups, key=repr):  # a fixed order, so that the rng alone decides
        buckets = [np.array(groups[key][v])[rng.permutation(len(groups[key][v]))]
                   for v in sorted(groups[key], key=repr)]
        for r in range(max(len(b) for b in buckets)):
            run = [int(b[r]) for b in buckets if len(b) > r]
            runs.append([run[j] for j in rng.permutation(len(run))])
    return runs


def hard_negative_order(shared: Sequence[Hashable], varied: Sequence[Hashable],
                        rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``0 … n-1`` (shape ``(n,)``) made of :func:`hard_negative_runs` in
    shuffled order: cut into batches, each batch is a handful of runs of near-identical rows."""
    runs = hard_negative_runs(shared, varied, rng)
    order = [i for j in rng.permutation(len(runs)) for i in runs[j]]
    return np.asarray(order, dtype=np.int64)


def run_statistics(order: np.ndarray, shared: Sequence[Hashable], varied: Sequence[Hashable],
                   batch_size: int) -> dict[str, float]:
    """How hard the batches cut from ``order`` are: the mean number of *hard negatives* per row
    (other rows of its batch with the same shared key and a different varied value) and of
    *same-kind* rows (same key and same value: false negatives), over full batches."""
    hard = same = rows = 0
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = order[start:start + batch_size]
        for i in batch:
            for j in batch:
                if i == j or shared[i] is None or shared[i] != shared[j]:
                    continue
                hard += varied[i] != varied[j]
                same += varied[i] == varied[j]
        rows += len(batch)
    return {"hard_negatives_per_row": hard / max(rows, 1), "same_kind_per_row": same / max(rows, 1)}
