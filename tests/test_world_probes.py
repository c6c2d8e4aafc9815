"""Counting, relation and compositional-edit probes, scored with an oracle model whose embeddings
are one-hot features of the scene (images) or of the words (texts): what the oracle knows it gets
right, what it does not know stays at chance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from align_lite.data.world import COLOR_NAMES, NUMBER_WORDS, PLURALS, RELATIONS, SHAPES
from align_lite.evaluate import EvalSet, world_eval_set
from align_lite.world_probes import (
    choice_accuracy, count_probe, count_prompts, edit_success, relation_probe, relation_prompts,
)

FEATURES = {"color": len(COLOR_NAMES), "shape": len(SHAPES), "count": 10, "relation": len(RELATIONS) + 1}


class Oracle(torch.nn.Module):
    """Embeds [colour, shape, count, relation] codes as concatenated one-hots; features not in
    ``knows`` are dropped. Images carry their codes in pixels[:, 0, 0, :4]; texts in input_ids."""

    def __init__(self, knows=("color", "shape", "count", "relation")):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.knows = knows

    def _embed(self, codes: torch.Tensor) -> torch.Tensor:  # (N, 4) with -1 = absent
        parts = []
        for j, (name, size) in enumerate(FEATURES.items()):
            if name in self.knows:
                parts.append(F.one_hot(codes[:, j].clamp(min=0), size).float() * (codes[:, j:j + 1] >= 0))
        out = torch.cat(parts, 1)
        return F.normalize(out + 1e-6, dim=-1)

    def encode_image(self, pixels):
        return self._embed(pixels[:, 0, 0, :4].round().long())

    def encode_text(self, input_ids, attention_mask):
        return self._embed(input_ids)


def _word_codes(text: str) -> list[int]:
    words = text.replace("to the left of", "left-of").replace("to the right of", "right-of").split()
    color = next((COLOR_NAMES.index(w) for w in words if w in COLOR_NAMES), -1)
    shape = next((i for w in words for i, s in enumerate(SHAPES) if w in (s, PLURALS[s])), -1)
    count = next((NUMBER_WORDS.index(w) for w in words if w in NUMBER_WORDS[2:]), 1 if words[0] in ("a", "an") else -1)
    rel_words = {"left-of": 0, "right-of": 1, "above": 2, "below": 3}
    relation = next((rel_words[w] for w in words if w in rel_words), -1)
    if relation >= 0:
        count = -1  # relation scenes carry no count
    return [color, shape, count, relation]


def tokenize(texts):
    ids = torch.tensor([_word_codes(t) for t in texts])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def scene_set(scenes):
    pixels = torch.zeros(len(scenes), 3, 4, 4)
    for i, s in enumerate(scenes):
        relation = RELATIONS.index(s["relation"]) if s["relation"] else -1
        pixels[i, 0, 0, :4] = torch.tensor([COLOR_NAMES.index(s["color"]), SHAPES.index(s["shape"]),
                                            -1 if relation >= 0 else s["count"], relation])
    return EvalSet(pixels, ["x"] * len(scenes), torch.arange(len(scenes)), scenes=scenes)


def one_kind(color, shape, count=1):
    return {"color": color, "shape": shape, "count": count, "relation": None, "other_color": None, "other_shape": None}


SCENES = ([one_kind(c, s, 1 + (i % 4)) for i, (c, s) in enumerate((c, s) for c in COLOR_NAMES for s in SHAPES)]
          + [one_kind(c, s, 1 + ((i + 2) % 4)) for i, (c, s) in enumerate((c, s) for c in COLOR_NAMES for s in SHAPES)]
          + [{"color": "red", "shape": "star", "count": 1, "relation": r, "other_color": "blue", "other_shape": "heart"}
             for r in RELATIONS])


def test_prompts_follow_the_world_vocabulary():
    assert count_prompts("orange", "cross", 3) == ["an orange cross", "two orange crosses", "three orange crosses"]
    assert relation_prompts("red", "star", "blue", "heart")[:2] == [
        "a red star to the left of a blue heart", "a red star to the right of a blue heart"]
    with pytest.raises(ValueError):
        count_prompts("red", "star", 0)


def test_count_and_relation_probes_find_what_the_oracle_knows():
    data = scene_set(SCENES)
    full = Oracle()
    counts = count_probe(full, tokenize, data)
    assert counts.accuracy == 1.0 and counts.n == 128 and counts.chance == 0.25
    relations = relation_probe(full, tokenize, data)
    assert relations.accuracy == 1.0 and relations.n == 4 and relations.images.tolist() == [128, 129, 130, 131]
    blind = Oracle(knows=("color", "shape"))  # every candidate scores the same: argmax picks the first
    assert count_probe(blind, tokenize, data).accuracy == pytest.approx(0.25)
    assert relation_probe(blind, tokenize, data).accuracy == pytest.approx(0.25)


def test_choice_accuracy_checks_its_inputs():
    data = scene_set(SCENES[:2])
    with pytest.raises(ValueError, match="same number"):
        choice_accuracy(Oracle(), tokenize, data.pixels, [["a red star", "two red stars"], ["a red star"]],
                        torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="truth"):
        choice_accuracy(Oracle(), tokenize, data.pixels, [["a", "b"], ["a", "b"]], torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="scene attributes"):
        count_probe(Oracle(), tokenize, EvalSet(data.pixels, ["x", "y"], torch.arange(2)))


def test_colour_edits_succeed_for_an_attribute_model_and_baselines_fail():
    data = scene_set(SCENES)
    model = Oracle(knows=("color", "shape"))
    edit = edit_success(model, tokenize, data, "colour")
    assert edit.queries == 128 * 7 and edit.success == 1.0
    image_only = edit_success(model, tokenize, data, "colour", text_weight=0.0)
    assert image_only.target == 0.0 and image_only.kept == 1.0  # finds the twin scene: same colour and shape
    shape = edit_success(model, tokenize, data, "shape")
    assert shape.success == 1.0
    removed = edit_success(model, tokenize, data, "remove colour", text_weight=-1.0)
    assert removed.success == 1.0 and removed.queries == 128
    hit = edit.hits[0].item()
    query = edit.query_images[0].item()
    assert hit != query and SCENES[hit]["color"] == edit.targets[0] and SCENES[hit]["shape"] == SCENES[query]["shape"]


def test_edit_success_never_returns_the_query_image():
    data = scene_set(SCENES)
    edit = edit_success(Oracle(knows=("color", "shape")), tokenize, data, "colour", text_weight=0.0)
    assert (edit.hits != edit.query_images).all()
    with pytest.raises(ValueError, match="kind"):
        edit_success(Oracle(), tokenize, data, "size")


def test_world_eval_set_carries_scene_attributes():
    data = world_eval_set(40, image_size=16)
    assert len(data.scenes) == 40
    for scene, label, text in zip(data.scenes, data.labels.tolist(), data.texts):
        assert scene["color"] in text and (scene["relation"] is None) == (label >= 0)


def test_world_eval_set_with_several_captions_per_image():
    data = world_eval_set(12, image_size=16, captions_per_image=3)
    assert len(data.texts) == 36 and data.text_to_image.tolist() == [i // 3 for i in range(36)]
    assert data.texts[::3] == world_eval_set(12, image_size=16).texts  # the row's own caption first
    with pytest.raises(ValueError):
        world_eval_set(4, image_size=16, captions_per_image=0)
