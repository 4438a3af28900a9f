import io
import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from crp_widgets.render.buffers import array_buffer
from crp_widgets.render.colormap import bwr, bwr_uint8, normalize, to_uint8
from crp_widgets.render.images import as_heatmap, encode_png, heatmap_to_rgb, image_to_uint8, overlay

PARITY = json.loads((pathlib.Path(__file__).parents[1] / "js" / "lib" / "parity.fixture.json").read_text())


# --- colormap -------------------------------------------------------------------------------------------------


def test_bwr_exact_colours_at_the_ends_and_the_middle():
    np.testing.assert_array_equal(bwr(np.array([-1.0, 0.0, 1.0])), [[0, 0, 1], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(bwr_uint8(np.array([-1.0, 0.0, 1.0])), [[0, 0, 255], [255, 255, 255], [255, 0, 0]])


def test_bwr_is_linear_between_the_anchors():
    np.testing.assert_allclose(bwr(np.array([-0.5, 0.25])), [[0.5, 0.5, 1.0], [1.0, 0.75, 0.75]])


def test_bwr_matches_matplotlib_segment_data():
    # matplotlib's 'bwr': LinearSegmentedColormap.from_list over (0,0,1), (1,1,1), (1,0,0) on [0, 1].
    values = np.linspace(-1, 1, 101)
    position = (values + 1) / 2
    anchors = np.array([0.0, 0.5, 1.0])
    expected = np.stack(
        [np.interp(position, anchors, channel) for channel in ([0, 1, 1], [0, 1, 0], [1, 1, 0])], axis=-1
    )
    np.testing.assert_allclose(bwr(values), expected, atol=1e-12)


def test_bwr_is_mirror_symmetric():
    values = np.linspace(0, 1, 37)
    np.testing.assert_array_equal(bwr(-values), bwr(values)[..., ::-1])


def test_bwr_clips_out_of_range_values():
    np.testing.assert_array_equal(bwr(np.array([-5.0, 3.0])), bwr(np.array([-1.0, 1.0])))


def test_normalize_divides_by_the_maximum_absolute_value():
    np.testing.assert_array_equal(normalize(np.array([-4.0, 2.0, 1.0])), [-1.0, 0.5, 0.25])
    np.testing.assert_array_equal(normalize(np.array([0.5, 2.0])), [0.25, 1.0])
    assert normalize(np.array([[3.0, -1.0]])).shape == (1, 2)


def test_normalize_keeps_zero_relevance_at_zero():
    np.testing.assert_array_equal(normalize(np.zeros((2, 3))), np.zeros((2, 3)))
    assert normalize(np.zeros((0,))).shape == (0,)


def test_normalize_rejects_non_finite_values():
    with pytest.raises(ValueError, match="NaN or infinite"):
        normalize(np.array([1.0, np.nan]))


def test_normalisation_makes_colours_scale_invariant():
    relevance = np.array([-3.0, -1.0, 0.0, 2.0, 6.0])
    np.testing.assert_array_equal(bwr_uint8(relevance), bwr_uint8(relevance * 1e-6))


def test_to_uint8_rounds_half_up_and_clips():
    np.testing.assert_array_equal(to_uint8(np.array([-0.1, 0.0, 0.5, 1.0, 1.5])), [0, 0, 128, 255, 255])


def test_colormap_matches_the_shared_reference_values():
    relevance = np.array(PARITY["colormap"]["relevance"])
    np.testing.assert_array_equal(bwr_uint8(relevance), PARITY["colormap"]["rgb"])


# --- images ---------------------------------------------------------------------------------------------------


def test_image_to_uint8_accepts_channels_first_and_last():
    hwc = np.random.default_rng(0).random((5, 7, 3))
    expected = np.floor(hwc * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(image_to_uint8(hwc), expected)
    np.testing.assert_array_equal(image_to_uint8(np.moveaxis(hwc, -1, 0)), expected)
    np.testing.assert_array_equal(image_to_uint8(torch.from_numpy(np.moveaxis(hwc, -1, 0))[None]), expected)
    assert image_to_uint8(hwc).shape == (5, 7, 3)
    assert image_to_uint8(hwc).dtype == np.uint8


def test_image_to_uint8_accepts_tensors_that_need_grad_and_half_precision():
    chw = torch.rand(3, 4, 6, requires_grad=True)
    assert image_to_uint8(chw).shape == (4, 6, 3)
    assert image_to_uint8(chw.detach().half()).shape == (4, 6, 3)


def test_image_to_uint8_reads_a_leading_3_as_channels_first():
    assert image_to_uint8(np.zeros((3, 4, 3))).shape == (4, 3, 3)


def test_image_to_uint8_passes_uint8_through():
    pixels = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(image_to_uint8(pixels), pixels)


@pytest.mark.parametrize("shape", [(4, 4), (2, 4, 4), (4, 4, 4), (2, 3, 4, 4), (3, 0, 4)])
def test_image_to_uint8_names_the_accepted_shapes(shape):
    with pytest.raises(ValueError, match=r"\[3, H, W\] or \[H, W, 3\].*got shape"):
        image_to_uint8(np.zeros(shape))


def test_image_to_uint8_rejects_normalised_inputs():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*undo the input normalisation"):
        image_to_uint8(np.full((3, 2, 2), -1.8))


def test_image_to_uint8_rejects_other_types():
    with pytest.raises(TypeError, match=r"torch\.Tensor or a numpy\.ndarray; got list"):
        image_to_uint8([[0.0]])
    with pytest.raises(TypeError, match="got dtype int64"):
        image_to_uint8(np.zeros((2, 2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_to_uint8(np.full((2, 2, 3), np.nan))


def test_as_heatmap_returns_float32_hw():
    heatmap = as_heatmap(torch.ones(1, 4, 5, dtype=torch.float64))
    assert heatmap.shape == (4, 5)
    assert heatmap.dtype == np.float32
    assert heatmap.flags.c_contiguous


@pytest.mark.parametrize("shape", [(4,), (2, 4, 4), (1, 1, 4, 4), (0, 3)])
def test_as_heatmap_names_the_accepted_shape(shape):
    with pytest.raises(ValueError, match=r"heatmap must have shape \[H, W\].*got shape"):
        as_heatmap(np.zeros(shape))


def test_heatmap_to_rgb_colours_with_the_paper_convention():
    rgb = heatmap_to_rgb(torch.tensor([[2.0, 0.0], [-1.0, -2.0]]))
    assert rgb.shape == (2, 2, 3)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, [[[255, 0, 0], [255, 255, 255]], [[128, 128, 255], [0, 0, 255]]])


def test_overlay_covers_the_image_with_the_signs_colour_by_the_relevance():
    image = np.full((2, 2, 3), 0.5)
    heatmap = np.array([[1.0, -1.0], [0.5, 0.0]])
    grey = image_to_uint8(image)[0, 0]
    np.testing.assert_array_equal(overlay(image, heatmap, 0.0), image_to_uint8(image))
    half = overlay(image, heatmap, 0.5)  # the weight is |v|: the largest relevance in its pure colour
    np.testing.assert_array_equal(half[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(half[0, 1], [0, 0, 255])
    np.testing.assert_array_equal(half[1, 1], grey)  # no relevance: the image as it is
    weight = (255 - 128) / 255  # half the relevance: bwr (255, 128, 128)
    np.testing.assert_array_equal(half[1, 0], np.floor((1 - weight) * grey + weight * np.array([255, 0, 0]) + 0.5))
    doubled = min(1.0, 2 * weight)  # opacity 1 doubles the weight
    np.testing.assert_array_equal(
        overlay(image, heatmap, 1.0)[1, 0], np.floor((1 - doubled) * grey + doubled * np.array([255, 0, 0]) + 0.5)
    )


def test_overlay_matches_the_shared_reference_values():
    case = PARITY["overlay"]
    result = overlay(np.array(case["image"], dtype=np.uint8), np.array(case["heatmap"]), case["opacity"])
    np.testing.assert_array_equal(result, case["rgb"])


def test_overlay_rejects_mismatched_sizes_and_bad_opacity():
    with pytest.raises(ValueError, match=r"heatmap size \[4, 4\] differs from image size \[2, 2\]"):
        overlay(np.zeros((2, 2, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"opacity must lie in \[0, 1\]; got 1.5"):
        overlay(np.zeros((2, 2, 3)), np.zeros((2, 2)), 1.5)


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3), (6, 5, 4)])
def test_encode_png_round_trips(shape):
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(pixels)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_encode_png_rejects_bad_input():
    with pytest.raises(ValueError, match="must be uint8; got dtype float64"):
        encode_png(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"\[H, W\], \[H, W, 3\] or \[H, W, 4\]; got shape \[2, 2, 2\]"):
        encode_png(np.zeros((2, 2, 2), dtype=np.uint8))


# --- buffers --------------------------------------------------------------------------------------------------


def test_array_buffer_sends_little_endian_float32():
    values = np.array([[1.5, -2.0, 0.25]], dtype=np.float64)
    data, meta = array_buffer(values)
    assert meta == {"shape": [1, 3], "dtype": "float32"}
    np.testing.assert_array_equal(np.frombuffer(data, dtype="<f4"), [1.5, -2.0, 0.25])


def test_array_buffer_sends_uint8_and_non_contiguous_views():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4).T
    data, meta = array_buffer(pixels)
    assert meta == {"shape": [4, 3], "dtype": "uint8"}
    assert data == pixels.tobytes()


def test_array_buffer_rejects_other_dtypes():
    with pytest.raises(TypeError, match=r"floating-point and uint8.*got dtype int32"):
        array_buffer(np.zeros(3, dtype=np.int32))
