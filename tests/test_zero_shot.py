"""Zero-shot classification: prompt ensembling, top-k accuracy, and agreement with a hand-made
classifier on a model whose embeddings we choose."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from align_lite.zero_shot import (build_classifier, classifier_from_prompts, embed_images, topk_accuracy,
                                  zero_shot_accuracy)


class LookupModel(torch.nn.Module):
    """Text embedding = a fixed vector per token id (mean over the mask); image embedding = the
    pixels' first D values. Lets a test know every embedding exactly."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def encode_text(self, input_ids, attention_mask):
        vectors = self.table[input_ids] * attention_mask[..., None]
        return F.normalize(vectors.sum(1), dim=-1)

    def encode_image(self, pixels):
        return F.normalize(pixels.flatten(1)[:, : self.table.shape[1]], dim=-1)


WORDS = ["a", "photo", "of", "red", "blue", "star", "heart", "sketch"]


def tokenize(texts):
    ids = [[WORDS.index(w) for w in t.split()] for t in texts]
    width = max(len(i) for i in ids)
    input_ids = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    return {"input_ids": input_ids, "attention_mask": mask}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LookupModel(torch.randn(len(WORDS), 16))


def test_classifier_is_the_renormalised_mean_of_prompt_embeddings(model):
    classes, templates = ["red star", "blue heart"], ["a photo of {}", "a sketch of {}"]
    classifier = build_classifier(model, tokenize, classes, templates)
    for c, name in enumerate(classes):
        prompts = tokenize([t.format(name) for t in templates])
        mean = model.encode_text(prompts["input_ids"], prompts["attention_mask"]).mean(0)
        torch.testing.assert_close(classifier[c], F.normalize(mean, dim=0))
    torch.testing.assert_close(classifier.norm(dim=1), torch.ones(2))


def test_classifier_from_prompts_takes_any_number_of_prompts_per_class(model):
    prompts = [["a red star", "a photo of red star", "red star sketch"], ["blue heart"]]
    classifier = classifier_from_prompts(model, tokenize, prompts)
    for c, texts in enumerate(prompts):
        encoded = tokenize(texts)
        mean = model.encode_text(encoded["input_ids"], encoded["attention_mask"]).mean(0)
        torch.testing.assert_close(classifier[c], F.normalize(mean, dim=0))
    # one prompt per class is build_classifier with one template
    one_prompt_each = [["a photo of red star"], ["a photo of blue heart"]]
    torch.testing.assert_close(classifier_from_prompts(model, tokenize, one_prompt_each),
                               build_classifier(model, tokenize, ["red star", "blue heart"], ["a photo of {}"]))
    with pytest.raises(ValueError, match="every class"):
        classifier_from_prompts(model, tokenize, [["red star"], []])


def test_zero_shot_picks_the_nearest_class(model):
    classes = ["red star", "blue heart", "red heart"]
    classifier = build_classifier(model, tokenize, classes, ["{}"])
    # Images whose embeddings are the class vectors plus a little noise, padded to 3x4x4 pixels.
    labels = torch.tensor([2, 0, 1, 1, 0])
    pixels = torch.zeros(5, 3, 4, 4)
    pixels.view(5, -1)[:, :16] = classifier[labels] + 0.01 * torch.randn(5, 16)
    scores = embed_images(model, pixels) @ classifier.T
    assert scores.argmax(1).tolist() == labels.tolist()
    assert zero_shot_accuracy(model, tokenize, pixels, labels, classes, ks=(1,)) == {"zero_shot_top1": 1.0}
    wrong = (labels + 1) % 3
    assert zero_shot_accuracy(model, tokenize, pixels, wrong, classes, ks=(1,)) == {"zero_shot_top1": 0.0}


def test_topk_accuracy_counts_ranks():
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6]])
    labels = torch.tensor([0, 0, 2])  # rank 1, rank 3, rank 2
    assert topk_accuracy(scores, labels, ks=(1, 2, 3, 5)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3),
                                                              3: 1.0, 5: 1.0}


def test_bad_templates_and_shapes_are_clear_errors(model):
    with pytest.raises(ValueError, match="exactly one"):
        build_classifier(model, tokenize, ["red star"], ["a photo"])
    with pytest.raises(ValueError, match="at least one class"):
        build_classifier(model, tokenize, [], ["{}"])
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_shipped_template_sets():
    from align_lite.zero_shot import load_templates

    t80, t7 = load_templates("imagenet_80"), load_templates("imagenet_7")
    assert len(t80) == 80 == len(set(t80)) and len(t7) == 7 and set(t7) <= set(t80)
    assert all(t.count("{}") == 1 for t in t80) and load_templates("single") == ("a photo of a {}.",)
    world = load_templates("world")
    assert len(world) == 12 and all(t.count("{}") == 1 for t in world)


def test_world_templates_are_in_the_world_vocabulary():
    from align_lite.data.tokenizer import TokenizerConfig, train_tokenizer
    from align_lite.data.world import WorldConfig, make_world_table
    from align_lite.zero_shot import load_templates

    tokenizer = train_tokenizer(make_world_table(WorldConfig.clean(n=2000, seed=0))["text"].to_pylist(),
                                TokenizerConfig(vocab_size=2000, max_length=32))
    for template in load_templates("world"):
        pieces = tokenizer.tokens(template.format("red star"))
        assert "[UNK]" not in pieces and not any(p.startswith("##") for p in pieces), pieces
    with pytest.raises(KeyError, match="imagenet_80"):
        load_templates("cifar")
