"""``align-lite index|search``: a vector database of a model's embeddings, and queries on it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from align_lite.cli.common import CommandError, load_model, model_folder


def add_commands(commands) -> None:
    _add_index(commands)
    _add_search(commands)


# --------------------------------------------------------------------------------------------
# index and search
# --------------------------------------------------------------------------------------------


def _add_index(commands) -> None:
    p = commands.add_parser(
        "index", help="embed a pair data set's images and captions into a Milvus (Lite) index",
        description="Embed every readable image (kind=image) and every caption (kind=text) of --data with the "
                    "model of RUN and store them, with file_name and text as metadata, in --db: a local .db "
                    "file (Milvus Lite) or an http(s):// Milvus server URI. PATH.json beside a .db records "
                    "which model made the vectors, so that `align-lite search` embeds queries with it.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("--data", required=True, help="pair folder / .jsonl / .parquet")
    p.add_argument("--db", required=True, help="Milvus Lite file (.db) or Milvus server URI")
    p.add_argument("--collection", default="align_lite")
    p.add_argument("--max-images", type=int)
    again = p.add_mutually_exclusive_group()
    again.add_argument("--append", action="store_true",
                       help="add the rows to a collection that already has some (same model only)")
    again.add_argument("--overwrite", action="store_true", help="replace a collection that already has rows")
    p.set_defaults(handler=_run_index)


def _index_card(db: str) -> Path:
    return Path(db + ".json") if not db.startswith(("http://", "https://")) else Path("align_lite_index.json")


def _run_index(args: argparse.Namespace) -> None:
    import json

    import torch

    from align_lite.evaluate import load_eval_set
    from align_lite.search import VectorIndex
    from align_lite.zero_shot import embed_images, embed_texts

    folder = model_folder(args.run)
    model, tokenizer = load_model(folder)
    card = _index_card(args.db)
    with VectorIndex(args.db, args.collection, dim=model.config.embed_dim) as index:  # opened before embedding
        stored = len(index)
        if stored and not (args.append or args.overwrite):
            raise CommandError(f"collection {args.collection!r} in {args.db} already holds {stored} vectors; "
                               "pass --overwrite to replace them or --append to add to them")
        if stored and args.append and card.is_file():
            made_by = json.loads(card.read_text()).get("model")
            if made_by != str(folder.resolve()):
                raise CommandError(f"{args.db} was indexed with the model {made_by}, not {folder.resolve()}: "
                                   "vectors of two models cannot be searched together (use --overwrite)")
        if stored and args.overwrite:
            index.drop()
            index = VectorIndex(args.db, args.collection, dim=model.config.embed_dim)
        data = load_eval_set(args.data, model.config.image.image_size, args.max_images)
        names = data.image_names
        images = embed_images(model, data.pixels, progress_desc="embed images")
        texts = embed_texts(model, tokenizer, data.texts, progress_desc="embed captions")
        rows = [{"kind": "image", "file_name": names[i], "text": ""} for i in range(len(images))]
        rows += [{"kind": "text", "file_name": names[int(j)], "text": t}
                 for t, j in zip(data.texts, data.text_to_image)]
        ids = index.add(torch.cat([images, texts]), metadata=rows)
        total = len(index)
        index.close()
    card.write_text(json.dumps({"model": str(folder.resolve()), "collection": args.collection,
                                "dim": int(images.shape[1])}, indent=1) + "\n")
    skipped = sum((data.skipped or {}).values())
    print(f"indexed {len(images)} images and {len(texts)} captions ({len(ids)} vectors, {total} in the collection)"
          + (f"; skipped {skipped} unreadable rows" if skipped else "") + f" -> {args.db}")


def _add_search(commands) -> None:
    p = commands.add_parser(
        "search", help="query an index made by `align-lite index` with a text, an image, or both",
        description="--text T finds images; --image FILE finds captions; --image FILE --text T finds images "
                    "for the composed query (ALIGN §7: unit image + 2 x unit text, renormalised; a negative "
                    "--text-weight removes the concept). --kind overrides what is searched.",
    )
    p.add_argument("--db", required=True)
    p.add_argument("--text")
    p.add_argument("--image", type=Path)
    p.add_argument("--text-weight", type=float, default=2.0)
    p.add_argument("--kind", choices=("image", "text", "any"), help="what to retrieve")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--run", type=Path, help="model to embed the query with (default: the one recorded by index)")
    p.add_argument("--collection", help="the collection to search (default: the one recorded by index)")
    p.set_defaults(handler=_run_search)


def _run_search(args: argparse.Namespace) -> None:
    import json

    from align_lite.data.images import BadImageError, ImageTransformConfig, image_transform, open_rgb
    from align_lite.retrieval import compose_query
    from align_lite.search import VectorIndex
    from align_lite.zero_shot import embed_images, embed_texts

    if not args.text and args.image is None:
        raise CommandError("give --text, --image, or both")
    card = _index_card(args.db)
    recorded = json.loads(card.read_text()) if card.is_file() else {}
    if args.run is not None:
        folder = model_folder(args.run)
        if recorded.get("model") and recorded["model"] != str(folder.resolve()):
            print(f"warning: {args.db} was indexed with the model {recorded['model']}; queries embedded with "
                  f"{folder.resolve()} may not be comparable with its vectors", file=sys.stderr)
    elif recorded:
        folder = Path(recorded["model"])
    else:
        raise CommandError(f"no {card} (written by `align-lite index`): pass --run to say which model made the index")
    collection = args.collection or recorded.get("collection", "align_lite")
    model, tokenizer = load_model(folder)
    query = None
    if args.image is not None:
        try:
            image = open_rgb(args.image)
        except BadImageError as err:
            raise CommandError(f"--image {args.image}: {err}") from err
        pixels = image_transform(ImageTransformConfig.tiny(model.config.image.image_size))(image)[None]
        query = embed_images(model, pixels)
    if args.text:
        text = embed_texts(model, tokenizer, [args.text])
        query = text if query is None else compose_query(query, text, text_weight=args.text_weight)
    kind = args.kind or ("text" if args.image is not None and not args.text else "image")
    with VectorIndex(args.db, collection) as index:
        hits = index.search(query, k=args.k, filter=None if kind == "any" else f'kind == "{kind}"')[0]
    for rank, hit in enumerate(hits, 1):
        meta = hit.metadata
        kind, name, text = meta.get("kind", "?"), meta.get("file_name", ""), meta.get("text", "")
        print(f"{rank:2d}. {hit.score:.3f}  {kind:5s}  {name}  {text}")
