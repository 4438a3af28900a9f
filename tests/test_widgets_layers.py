"""The views' layer menus offer the model's blocks by stage (``crp.layer_groups()``), any module stays choosable from
Python, and the gallery says when its crops follow the relevance instead of a receptive field (a transformer)."""

import numpy as np
import pytest
import torch
import torchvision
from architectures import calibrate
from zoo import small_cnn

from crp_widgets.engine import CRP
from crp_widgets.engine.scan import scan
from crp_widgets.render.images import image_to_uint8
from crp_widgets.widgets.atlas import ConceptAtlas
from crp_widgets.widgets.channels import ChannelSelector
from crp_widgets.widgets.concepts import UserConceptView
from crp_widgets.widgets.gallery import FOLLOWS_RELEVANCE, ReferenceGallery
from crp_widgets.widgets.layers import OTHER, layer_menu
from crp_widgets.widgets.session import ExplorerState, Session
from crp_widgets.widgets.validation import StateError
from crp_widgets.widgets.worker import Worker

SIZE = 32


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return calibrate(torchvision.models.resnet18(weights=None, num_classes=10), SIZE)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(6, 3, SIZE, SIZE, generator=generator), torch.arange(6))
    data.classes = [f"class {i}" for i in range(10)]
    return data


def bound_state(session):
    state = ExplorerState()
    state.bind(session)
    return state


def test_every_layer_menu_offers_the_blocks_by_stage(resnet, images):
    session = Session(resnet, images, worker=Worker(synchronous=True))
    groups = session.crp.layer_groups()
    expected = [{"group": group, "layers": names} for group, names in groups]
    assert [entry["group"] for entry in expected] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert expected[4]["layers"] == ["layer4.0", "layer4.1"]
    state = bound_state(session)
    selector = ChannelSelector(session, state)
    atlas = ConceptAtlas(session, state, active=False)
    concepts = UserConceptView(session, state, active=False)
    gallery = ReferenceGallery(session, state)  # no store yet: the model's blocks
    for view in (selector, atlas, concepts, gallery):
        assert view.layer_menu == expected, type(view).__name__
    listed = [name for entry in selector.layer_menu for name in entry["layers"]]
    assert len(listed) < len(session.crp.layer_names)  # the blocks, not every module
    assert selector.layer == state.layer == "layer4.1"  # the model's last block


def test_any_module_can_still_be_chosen_from_python(resnet, images):
    session = Session(resnet, images, worker=Worker(synchronous=True))
    state = bound_state(session)
    selector = ChannelSelector(session, state)
    state.layer = "layer4.1.conv2"  # not in the menu's groups: the front end shows it under "other layers"
    assert selector.layer == selector.ranking_layer == "layer4.1.conv2"
    assert selector.error == ""
    assert len(selector.ranking) == 512
    with pytest.raises(StateError, match=r"layer4\.1\.conv9"):
        state.layer = "layer4.1.conv9"
    assert selector.layer == "layer4.1.conv2"


def test_a_restricted_menu_keeps_the_groups_and_puts_the_rest_apart(resnet):
    crp = CRP(resnet)
    menu = layer_menu(crp, ["layer4.1", "layer2.0", "layer3.0.conv1", "layer2.0"])
    assert menu == [
        {"group": "layer2", "layers": ["layer2.0"]},
        {"group": "layer4", "layers": ["layer4.1"]},
        {"group": OTHER, "layers": ["layer3.0.conv1"]},
    ]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=SIZE, num_classes=10).eval()
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.05)  # torchvision starts it at zero: every logit 0
    return model


def test_the_gallery_says_when_crops_follow_the_relevance(vit, resnet, images, tmp_path):
    layer = "encoder.layers.encoder_layer_11"
    store = scan(CRP(vit), images, [layer, "conv_proj"], tmp_path / "vit", k=3, batch_size=6, progress=False)
    session = Session(vit, images, store, worker=Worker(synchronous=True))
    gallery = ReferenceGallery(session, bound_state(session), layer=layer, channel=5, k=3)
    assert gallery.error == ""
    assert gallery.crop_note == FOLLOWS_RELEVANCE.format(input="image")
    views = session.views.views(layer, 5, k=3)
    assert all(view.follows_relevance for view in views)
    for image, view in zip(gallery.images, views):  # each crop is where that reference's relevance is
        np.testing.assert_array_equal(image, image_to_uint8(view.crop))
    assert gallery.layer_menu == [{"group": "stem", "layers": ["conv_proj"]},
                                  {"group": "encoder.layers", "layers": [layer]}]  # fmt: skip
    gallery.layer = "conv_proj"  # a patch sees its 16 x 16 pixels: a receptive field, no note
    assert gallery.error == ""
    assert gallery.crop_note == ""
    assert all(not view.follows_relevance for view in session.views.views("conv_proj", 5, k=3))
    # A CNN's references are receptive-field crops
    cnn = small_cnn(seed=3)
    cnn_store = scan(CRP(cnn), images, ["6"], tmp_path / "cnn", k=3, batch_size=6, progress=False)
    cnn_session = Session(cnn, images, cnn_store, worker=Worker(synchronous=True))
    cnn_gallery = ReferenceGallery(cnn_session, layer="6", channel=2, k=3)
    assert cnn_gallery.groups[0]["tiles"]
    assert cnn_gallery.crop_note == ""
