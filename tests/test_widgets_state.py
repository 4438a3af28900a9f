"""The explorer's state refuses what the model or the dataset does not have, takes the inputs users have at hand,
and every view shows the state it was computed for: refused values, custom inputs, class names that do not match
the outputs, hidden tabs, errors that clear their picture, analyses in steps."""

import html

import numpy as np
import pytest
import torch
from PIL import Image
from zoo import random_images, small_cnn

import crp_widgets as cw
from crp_widgets.engine import CRP
from crp_widgets.engine.profiles import ablation_table, class_profiles
from crp_widgets.widgets.profiles import FRACTIONS, ablation_in_steps, profiles_in_steps
from crp_widgets.widgets.sample import SampleView
from crp_widgets.widgets.session import ExplorerState, Session
from crp_widgets.widgets.validation import StateError
from crp_widgets.widgets.worker import Worker

CLASSES = [f"class {i}" for i in range(10)]


@pytest.fixture
def explorer():
    return cw.Explorer(small_cnn(seed=3), random_images(30, 0, CLASSES), worker=Worker(synchronous=True))


def notice(explorer):
    """The text of the line above the explorer's views."""
    return html.unescape(explorer.notice.value)


def errors(explorer):
    """The error of every view of the explorer's top row."""
    return [view.error for view in (explorer.sample, explorer.channels, explorer.heatmaps)]


def test_an_unknown_layer_set_from_python_is_refused_and_the_state_keeps_its_layer(explorer):
    with pytest.raises(StateError, match=r"unknown layer 'features\.conv9'"):
        explorer.state.layer = "features.conv9"
    assert explorer.state.layer == "6"
    assert "unknown layer 'features.conv9'" in notice(explorer)  # one place: the line above the views
    assert "crpw-notice-error" in explorer.notice.value
    assert errors(explorer) == ["", "", ""]
    explorer.state.layer = "4"  # the next valid value clears it
    assert explorer.notice.value == ""
    assert explorer.channels.ranking_layer == "4"


@pytest.mark.parametrize("channel", [500, 999, -1, 16])
def test_a_channel_out_of_range_is_refused_from_python_and_from_the_gallerys_field(explorer, channel):
    explorer.state.channel = 3
    with pytest.raises(StateError, match=f"channel {channel} is out of range: layer 6 has 16 channels"):
        explorer.state.channel = channel
    assert explorer.state.channel == 3
    explorer.gallery.channel = channel  # what typing into the gallery's channel field does
    assert explorer.gallery.channel == 3  # put back
    assert explorer.state.channel == 3
    assert "(0 to 15)" in explorer.gallery.error
    explorer.gallery.channel = 5
    assert explorer.state.channel == 5
    assert explorer.gallery.error == ""


def test_samples_classes_and_conditions_out_of_range_are_refused(explorer):
    with pytest.raises(StateError, match="sample 30 is out of range: the dataset has 30 samples"):
        explorer.state.sample = 30
    with pytest.raises(StateError, match="class 10 is out of range: the model has 10 outputs"):
        explorer.state.target = 10
    with pytest.raises(StateError, match="channel 99 is out of range: layer 4 has 16 channels"):
        explorer.state.select("4", [1, 99])
    with pytest.raises(StateError, match="unknown layer 'nope'"):
        explorer.state.conditions = {"nope": [1]}
    assert (explorer.state.sample, explorer.state.target, explorer.state.conditions) == (0, None, {})
    explorer.sample.explain("class 4")  # a class name is an output index
    assert explorer.state.target == 4
    explorer.channels._handle_custom_msg({"type": "layer", "layer": "features.nope"}, [])  # from the layer menu
    assert "unknown layer 'features.nope'" in explorer.channels.error
    assert explorer.state.layer == "6"


def test_a_new_layer_drops_a_channel_it_does_not_have(explorer):
    explorer.state.layer = "4"
    explorer.state.channel = 12
    explorer.state.layer = "0"  # 8 channels: the explorer focuses its top channel instead
    ranking = explorer.channels.ranking
    assert explorer.state.channel == int(ranking[0][0])


def test_show_takes_a_pil_image_an_array_or_a_tensor_and_a_sample_leaves_it(explorer):
    picture = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    explorer.show(picture)
    assert tuple(explorer.state.custom.shape) == (3, 16, 16)
    assert explorer.sample.explained_for == {
        "sample": None, "label": None, "note": "resized from 50x40 to 16x16, the size of the dataset's samples",
    }  # fmt: skip
    assert errors(explorer) == ["", "", ""]
    pixels = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)  # channels last, 0-255
    explorer.show(pixels)
    torch.testing.assert_close(explorer.state.custom, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    explorer.show(torch.rand(3, 16, 16))
    assert explorer.sample.custom
    explorer.state.sample = 0  # the sample it had: still leaves the custom input
    assert explorer.state.custom is None
    assert not explorer.sample.custom
    assert explorer.sample.explained_for["sample"] == 0


def test_one_bad_input_gives_one_message_in_one_place_and_keeps_the_input_shown(explorer):
    explorer.show(torch.rand(3, 16, 16))
    before = explorer.sample.image.copy()
    with pytest.raises(StateError, match="the model cannot take this input of shape \\[2, 16, 16\\]") as refused:
        explorer.show(torch.rand(2, 16, 16))
    message = str(refused.value)
    assert message.count("2 channels") == 1
    assert "the dataset's samples are [3, 16, 16]" in message
    assert errors(explorer) == ["", "", ""]
    assert notice(explorer).count("cannot take this input") == 2  # the line and its full text on hover
    np.testing.assert_array_equal(explorer.sample.image, before)
    with pytest.raises(StateError, match="cannot explain a str"):
        explorer.show("cat.png")


def test_an_error_clears_the_picture_it_replaces():
    session = Session(small_cnn(seed=3), random_images(8), worker=Worker(synchronous=True))
    view = SampleView(session, ExplorerState())  # a state without a session: the views report what fails
    assert view.image is not None
    view.show(torch.rand(2, 16, 16))
    assert "2 channels" in view.error
    assert view.image is None
    assert view.heatmap is None
    assert view.explained_for == {}
    view.select(1)
    assert view.error == ""
    assert view.image is not None
    assert view.explained_for["sample"] == 1


def test_a_model_with_more_outputs_than_class_names_gets_a_note_and_numbered_names():
    model = small_cnn(seed=3)
    model[-1] = torch.nn.Linear(32, 1000)  # e.g. an ImageNet head on a 10-class dataset
    explorer = cw.Explorer(model.eval(), random_images(12, 0, CLASSES), worker=Worker(synchronous=True))
    assert errors(explorer) == ["", "", ""]
    note = explorer.sample.class_note
    assert (
        note == "The model has 1000 outputs but 10 class names were given: outputs 10 to 999 are named by their number."
    )
    names = explorer.sample.classes
    assert len(names) == 1000
    assert names[:10] == CLASSES
    assert names[755] == "output 755"
    prediction = explorer.sample.prediction
    assert explorer.session.class_name(prediction) == names[prediction]
    explorer.state.target = 999  # any output can be explained
    assert errors(explorer) == ["", "", ""]


def test_a_hidden_tab_describes_the_current_state_when_shown(explorer):
    """The what-if tab, hidden while the state changes, shows what it computes for the state it is shown in."""
    whatif = explorer.whatif
    explorer.state.select("6", [1, 2])
    explorer.tabs.selected_index = [name for _, name, _, _ in explorer._tabs].index("whatif")
    assert "6 channels 1, 2 off" in whatif.summary.value
    explorer.tabs.selected_index = 0
    explorer.state.conditions = {}
    explorer.state.layer = "4"
    explorer.state.channel = 11
    explorer.tabs.selected_index = [name for _, name, _, _ in explorer._tabs].index("whatif")
    assert whatif.result is None
    assert "select channels of 4" in whatif.summary.value
    assert "channels 1, 2" not in whatif.summary.value


def test_profiles_in_steps_equal_one_pass_over_all_samples():
    crp, data = CRP(small_cnn(seed=2)), random_images(40, 1)
    layers = ["0", "4", "6"]
    for method in ("crp", "ig"):
        steps = profiles_in_steps(crp, data, layers, method, per_class=3, steps=2, chunk=2)
        whole = class_profiles(crp, data, layers, method, per_class=3, steps=2)
        assert steps.classes == whole.classes
        assert steps.samples == whole.samples
        for layer in layers:
            torch.testing.assert_close(steps.channel[layer], whole.channel[layer], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(steps.magnitude[layer], whole.magnitude[layer], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(steps.layer, whole.layer, rtol=1e-5, atol=1e-6)
    scores = whole.scores(whole.classes[0], "4")
    table = ablation_in_steps(crp, data, "4", scores, per_class=3)
    expected = ablation_table(crp, data, "4", scores, FRACTIONS, ("top", "bottom"), per_class=3)
    assert [(r.which, r.fraction, r.channels) for r in table] == [(r.which, r.fraction, r.channels) for r in expected]
    for mine, theirs in zip(table, expected):
        torch.testing.assert_close(mine.before, theirs.before)
        torch.testing.assert_close(mine.after, theirs.after)
