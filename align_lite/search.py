"""A small vector index over L2-normalised embeddings, backed by Milvus.

``VectorIndex`` stores one embedding per row (an ``INT64`` primary key ``id`` and a
``FLOAT_VECTOR`` field ``vector``) plus free-form metadata in Milvus' dynamic (JSON) field, and
answers batched top-k queries, optionally restricted by a Milvus filter expression::

    with VectorIndex("runs/index.db", dim=640) as index:        # Milvus Lite, embedded
        index.add(image_emb, metadata=[{"kind": "image", "file_name": f} for f in names])
        hits = index.search(text_emb, k=5, filter='kind == "image"')

Where the data lives is chosen by ``uri``:

- a local path ending in ``.db`` runs **Milvus Lite** inside this process (the default; nothing to
  install beyond ``milvus-lite``, Linux/macOS). The ``.db`` path is a folder holding the data; it
  survives the process, and a new ``VectorIndex`` on the same path finds every row again.
  Only one process at a time may open it (Milvus Lite holds a lock while the process lives).
- an ``http://`` or ``https://`` URI talks to a **Milvus server** (``token="user:password"`` or an
  API key), through exactly the same code.

Index types. Milvus Lite 3.x supports ``FLAT`` (exact brute force), and, through FAISS, ``HNSW``
and ``IVF_FLAT`` (approximate; ``pip install "align-lite[ann]"``, i.e. ``faiss-cpu``). Without
FAISS, Milvus Lite would accept an HNSW index, fail to build it in a background thread (only a
logged error) and silently search every segment by brute force, so ``VectorIndex`` refuses
``HNSW``/``IVF_FLAT`` on Milvus Lite when ``faiss`` cannot be imported. Milvus Lite builds
segment indexes in a background thread after each flush; for the approximate types ``add()``
therefore reloads the collection, which builds every segment's index before it returns (and so
includes the build time; an HNSW over 100 k rows of D = 128 takes about a minute on one core).

The default is ``FLAT``: at the sizes this book works with (≤ a few 100 k rows) exact search is
fast enough, recall is exactly 1, and the interesting number is latency (see
``benchmarks/vector_search.py``). Milvus Lite also spends O(rows) pure-Python time per search
*request* (deduplication and delete masks), whatever the index, so send queries in large batches.
Pass ``index_type="HNSW"`` for larger collections, tune ``search(search_params={"ef": ...})``, and
measure recall against exact search before trusting it.

Scores are Milvus' raw ``distance``: for ``IP`` (the default) and ``COSINE`` larger is closer;
for ``L2`` smaller is closer. Results are ordered closest first either way. Under ``IP`` every
row and query is L2-normalised before it reaches Milvus, so a score is the cosine similarity
whatever the input's length (the dual encoder's embeddings are unit already; a ×1000 vector no
longer outranks the rest). Under ``IP`` and ``COSINE`` a zero vector has no direction and is
refused.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# gRPC's C core logs keepalive complaints of Milvus Lite's local server ("too_many_pings")
# straight to stderr, into whatever notebook cell runs at the time; errors still raise.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
from pymilvus import DataType, MilvusClient, MilvusException  # noqa: E402  (after the variable above)

__all__ = ["Hit", "VectorIndex", "METRICS", "INDEX_TYPES", "ANN_INDEX_TYPES", "faiss_available"]

METRICS = ("IP", "COSINE", "L2")
INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT")
ANN_INDEX_TYPES = frozenset({"HNSW", "IVF_FLAT"})  # built by FAISS inside Milvus Lite
RESERVED_KEYS = frozenset({"id", "vector", "$meta"})
KEYS_PROPERTY = "align_lite.metadata_keys"  # the collection property listing every metadata key
# Words of Milvus' expression language that are not field names.
_FILTER_WORDS = frozenset({"and", "or", "not", "in", "like", "is", "null", "true", "false", "exists"})
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NAME = re.compile(r"(?<![\w.$])([A-Za-z_]\w*)\b(?!\s*\()")
MAX_K = 16_384  # Milvus' limit on top-k (and on queries per request)
_INT64 = np.iinfo(np.int64)
_SEARCH_PARAMS = {"FLAT": {}, "HNSW": {"ef": 64}, "IVF_FLAT": {"nprobe": 16}}
_BUILD_PARAMS = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 128}}

Matrix = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class Hit:
    """One search result: the row's ``id``, its ``score`` (Milvus distance) and its metadata."""

    id: int
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


def faiss_available() -> bool:
    """Whether Milvus Lite can build FAISS (``HNSW``/``IVF_FLAT``) indexes in this process.

    Asks Milvus Lite itself (it tries ``import faiss`` once); without Milvus Lite, whether the
    ``faiss`` module (package ``faiss-cpu``) is installed.
    """
    try:
        from milvus_lite.index.factory import is_faiss_available
    except ImportError:
        return importlib.util.find_spec("faiss") is not None
    return is_faiss_available()


def is_server_uri(uri: str) -> bool:
    """Whether ``uri`` names a Milvus server (``http(s)://``) rather than a Milvus Lite folder."""
    return uri.startswith(("http://", "https://"))


def require_index_backend(index_type: str, uri: str) -> None:
    """Refuse an approximate index on Milvus Lite without FAISS (it would silently be brute force).

    Raises:
        ImportError: ``index_type`` is ``HNSW``/``IVF_FLAT``, ``uri`` is Milvus Lite and ``faiss``
            is not installed.
    """
    if index_type in ANN_INDEX_TYPES and not is_server_uri(uri) and not faiss_available():
        raise ImportError(f"index_type={index_type!r} on Milvus Lite needs FAISS, which is not installed: "
                          "pip install 'align-lite[ann]' (or faiss-cpu), or use index_type='FLAT'")


def resolve_uri(uri: str | Path) -> str:
    """Return the Milvus URI for ``uri``: server URIs unchanged, ``.db`` paths with their folder made.

    Raises:
        ValueError: ``uri`` is neither ``http(s)://…`` nor a path ending in ``.db``.
    """
    text = str(uri)
    if is_server_uri(text):
        return text
    path = Path(text).expanduser()
    if path.suffix != ".db":
        raise ValueError(f"uri must be a Milvus Lite path ending in '.db' or an http(s):// server URI, got {text!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path.resolve())


def as_matrix(x: Matrix, dim: int, name: str) -> np.ndarray:
    """Check and convert ``x`` to a C-contiguous float32 array of shape (N, dim).

    Raises:
        TypeError: ``x`` is not a tensor/array of real numbers.
        ValueError: wrong rank, wrong width ``D != dim``, or NaN/inf entries (rows are named).
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got {x.dtype}")
        array = x.detach().to("cpu", torch.float32).numpy()
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"{name} must be a real-valued array, got dtype {x.dtype}")
        array = x.astype(np.float32, copy=False)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(array.shape)} (use x[None] for one vector)")
    if array.shape[1] != dim:
        raise ValueError(f"{name} have dimension {array.shape[1]} but the index has dimension {dim}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} contain NaN or inf in {bad.size} row(s), first at rows {bad[:5].tolist()}")
    return np.ascontiguousarray(array)


def directions(array: np.ndarray, metric: str, name: str) -> np.ndarray:
    """``array`` (N, D) as the index stores or searches it: under ``IP`` each row that is not of
    unit length (to 1e-4) scaled to it, so scores are cosines; under ``IP`` and ``COSINE`` a zero
    row is an error (it has no direction); under ``L2`` unchanged.

    Raises:
        ValueError: zero rows under ``IP``/``COSINE`` (the first few are named).
    """
    if metric == "L2" or not len(array):
        return array
    norms = np.linalg.norm(array, axis=1)
    zero = np.flatnonzero(norms < 1e-12)
    if zero.size:
        raise ValueError(f"{name} contain {zero.size} zero vector(s), first at rows {zero[:5].tolist()}: "
                         f"a zero vector has no direction under metric {metric}")
    off = np.abs(norms - 1.0) > 1e-4  # unit rows stay bit for bit what the caller gave
    if metric != "IP" or not off.any():
        return array
    array = array.copy()
    array[off] /= norms[off, None]
    return array


@contextlib.contextmanager
def _quiet_pymilvus():
    """Keep pymilvus and Milvus Lite from logging an error (with its traceback) to stderr while
    we turn it into a one-line error of our own."""
    loggers = [logging.getLogger(name) for name in ("pymilvus", "milvus_lite")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_ids(ids: list[int], n: int) -> list[int]:
    """Validate explicit ids for ``n`` rows: ints in int64 range, one per row, no repeats."""
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} embeddings")
    out = []
    for i in ids:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"ids must be integers, got {i!r} ({type(i).__name__})")
        if not _INT64.min <= int(i) <= _INT64.max:
            raise ValueError(f"id {i} does not fit in int64")
        out.append(int(i))
    if len(set(out)) != n:
        repeats = sorted(i for i, count in Counter(out).items() if count > 1)
        raise ValueError(f"duplicate ids within one add() call: {repeats[:10]}")
    return out


def check_metadata(metadata: list[dict] | None, n: int) -> list[dict]:
    """Validate per-row metadata: ``n`` dicts with string keys, no reserved keys, JSON values."""
    if metadata is None:
        return [{} for _ in range(n)]
    if len(metadata) != n:
        raise ValueError(f"got {len(metadata)} metadata entries for {n} embeddings")
    for row, entry in enumerate(metadata):
        if not isinstance(entry, dict):
            raise TypeError(f"metadata[{row}] must be a dict, got {type(entry).__name__}")
        for key in entry:
            if not isinstance(key, str) or key in RESERVED_KEYS:
                raise ValueError(f"metadata[{row}] has key {key!r}; keys must be strings other than "
                                 f"{sorted(RESERVED_KEYS)}")
        try:
            json.dumps(entry, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata[{row}] is not JSON-serialisable: {error}") from None
    return metadata


def check_positive(value: int, name: str, upper: int | None = None) -> None:
    """Raise a clear error unless ``value`` is an int in ``[1, upper]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be at most {upper}, got {value}")


def filter_fields(expression: str) -> set[str]:
    """The field names a Milvus filter expression reads (string literals, operators, function
    names and ``$meta`` left out).

    >>> sorted(filter_fields('kind == "image" and id in [1, 2] or json_contains(tags, "a b")'))
    ['id', 'kind', 'tags']
    """
    code = _STRING_LITERAL.sub('""', expression)
    return {name for name in _NAME.findall(code) if name.lower() not in _FILTER_WORDS}


def check_choice(value: str | None, choices: tuple[str, ...], name: str) -> str | None:
    """Upper-case ``value`` and check it is one of ``choices`` (``None`` passes through)."""
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value.upper()


class VectorIndex:
    """Top-k search over embeddings of shape (N, D) in one Milvus collection.

    Args:
        uri: a local ``*.db`` path (Milvus Lite, parent folder created) or ``http(s)://host:19530``.
        collection: the collection's name.
        dim: D. Required to create the collection; when it already exists D is read from its
            schema and, if ``dim`` is given too, the two must agree.
        metric: ``"IP"`` (default when creating), ``"COSINE"`` or ``"L2"``; on reopening, the
            stored metric is used and a different explicit one is an error.
        index_type: ``"FLAT"`` (default when creating, exact), ``"HNSW"`` or ``"IVF_FLAT"``
            (approximate; on Milvus Lite they need ``faiss-cpu``); same reopening rule as ``metric``.
        token: credentials for a Milvus server (``"user:password"`` or an API key).

    Raises:
        ValueError: bad ``uri``/``metric``/``index_type``; ``dim`` missing when creating; a
            ``dim``/``metric``/``index_type`` that contradicts the existing collection; or a
            database that cannot be opened (held by another process, or not Milvus Lite's).
        ImportError: an ``HNSW``/``IVF_FLAT`` collection on Milvus Lite without ``faiss``.
    """

    def __init__(self, uri: str | Path, collection: str = "align_lite", dim: int | None = None,
                 metric: str | None = None, index_type: str | None = None, token: str = "") -> None:
        metric = check_choice(metric, METRICS, "metric")
        index_type = check_choice(index_type, INDEX_TYPES, "index_type")
        if dim is not None:
            check_positive(dim, "dim", upper=32_768)
        self.uri = resolve_uri(uri)
        self.collection = collection
        try:
            with _quiet_pymilvus():
                self._client: MilvusClient | None = MilvusClient(uri=self.uri, token=token)
        except MilvusException as error:
            raise ValueError(f"could not open the Milvus database {self.uri}: {getattr(error, 'message', error)} "
                             "(a Milvus Lite .db is a folder that one process at a time may use: is another "
                             "process holding it, or is it not a Milvus Lite database?)") from None
        if self._client.has_collection(collection):
            self.dim, self.metric, self.index_type = self._open(dim, metric, index_type)
        else:
            self.dim, self.metric, self.index_type = self._create(dim, metric or "IP", index_type or "FLAT")
        self.metadata_keys = self._stored_keys()

    # -- opening -------------------------------------------------------------------------------

    def _create(self, dim: int | None, metric: str, index_type: str) -> tuple[int, str, str]:
        if dim is None:
            raise ValueError(f"collection {self.collection!r} does not exist at {self.uri}; pass dim= to create it")
        require_index_backend(index_type, self.uri)
        client = self.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type=index_type, metric_type=metric,
                         params=_BUILD_PARAMS[index_type])
        client.create_collection(self.collection, schema=schema, index_params=params)
        client.load_collection(self.collection)
        return dim, metric, index_type

    def _open(self, dim: int | None, metric: str | None, index_type: str | None) -> tuple[int, str, str]:
        client = self.client
        stored_dim = self._schema_dim(client.describe_collection(self.collection))
        index = client.describe_index(self.collection, "vector") or {}
        stored_metric, stored_type = index.get("metric_type", "IP"), index.get("index_type", "FLAT")
        for name, given, stored in (("dim", dim, stored_dim), ("metric", metric, stored_metric),
                                    ("index_type", index_type, stored_type)):
            if given is not None and given != stored:
                raise ValueError(f"collection {self.collection!r} at {self.uri} has {name}={stored!r}, not {given!r}")
        require_index_backend(stored_type, self.uri)
        client.load_collection(self.collection)
        return stored_dim, stored_metric, stored_type

    def _stored_keys(self) -> set[str] | None:
        """The metadata keys of every row added so far, kept as a collection property (``None``
        for a collection made without it, e.g. by an older align_lite: filters go unchecked)."""
        properties = self.client.describe_collection(self.collection).get("properties") or {}
        if KEYS_PROPERTY in properties:
            return set(json.loads(properties[KEYS_PROPERTY]))
        if len(self) == 0:
            self._store_keys(set())
            return set()
        return None

    def _store_keys(self, keys: set[str]) -> None:
        self.client.alter_collection_properties(self.collection, properties={KEYS_PROPERTY: json.dumps(sorted(keys))})

    def _schema_dim(self, description: dict) -> int:
        fields = {f["name"]: f for f in description.get("fields", [])}
        vector, key = fields.get("vector"), fields.get("id")
        if (vector is None or vector["type"] != DataType.FLOAT_VECTOR or key is None
                or key["type"] != DataType.INT64 or not description.get("enable_dynamic_field")):
            raise ValueError(f"collection {self.collection!r} at {self.uri} was not made by VectorIndex "
                             "(expects INT64 'id', FLOAT_VECTOR 'vector' and a dynamic field)")
        return int(vector["params"]["dim"])

    @property
    def client(self) -> MilvusClient:
        """The underlying ``pymilvus.MilvusClient``; raises ``RuntimeError`` once closed."""
        if self._client is None:
            raise RuntimeError("this VectorIndex is closed (or dropped)")
        return self._client

    # -- writing -------------------------------------------------------------------------------

    def add(self, embeddings: Matrix, ids: list[int] | None = None, metadata: list[dict] | None = None,
            batch_size: int = 1000) -> list[int]:
        """Insert embeddings (N, D) with optional ids and metadata; return the N ids.

        Everything is validated before the first row is sent, so a bad call inserts nothing.
        The rows are flushed before returning; for ``HNSW``/``IVF_FLAT`` on Milvus Lite their
        index is built before returning too (see the module docstring).
        ``ids=None`` assigns ``len(self), …, len(self) + N - 1``. Ids already in the index are
        rejected (Milvus would otherwise overwrite or duplicate them). Metadata keys become
        dynamic fields usable in ``search(filter=...)``, e.g. ``{"kind": "image"}``.

        Raises:
            ValueError / TypeError: wrong shape or dimension, NaN/inf, bad or repeated ids,
                ids already present, bad metadata, bad ``batch_size``.
        """
        vectors = directions(as_matrix(embeddings, self.dim, "embeddings"), self.metric, "embeddings")
        check_positive(batch_size, "batch_size")
        n = len(vectors)
        metadata = check_metadata(metadata, n)
        if n == 0:
            return []
        auto = ids is None
        if auto:
            start = len(self)
            ids = list(range(start, start + n))
        else:
            ids = check_ids(list(ids), n)
        present = self._existing(ids, batch_size)
        if present:
            hint = " (auto ids continue from len(index); pass explicit ids)" if auto else ""
            raise ValueError(f"{len(present)} id(s) already in the index, e.g. {present[:10]}{hint}")
        keys = set().union(*metadata)
        if self.metadata_keys is not None and not keys <= self.metadata_keys:
            merged = self.metadata_keys | keys
            self._store_keys(merged)  # before the rows: a filter on them is never refused
            self.metadata_keys = merged
        build_now = self.index_type in ANN_INDEX_TYPES and not is_server_uri(self.uri)
        if build_now:
            self.client.release_collection(self.collection)  # no background index builds meanwhile
        try:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                rows = [{**metadata[i], "id": ids[i], "vector": vectors[i].tolist()} for i in range(start, stop)]
                self.client.insert(self.collection, rows)
            self.client.flush(self.collection)
        finally:
            if build_now:
                self.client.load_collection(self.collection)  # builds every segment's index, or raises
        return ids

    def _existing(self, ids: list[int], batch_size: int) -> list[int]:
        """The subset of ``ids`` already stored, asked in chunks of at most ``batch_size``."""
        chunk = min(batch_size, MAX_K)
        found: list[int] = []
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            rows = self.client.query(self.collection, filter=f"id in {part}", output_fields=["id"])
            found += [int(r["id"]) for r in rows]
        return sorted(found)

    # -- reading -------------------------------------------------------------------------------

    def search(self, queries: Matrix, k: int = 10, filter: str | None = None,
               batch_size: int = 256, search_params: dict[str, Any] | None = None) -> list[list[Hit]]:
        """Top-``k`` rows for each of the Q queries (Q, D), closest first.

        ``filter`` is a Milvus boolean expression over ``id`` and metadata keys, passed through
        unchanged (e.g. ``'kind == "image"'``, ``'id in [1, 2]'``); one Milvus cannot parse is a
        ``ValueError`` that quotes it. Queries go to Milvus in
        batches of ``batch_size``; Milvus Lite pays an O(rows) Python cost per batch, so keep
        batches large. ``search_params`` replaces the index's default search-time parameters
        (``{"ef": 64}`` for HNSW, ``{"nprobe": 16}`` for IVF_FLAT; FLAT has none): larger values
        trade speed for recall. A query gets fewer than ``k`` hits when fewer rows match.

        Returns:
            Q lists of ``Hit``.
        """
        q = directions(as_matrix(queries, self.dim, "queries"), self.metric, "queries")
        check_positive(k, "k", upper=MAX_K)
        check_positive(batch_size, "batch_size", upper=MAX_K)
        if filter is not None and not isinstance(filter, str):
            raise TypeError(f"filter must be a Milvus expression string or None, got {type(filter).__name__}")
        if filter:
            self.check_filter(filter)
        if search_params is not None and not isinstance(search_params, dict):
            raise TypeError(f"search_params must be a dict or None, got {type(search_params).__name__}")
        tuning = _SEARCH_PARAMS.get(self.index_type, {}) if search_params is None else search_params
        params = {"metric_type": self.metric, "params": tuning}
        results: list[list[Hit]] = []
        for start in range(0, len(q), batch_size):
            try:
                with _quiet_pymilvus():
                    batch = self.client.search(self.collection, data=q[start:start + batch_size].tolist(),
                                               limit=k, filter=filter or "", output_fields=["$meta"],
                                               anns_field="vector", search_params=params)
            except MilvusException as error:
                if filter:
                    raise ValueError(f"Milvus could not apply the filter {filter!r}: "
                                     f"{getattr(error, 'message', error)}") from None
                raise
            results += [[_to_hit(h) for h in hits] for hits in batch]
        return results

    def check_filter(self, expression: str) -> None:
        """Refuse a filter that names a field no row has: Milvus would match nothing and return
        ``[]``, which reads like "no such rows" when it is a typo (``knid == "image"``).

        Raises:
            ValueError: ``expression`` names a field that is neither ``id`` nor a metadata key
                of some row (not checked for collections made without the key list).
        """
        if self.metadata_keys is None:
            return
        unknown = filter_fields(expression) - self.metadata_keys - {"id"}
        if unknown:
            known = ", ".join(sorted({"id"} | self.metadata_keys))
            raise ValueError(f"the filter {expression!r} names {', '.join(sorted(unknown))}, which no row of "
                             f"{self.collection!r} has (fields: {known})")

    def __len__(self) -> int:
        """Number of stored rows (as Milvus counts them after the last flush)."""
        return int(self.client.get_collection_stats(self.collection)["row_count"])

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client connection; the data stays. Safe to call twice."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def drop(self) -> None:
        """Delete the collection and all its rows, then close."""
        self.client.drop_collection(self.collection)
        self.close()

    def __enter__(self) -> "VectorIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._client is None else f"dim={self.dim}, metric={self.metric}, index={self.index_type}"
        return f"VectorIndex({self.uri!r}, collection={self.collection!r}, {state})"


def _to_hit(hit: Any) -> Hit:
    """Convert one pymilvus search hit (``id``, ``distance``, ``entity``) to a ``Hit``."""
    entity = dict(hit.get("entity") or {})
    metadata = {key: value for key, value in entity.items() if key not in RESERVED_KEYS}
    return Hit(id=int(hit["id"]), score=float(hit["distance"]), metadata=metadata)
