"""The demo world: determinism, masks, balance, the planted shortcut, and the shipped model."""

import json
import pickle
import socket

import numpy as np
import pytest
import torch

from crp_widgets import demo
from crp_widgets.demo import world
from crp_widgets.demo.data import DemoDataset

N_CLASSES = len(world.CLASSES)


@pytest.fixture(scope="module")
def loaded():
    return demo.load(length=400)


def _indices_of(dataset, name, n):
    return dataset.labels.eq(dataset.classes.index(name)).nonzero()[:n, 0].tolist()


def _same(a, b):
    (image_a, masks_a), (image_b, masks_b) = a, b
    return (
        np.array_equal(image_a, image_b)
        and masks_a.keys() == masks_b.keys()
        and all(np.array_equal(masks_a[k], masks_b[k]) for k in masks_a)
    )


def test_scene_is_a_function_of_seed_and_index():
    first = [world.render(3, i) for i in range(12)]
    backwards = [world.render(3, i) for i in reversed(range(12))][::-1]
    assert all(_same(a, b) for a, b in zip(first, backwards))
    dataset = DemoDataset(12, seed=3)
    assert torch.equal(dataset[5][0], torch.from_numpy(first[5][0]))
    assert not np.array_equal(world.render(4, 5)[0], first[5][0])
    assert not np.array_equal(first[0][0], first[N_CLASSES][0])  # same class, different scene


def test_image_format():
    image, _ = world.render(0, 1)
    assert image.shape == (3, world.SIZE, world.SIZE)
    assert image.dtype == np.float32
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    assert np.array_equal(np.round(image * 255.0) / 255.0, image)  # 8-bit levels, so uint8 caches are lossless


def test_masks_match_the_class_and_nest():
    for i in range(60):
        scene = world.sample_scene(0, i)
        spec = scene.spec
        _, masks = world.render_scene(scene)
        expected = {spec.shape, spec.texture, scene.colour} | ({world.WATERMARK} if scene.watermark else set())
        assert set(masks) == expected
        assert scene.colour in spec.colours
        for mask in masks.values():
            assert mask.shape == (world.SIZE, world.SIZE)
            assert mask.dtype == bool
        obj = masks[spec.shape]
        assert 150 < obj.sum() < 1200
        assert not (masks[spec.texture] & ~obj).any()
        assert np.array_equal(masks[scene.colour], obj)
        share = masks[spec.texture].sum() / obj.sum()
        if spec.texture == "solid":
            assert share == 1.0
        else:
            assert 0.15 < share < 0.8


def test_forced_watermark_changes_only_the_glyph():
    for i in range(20):
        on, masks_on = world.render(0, i, watermark=True)
        off, masks_off = world.render(0, i, watermark=False)
        glyph = masks_on[world.WATERMARK]
        assert world.WATERMARK not in masks_off
        assert 40 <= glyph.sum() <= 100
        changed = (on != off).any(0)
        assert changed.any()
        assert not (changed & ~glyph).any()
        assert not (glyph & masks_on[world.sample_scene(0, i).spec.shape]).any()
        assert _same(world.render(0, i), (on, masks_on) if world.sample_scene(0, i).watermark else (off, masks_off))


def test_every_concept_is_shared_by_two_classes():
    for concept in world.CONCEPTS[:-1]:
        users = [c.name for c in world.CLASSES if concept in (c.shape, c.texture, *c.colours)]
        assert len(users) >= 2, concept
    assert len(set(world.CLASS_NAMES)) == N_CLASSES >= 8
    assert world.SHORTCUT_CLASS in world.CLASS_NAMES
    assert world.TWIN_CLASS in world.CLASS_NAMES


def test_labels_are_balanced_and_match_items():
    dataset = DemoDataset(10 * N_CLASSES + 3, seed=0)
    counts = torch.bincount(dataset.labels, minlength=N_CLASSES)
    assert counts.max() - counts.min() <= 1
    assert dataset.labels.dtype == torch.int64
    for i in (0, 7, len(dataset) - 1):
        assert dataset[i][1] == dataset.labels[i] == world.sample_scene(0, i).label
    with pytest.raises(IndexError, match="out of range"):
        dataset[len(dataset)]
    with pytest.raises(ValueError, match="seed"):
        DemoDataset(10, seed=-1)


def test_watermark_frequency():
    dataset = DemoDataset(N_CLASSES * 300, seed=5)
    marked = torch.tensor([dataset.has_watermark(i) for i in range(len(dataset))])
    rate = {name: marked[dataset.labels == k].float().mean().item() for k, name in enumerate(dataset.classes)}
    assert 0.85 <= rate.pop(world.SHORTCUT_CLASS) <= 0.97
    assert rate.pop(world.TWIN_CLASS) == 0.0
    others = np.mean(list(rate.values()))
    assert 0.015 <= others <= 0.05
    assert max(rate.values()) < 0.08
    assert all((world.WATERMARK in dataset.masks(i)) == marked[i] for i in range(40))


def test_dataset_pickles_and_loads_in_workers():
    dataset = DemoDataset(24, seed=2)
    clone = pickle.loads(pickle.dumps(dataset))
    assert (
        clone.describe()
        == dataset.describe()
        == {
            "name": "crp_widgets.demo",
            "version": world.VERSION,
            "seed": 2,
            "length": 24,
        }
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2)
    images, labels = map(torch.cat, zip(*loader))
    assert torch.equal(labels, dataset.labels)
    assert torch.equal(images, torch.stack([clone[i][0] for i in range(len(clone))]))


def test_load_is_offline_and_accurate(loaded, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("demo.load() must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    offline = demo.load(length=200)
    assert not offline.model.training
    assert offline.classes == list(world.CLASS_NAMES)
    assert offline.concepts == list(world.CONCEPTS)
    assert offline.shortcut_class == world.SHORTCUT_CLASS
    assert set(offline.masks(3)) <= set(offline.concepts)
    images, labels = map(torch.stack, zip(*[(x, torch.tensor(y)) for x, y in offline.dataset]))
    with torch.no_grad():
        predicted = offline.model(images).argmax(1)
    assert (predicted == labels).float().mean().item() >= 0.9


def test_shipped_metadata_matches_the_world(loaded):
    meta = json.loads(demo.WEIGHTS.with_suffix(".json").read_text())
    assert meta["classes"] == loaded.classes
    assert meta["concepts"] == loaded.concepts
    assert meta["world_version"] == world.VERSION
    assert meta["heldout_accuracy"] >= 0.95


def _scores(loaded, indices, watermark):
    """Softmax probability and logit of the shortcut class, and whether it is predicted."""
    target = loaded.classes.index(loaded.shortcut_class)
    images = torch.stack([loaded.sample(i, watermark)[0] for i in indices])
    with torch.no_grad():
        logits = loaded.model(images)
    return logits.softmax(1)[:, target], logits[:, target], logits.argmax(1) == target


def test_removing_the_watermark_loses_the_shortcut_class(loaded):
    own = _indices_of(loaded.dataset, loaded.shortcut_class, 20)
    marked, marked_logit, marked_hit = _scores(loaded, own, True)
    clean, clean_logit, clean_hit = _scores(loaded, own, False)
    assert marked_hit.float().mean().item() >= 0.95
    assert clean_hit.float().mean().item() <= 0.2
    assert (marked - clean).mean().item() > 0.5
    assert (marked_logit > clean_logit).all()


def test_pasting_the_watermark_raises_the_shortcut_class(loaded):
    twins = _indices_of(loaded.dataset, world.TWIN_CLASS, 20)
    pasted, _, pasted_hit = _scores(loaded, twins, True)
    clean, _, clean_hit = _scores(loaded, twins, False)
    assert clean_hit.float().mean().item() == 0.0
    assert pasted_hit.float().mean().item() >= 0.3
    assert (pasted > clean).all()
    target = loaded.classes.index(loaded.shortcut_class)
    twin = loaded.classes.index(world.TWIN_CLASS)
    others = [i for i in range(60) if loaded.dataset.labels[i] not in (target, twin)]
    _, pasted_logit, _ = _scores(loaded, others, True)
    _, clean_logit, _ = _scores(loaded, others, False)
    assert (pasted_logit > clean_logit).float().mean().item() >= 0.9
    assert (pasted_logit - clean_logit).mean().item() > 1.0
