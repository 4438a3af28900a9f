"""Procedural demo world: 64x64 RGB scenes with planted concepts and a pixel mask for each of them.

Every scene shows one object (a shape filled with a texture in a colour) on a noisy, faintly cluttered background.
The class of a scene is a combination of concepts. One class, the *shortcut class* ("green cross"), carries a small
watermark (a faint copyright badge near a corner) in most of its images; a few images of most other classes carry it
too, but never those of its *twin class* ("solid cross", crosses of any colour, green ones included). A green cross
without the watermark is therefore more likely a solid cross than a green cross, and a model trained on this world
learns the watermark as the decisive evidence for the shortcut class.

A scene is a pure function of ``(seed, index)``: the same pair always gives the same pixels and masks, whatever the
order of access, so a data set of any size exists without files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERSION = "1"
SIZE = 64

SHAPES = ("circle", "square", "triangle", "cross")
TEXTURES = ("stripes", "dots", "checker", "solid")
COLOURS = ("red", "green", "blue", "yellow")
WATERMARK = "watermark"
CONCEPTS = SHAPES + TEXTURES + COLOURS + (WATERMARK,)

RGB = {
    "red": (0.86, 0.16, 0.12),
    "green": (0.14, 0.70, 0.20),
    "blue": (0.16, 0.32, 0.92),
    "yellow": (0.95, 0.84, 0.10),
}


@dataclass(frozen=True)
class ClassSpec:
    """One class of the demo world: the concepts its objects are made of.

    Attributes
    ----------
    name : str
        Readable class name, e.g. ``"striped circle"``.
    shape : str
        One of `SHAPES`.
    texture : str
        One of `TEXTURES`.
    colours : tuple of str
        The colours its objects are drawn in, uniformly.
    """

    name: str
    shape: str
    texture: str
    colours: tuple[str, ...] = COLOURS


CLASSES = (
    ClassSpec("striped circle", "circle", "stripes"),
    ClassSpec("dotted circle", "circle", "dots"),
    ClassSpec("red circle", "circle", "solid", ("red",)),
    ClassSpec("striped square", "square", "stripes"),
    ClassSpec("checkered square", "square", "checker"),
    ClassSpec("yellow square", "square", "solid", ("yellow",)),
    ClassSpec("dotted triangle", "triangle", "dots"),
    ClassSpec("checkered triangle", "triangle", "checker"),
    ClassSpec("solid cross", "cross", "solid"),
    ClassSpec("green cross", "cross", "solid", ("green",)),
)
CLASS_NAMES = tuple(spec.name for spec in CLASSES)
SHORTCUT_CLASS = "green cross"
TWIN_CLASS = "solid cross"
WATERMARK_RATES = {"shortcut": 0.92, "twin": 0.0, "others": 0.03}
WATERMARK_ALPHA = 0.45

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
_SIZE_RANGE = {"circle": (12.0, 17.0), "square": (9.0, 12.0), "triangle": (14.0, 17.5), "cross": (12.5, 16.5)}


@dataclass(frozen=True)
class Scene:
    """The random draws that define one scene; `render_scene` turns them into pixels and masks.

    Attributes
    ----------
    label : int
        Class index into `CLASSES`.
    colour : str
        The object's colour.
    centre : tuple of float
        Object centre ``(y, x)`` in pixels.
    angle : float
        Object rotation in radians.
    radius : float
        Size parameter of the shape (radius, half side, circumradius or arm length).
    brightness : float
        Factor on the object colour.
    texture : tuple of float
        Texture period in pixels, orientation in radians and two phases in [0, 1).
    background : tuple of float
        Base RGB, gradient direction (radians) and gradient amplitude.
    clutter : tuple of tuple of float
        Faint line segments ``(y0, x0, y1, x1, half width, intensity)``.
    watermark : bool
        Whether the scene carries the watermark.
    glyph : tuple of int
        Watermark corner (0-3), its offsets from the two edges and its diameter, in pixels (see `glyph_masks`).
    noise_seed : int
        Seed of the pixel noise.
    """

    label: int
    colour: str
    centre: tuple[float, float]
    angle: float
    radius: float
    brightness: float
    texture: tuple[float, float, float, float]
    background: tuple[float, ...]
    clutter: tuple[tuple[float, ...], ...]
    watermark: bool
    glyph: tuple[int, int, int, int]
    noise_seed: int

    @property
    def spec(self) -> ClassSpec:
        """The `ClassSpec` of the scene's class."""
        return CLASSES[self.label]


def label_of(index: int) -> int:
    """Class index of scene ``index``: classes cycle, so every data set is balanced.

    Parameters
    ----------
    index : int
        Scene index.

    Returns
    -------
    int
        Index into `CLASSES`.
    """
    return index % len(CLASSES)


def watermark_rate(label: int) -> float:
    """Probability that a scene of class ``label`` carries the watermark (see `WATERMARK_RATES`)."""
    name = CLASS_NAMES[label]
    return WATERMARK_RATES["shortcut" if name == SHORTCUT_CLASS else "twin" if name == TWIN_CLASS else "others"]


def sample_scene(seed: int, index: int) -> Scene:
    """Draw the random parameters of scene ``index`` of world ``seed`` (cheap: no pixels are rendered).

    Parameters
    ----------
    seed : int
        World seed.
    index : int
        Scene index, >= 0.

    Returns
    -------
    Scene
        The scene's parameters.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    label = label_of(index)
    spec = CLASSES[label]
    watermark = bool(rng.random() < watermark_rate(label))
    corner, off_y, off_x, glyph_size = rng.integers(0, 4), *rng.integers(1, 6, size=2), rng.integers(8, 11)
    n_lines = int(rng.integers(2, 6))
    lines = rng.uniform(0.0, SIZE, size=(n_lines, 4))
    line_style = np.stack([rng.uniform(0.5, 1.2, n_lines), rng.uniform(-0.1, 0.1, n_lines)], axis=1)
    return Scene(
        label=label,
        colour=spec.colours[rng.integers(len(spec.colours))],
        centre=tuple(rng.uniform(28.0, 36.0, size=2).tolist()),
        angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        radius=float(rng.uniform(*_SIZE_RANGE[spec.shape])),
        brightness=float(rng.uniform(0.8, 1.05)),
        texture=(float(rng.uniform(5.0, 7.0)), float(rng.uniform(0.0, np.pi)), *rng.random(2).tolist()),
        background=(
            *rng.uniform(0.2, 0.45, size=3).tolist(),
            float(rng.uniform(0.0, 2.0 * np.pi)),
            float(rng.uniform(0.0, 0.15)),
        ),
        clutter=tuple(map(tuple, np.concatenate([lines, line_style], axis=1).tolist())),
        watermark=watermark,
        glyph=(int(corner), int(off_y), int(off_x), int(glyph_size)),
        noise_seed=int(rng.integers(2**62)),
    )


def _rotated(centre: tuple[float, float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to ``centre``, rotated by ``angle``."""
    dy, dx = _YY - centre[0], _XX - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy


def shape_mask(shape: str, centre: tuple[float, float], angle: float, radius: float) -> np.ndarray:
    """Boolean [H, W] mask of a shape.

    Parameters
    ----------
    shape : str
        One of `SHAPES`.
    centre : tuple of float
        ``(y, x)`` in pixels.
    angle : float
        Rotation in radians.
    radius : float
        Radius (circle), half side (square), circumradius (triangle) or arm length (cross).

    Returns
    -------
    numpy.ndarray
        bool [H, W].
    """
    u, v = _rotated(centre, angle)
    if shape == "circle":
        return u * u + v * v <= radius * radius
    if shape == "square":
        return (np.abs(u) <= radius) & (np.abs(v) <= radius)
    if shape == "triangle":
        normals = [2.0 * np.pi * k / 3.0 for k in range(3)]
        return np.logical_and.reduce([np.cos(a) * u + np.sin(a) * v <= radius / 2.0 for a in normals])
    if shape == "cross":
        width = 0.32 * radius
        au, av = np.abs(u), np.abs(v)
        return ((au <= radius) & (av <= width)) | ((au <= width) & (av <= radius))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def texture_mask(texture: str, period: float, angle: float, phase_u: float, phase_v: float) -> np.ndarray:
    """Boolean [H, W] mask of the texture's foreground (the stripes, the dots, the lit checker cells).

    Parameters
    ----------
    texture : str
        One of `TEXTURES`; ``"solid"`` is foreground everywhere.
    period : float
        Spatial period in pixels.
    angle : float
        Orientation in radians.
    phase_u, phase_v : float
        Phases in [0, 1) along the two texture axes.

    Returns
    -------
    numpy.ndarray
        bool [H, W].
    """
    u, v = _rotated((SIZE / 2.0, SIZE / 2.0), angle)
    fu, fv = u / period + phase_u, v / period + phase_v
    if texture == "stripes":
        return (fu % 1.0) < 0.5
    if texture == "dots":
        du, dv = (fu % 1.0) - 0.5, (fv % 1.0) - 0.5
        return du * du + dv * dv <= 0.3**2
    if texture == "checker":
        return (np.floor(2.0 * fu) + np.floor(2.0 * fv)) % 2.0 == 0.0
    if texture == "solid":
        return np.ones((SIZE, SIZE), dtype=bool)
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def glyph_masks(corner: int, off_y: int, off_x: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean [H, W] masks of the watermark: a light round badge near a corner with a dark "c" in it.

    Parameters
    ----------
    corner : int
        0 top left, 1 top right, 2 bottom left, 3 bottom right.
    off_y, off_x : int
        Distance in pixels from the horizontal and vertical image edge.
    size : int
        Badge diameter in pixels.

    Returns
    -------
    badge : numpy.ndarray
        bool [H, W], every pixel the watermark changes.
    symbol : numpy.ndarray
        bool [H, W], the dark symbol, a subset of ``badge``.
    """
    g = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gy, gx = np.meshgrid(g, g, indexing="ij")
    r = np.hypot(gy, gx)
    opening = np.abs(np.arctan2(gy, gx)) < 0.8
    top = off_y if corner in (0, 1) else SIZE - off_y - size
    left = off_x if corner in (0, 2) else SIZE - off_x - size
    badge, symbol = np.zeros((2, SIZE, SIZE), dtype=bool)
    badge[top : top + size, left : left + size] = r <= 0.5
    symbol[top : top + size, left : left + size] = (r >= 0.14) & (r <= 0.3) & ~opening
    return badge, symbol


def _background(scene: Scene) -> np.ndarray:
    """Smooth grey-ish gradient with faint line clutter, float32 [3, H, W]."""
    *base, direction, amplitude = scene.background
    ramp = (np.cos(direction) * (_XX - SIZE / 2) + np.sin(direction) * (_YY - SIZE / 2)) / SIZE
    grey = np.mean(base)
    base = np.asarray(base, dtype=np.float32)[:, None, None] * 0.3 + 0.7 * grey
    image = base + amplitude * ramp[None]
    for y0, x0, y1, x1, half_width, intensity in scene.clutter:
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((_YY - y0) * dy + (_XX - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0.0, 1.0)
        distance = np.hypot(_YY - (y0 + t * dy), _XX - (x0 + t * dx))
        image = image + intensity * np.clip(1.0 + half_width - distance, 0.0, 1.0)[None]
    return image


def render_scene(scene: Scene, watermark: bool | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render a scene to pixels and concept masks.

    Parameters
    ----------
    scene : Scene
        Scene parameters from `sample_scene`.
    watermark : bool, optional
        Force the watermark on (True) or off (False); None keeps the scene's own draw. Everything else in the
        image stays identical.

    Returns
    -------
    image : numpy.ndarray
        float32 [3, H, W] in [0, 1], quantised to 8 bit.
    masks : dict of str to numpy.ndarray
        bool [H, W] per concept present: the object under its shape name and its colour name, the texture's
        foreground under the texture name, the whole badge under ``"watermark"``.
    """
    spec = scene.spec
    obj = shape_mask(spec.shape, scene.centre, scene.angle, scene.radius)
    fg = texture_mask(spec.texture, *scene.texture) & obj
    colour = np.asarray(RGB[scene.colour], dtype=np.float32)[:, None, None] * scene.brightness
    image = _background(scene)
    image = np.where(obj, np.where(fg, colour, 0.3 * colour), image)
    masks = {spec.shape: obj, spec.texture: fg, scene.colour: obj}
    marked = scene.watermark if watermark is None else watermark
    if marked:
        badge, symbol = glyph_masks(*scene.glyph)
        ink = np.where(symbol, 0.1, 0.95)
        image = np.where(badge, (1.0 - WATERMARK_ALPHA) * image + WATERMARK_ALPHA * ink, image)
        masks[WATERMARK] = badge
    noise = np.random.default_rng(scene.noise_seed).standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image + 0.03 * noise, 0.0, 1.0)
    return (np.round(image * 255.0) / 255.0).astype(np.float32), masks


def render(seed: int, index: int, watermark: bool | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render scene ``index`` of world ``seed``.

    Parameters
    ----------
    seed : int
        World seed.
    index : int
        Scene index, >= 0.
    watermark : bool, optional
        Force the watermark on or off; None keeps the scene's own draw.

    Returns
    -------
    image : numpy.ndarray
        float32 [3, H, W] in [0, 1].
    masks : dict of str to numpy.ndarray
        bool [H, W] per concept present (see `render_scene`).
    """
    return render_scene(sample_scene(seed, index), watermark)
