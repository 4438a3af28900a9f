import io

import numpy as np
import pytest
import torch
import traitlets
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image

from crp_widgets.widgets.heatmap import HeatmapView


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def image():
    return torch.rand(3, 6, 8)


@pytest.fixture
def heatmap():
    return torch.randn(6, 8)


def test_loads_the_bundle_as_esm_and_css():
    assert "render" in str(HeatmapView._esm)
    assert ".crpw" in str(HeatmapView._css)


def test_sends_the_image_as_png(image):
    view = HeatmapView(image=image)
    assert view.image_png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_png(view.image_png), np.floor(image.permute(1, 2, 0).numpy() * 255 + 0.5))
    assert view.heatmap_data == b""
    assert view.heatmap_meta == {}


def test_sends_the_heatmap_as_raw_float32_with_its_shape(heatmap):
    view = HeatmapView(heatmap=heatmap.double())
    assert view.heatmap_meta == {"shape": [6, 8], "dtype": "float32"}
    np.testing.assert_array_equal(np.frombuffer(view.heatmap_data, dtype="<f4").reshape(6, 8), heatmap.numpy())
    assert view.image_png == b""


def test_accepts_numpy_channels_last_and_batched_tensors(image, heatmap):
    view = HeatmapView(image=image.permute(1, 2, 0).numpy(), heatmap=heatmap[None].numpy(), caption="cat")
    assert view.image.shape == (6, 8, 3)
    assert view.heatmap.shape == (6, 8)
    assert view.caption == "cat"


def test_binary_traits_travel_as_buffers_not_json(image, heatmap):
    view = HeatmapView(image=image, heatmap=heatmap)
    state, buffer_paths, buffers = _remove_buffers(view.get_state())
    assert sorted(buffer_paths) == [["heatmap_data"], ["image_png"]]
    assert "image_png" not in state
    assert "heatmap_data" not in state
    assert {bytes(b) for b in buffers} == {view.image_png, view.heatmap_data}
    assert state["heatmap_meta"] == {"shape": [6, 8], "dtype": "float32"}


def test_traits_have_defaults_and_sync(image):
    view = HeatmapView(image=image)
    assert (view.opacity, view.caption, view.error) == (0.5, "", "")
    assert {"image_png", "heatmap_data", "heatmap_meta", "opacity", "caption", "error"} <= set(view.keys)


def test_opacity_is_bounded():
    view = HeatmapView(opacity=0.8)
    assert view.opacity == 0.8
    with pytest.raises(traitlets.TraitError):
        view.opacity = 1.5


def test_setting_the_heatmap_property_resends_it(image, heatmap):
    view = HeatmapView(image=image)
    view.heatmap = heatmap
    assert view.heatmap_meta["shape"] == [6, 8]
    view.heatmap = None
    assert (view.heatmap_data, view.heatmap_meta, view.heatmap) == (b"", {}, None)
    assert view.image is not None


def test_update_replaces_both_when_the_size_changes(image, heatmap):
    view = HeatmapView(image=image, heatmap=heatmap)
    view.update(image=torch.rand(3, 4, 4), heatmap=torch.randn(4, 4))
    assert view.image.shape == (4, 4, 3)
    assert view.heatmap_meta["shape"] == [4, 4]
    assert decode_png(view.image_png).shape == (4, 4, 3)


def test_size_mismatch_is_a_clear_error_and_leaves_the_view_unchanged(image, heatmap):
    view = HeatmapView(image=image, heatmap=heatmap)
    before = (view.image_png, view.heatmap_data)
    with pytest.raises(ValueError, match=r"heatmap size \[4, 4\] differs from image size \[6, 8\].*update\("):
        view.heatmap = torch.zeros(4, 4)
    assert (view.image_png, view.heatmap_data) == before


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"image must have shape \[3, H, W\] or \[H, W, 3\]"):
        HeatmapView(image=torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match=r"heatmap must have shape \[H, W\]"):
        HeatmapView(heatmap=torch.rand(3, 5, 5))


def test_error_trait_holds_a_message():
    view = HeatmapView()
    view.error = "layer 'features.99' not found"
    assert view.get_state("error") == {"error": "layer 'features.99' not found"}
