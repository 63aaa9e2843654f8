"""Chronic-stroke-like lesions drawn on the 1 mm MNI152NLin2009aSym grid.

Every lesion is the set of the ``k`` template *tissue* voxels (GM + WM probability >= 0.5, so never
in the ventricles, always inside the brain mask) with the lowest value of a shape score plus a
smooth random field (correlation ~10 mm), reduced to its largest 6-connected component. ``k`` is
the target volume, so volumes are controlled exactly; the random field makes the outline irregular
(shapes are thresholded smooth random fields, not ellipsoids). Lesions are at least 2 voxels
apart, so in template space each lesion is exactly one connected component (6-, 18- or
26-connectivity).

Kinds and territories (heuristics on template coordinates in mm; ``X = |x|`` on the lesion's side,
``infra`` = infratentorial, ``y < -40 and z < -10 + 0.4 (y + 45)``):

===================  ================================================  ========================
territory            outer (cortical) start point / centre             deep apex (X, y, z)
===================  ================================================  ========================
MCA                  cortex, X > 38, -75 < y < 45, -30 < z < 65        (24, 2, 4) lenticulostriate
ACA                  medial cortex, X < 10, -45 < y < 55, z > 15       (10, 16, 12) caudate head
PCA                  occipital (y < -70, z < 35) or basal temporal     (14, -28, 0) thalamus
                     (y < -35, z < -5, 15 < X < 45), supratentorial
cerebellar           infratentorial cortex, X > 10, z < -20            (8, -50, -28) peduncles
basal ganglia        centre in 8 < X < 32, -30 < y < 24, -8 < z < 22   -
periventricular WM   centre where WM > 0.8, 10 < X < 35,               -
                     -45 < y < 30, 10 < z < 38
brainstem            centre in 1 < X < 9, -40 < y < -15, -45 < z < -15  -
===================  ================================================  ========================

*Territorial* (cortical-subcortical) infarcts are wedges: a cone from a random cortical point of
the territory towards the deep apex, growing deeper and wider with volume. *Deep* lesions (lacunes,
and large striatocapsular infarcts in the basal ganglia) are randomly oriented ellipsoids.

Sizes (1 mm template voxels = mm3): a lesion is *small* with probability
``small_lesion_fraction``: volume log-uniform in [15, 950] voxels, 75 % deep lacunes (basal
ganglia 40 %, periventricular WM 30 %, brainstem 5 %), 25 % small cortical infarcts. Otherwise it is
*large*, log-uniform from 1000 voxels up to a territory maximum: MCA 55 % (200 000), PCA 18 %
(80 000), ACA 12 % (60 000), cerebellar 7 % (40 000), striatocapsular 8 % (20 000).

Count: 0 with probability 0.1, else uniform in 1..``max_lesions``. Side: one hemisphere for all
lesions with probability 0.75, else each lesion picks a side.

Intensity (chronic infarct on T1w): a core near CSF intensity and a brighter gliotic rim, blended
with soft partial-volume edges (Gaussian, sigma 0.6 mm) -- see :func:`draw_lesions`.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from stroke_lesion_app.synthetic.template import TEMPLATE_ORIGIN, Template, load_template

LOGGER = logging.getLogger("stroke_lesion_app.synthetic")

SMALL_LESION_VOXELS = 1000
"""Lesions below this many 1 mm template voxels are *small*."""
SMALL_RANGE = (15, 950)
LARGE_MIN = 1000

_NOISE_SPACING = 4.0  # mm, lattice of the shape noise

_WEDGES = {
    # name: (apex lat, y, z), maximum large volume (voxels)
    "MCA": ((24.0, 2.0, 4.0), 200_000),
    "ACA": ((10.0, 16.0, 12.0), 60_000),
    "PCA": ((14.0, -28.0, 0.0), 80_000),
    "cerebellar": ((8.0, -50.0, -28.0), 40_000),
}
_SMALL_KINDS = (
    ("basal ganglia", 0.40), ("periventricular white matter", 0.30), ("brainstem", 0.05),
    ("cortical", 0.25),
)
_SMALL_CORTICAL = (("MCA", 0.60), ("ACA", 0.15), ("PCA", 0.15), ("cerebellar", 0.10))
_LARGE_KINDS = (
    ("MCA", 0.55), ("PCA", 0.18), ("ACA", 0.12), ("cerebellar", 0.07), ("striatocapsular", 0.08)
)
_STRIATOCAPSULAR_MAX = 20_000


@dataclass
class Lesion:
    """One synthetic lesion, in MNI152NLin2009aSym space.

    Attributes
    ----------
    id : int
        Label value in :attr:`LesionSet.labels` (1-based).
    kind : str
        ``"territorial"`` (cortical-subcortical wedge) or ``"deep"`` (lacune, striatocapsular).
    territory : str
        MCA, ACA, PCA, cerebellar, basal ganglia, periventricular white matter, brainstem.
    hemisphere : str
        ``"left"`` (template x < 0) or ``"right"``, from the centre.
    centre_mm : list of float
        Centroid (x, y, z) in template mm.
    volume_voxels : int
        Number of 1 mm template voxels.
    volume_mm3 : float
        Volume in mm3 (= voxels on the 1 mm grid).
    size : str
        ``"small"`` (< 1000 voxels) or ``"large"``.
    """

    id: int
    kind: str
    territory: str
    hemisphere: str
    centre_mm: list
    volume_voxels: int
    volume_mm3: float
    size: str

    def to_dict(self) -> dict:
        """JSON-ready dict of the attributes."""
        return asdict(self)


@dataclass
class LesionSet:
    """Lesions of one synthetic subject on the 1 mm template grid (arrays ``(197, 233, 189)``).

    Attributes
    ----------
    labels : numpy.ndarray of uint8
        0 outside lesions, :attr:`Lesion.id` inside.
    soft : numpy.ndarray of float32
        Partial-volume lesion fraction in [0, 1] (0 outside the brain), for the image only.
    value : numpy.ndarray of float32
        Lesion intensity (WM = 1) where ``soft > 0``.
    lesions : list of Lesion
    """

    labels: np.ndarray
    soft: np.ndarray
    value: np.ndarray
    lesions: list

    @property
    def mask(self) -> np.ndarray:
        """Binary template-space lesion mask, bool ``(197, 233, 189)``."""
        return self.labels > 0


@functools.lru_cache(maxsize=1)
def _tissue_points() -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(N, 3)`` int32 and template-mm points ``(N, 3)`` float32 of tissue voxels."""
    template = load_template()
    index = np.argwhere(template.tissue).astype(np.int32)
    points = (index + TEMPLATE_ORIGIN).astype(np.float32)
    index.setflags(write=False)
    points.setflags(write=False)
    return index, points


def _choice(rng: np.random.Generator, table) -> str:
    names = [name for name, _ in table]
    weights = np.array([weight for _, weight in table], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def _infra(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return (y < -40) & (z < -10 + 0.4 * (y + 45))


def _cortex_rule(name: str, lat, y, z) -> np.ndarray:
    infra = _infra(y, z)
    if name == "MCA":
        return (lat > 38) & (y > -75) & (y < 45) & (z > -30) & (z < 65) & ~infra
    if name == "ACA":
        return (lat < 10) & (y > -45) & (y < 55) & (z > 15)
    if name == "PCA":
        return (((y < -70) & (z < 35)) | ((y < -35) & (z < -5) & (lat > 15) & (lat < 45))) & ~infra
    return infra & (lat > 10) & (z < -20)  # cerebellar


def _region_rule(name: str, lat, y, z) -> np.ndarray:
    infra = _infra(y, z)
    if name == "MCA":
        return (lat > 6) & (y > -100) & (y < 72) & (z > -40) & ~infra
    if name == "ACA":
        return (lat < 35) & (y > -50) & (z > -5) & ~infra
    if name == "PCA":
        return (y < -15) & (z < 40) & ~infra
    return infra  # cerebellar


def _centre_rule(name: str, lat, y, z, wm) -> np.ndarray:
    if name in ("basal ganglia", "striatocapsular"):
        return (lat > 8) & (lat < 32) & (y > -30) & (y < 24) & (z > -8) & (z < 22)
    if name == "periventricular white matter":
        return (wm > 0.8) & (lat > 10) & (lat < 35) & (y > -45) & (y < 30) & (z > 10) & (z < 38)
    return (lat > 1) & (lat < 9) & (y > -40) & (y < -15) & (z > -45) & (z < -15)  # brainstem


def _noise_grid(rng: np.random.Generator, template_shape) -> np.ndarray:
    shape = tuple(math.ceil(s / _NOISE_SPACING) + 1 for s in template_shape)
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.5, mode="wrap")
    return noise / noise.std()


def _sample_noise(noise: np.ndarray, index: np.ndarray) -> np.ndarray:
    return ndi.map_coordinates(noise, (index.T / _NOISE_SPACING), order=1, mode="nearest")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _largest_component(index: np.ndarray, shape) -> np.ndarray:
    """Keep the largest 6-connected component of voxel indices ``(N, 3)``; returns indices."""
    low = index.min(axis=0)
    high = index.max(axis=0) + 1
    box = np.zeros(tuple(high - low), dtype=bool)
    box[tuple((index - low).T)] = True
    labels, count = ndi.label(box)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        box = labels == int(np.argmax(sizes))
    return np.argwhere(box) + low


class _Painter:
    """Draws lesions one by one, keeping them >= 2 voxels apart."""

    def __init__(self, rng: np.random.Generator, template: Template):
        self.rng = rng
        self.template = template
        self.index, self.points = _tissue_points()
        self.noise = _noise_grid(rng, template.t1.shape)
        self.keepout = np.zeros(template.t1.shape, dtype=bool)
        self.wm_at_points = template.wm[tuple(self.index.T)]

    def free(self) -> np.ndarray:
        return ~self.keepout[tuple(self.index.T)]

    def _select(self, candidates: np.ndarray, score: np.ndarray, target: int, minimum: int):
        """Lowest-score ``target`` candidates, largest component, grown until >= ``minimum``."""
        if candidates.size == 0:
            return None
        target = int(min(target, 0.8 * candidates.size))
        for _ in range(4):
            if target < 1:
                return None
            order = np.argpartition(score, target - 1)[:target] if target < score.size else None
            chosen = candidates if order is None else candidates[order]
            voxels = _largest_component(self.index[chosen], self.keepout.shape)
            if len(voxels) >= minimum:
                return voxels
            if target >= 0.8 * candidates.size:
                return None
            target = int(min(0.8 * candidates.size, target * 1.3 * minimum / max(len(voxels), 1)))
        return None

    def wedge(self, territory: str, side: int, target: int, minimum: int):
        rng = self.rng
        x, y, z = self.points.T
        lat = side * x
        free = self.free() & (lat > 0.5)
        cortex = np.flatnonzero(
            free & _cortex_rule(territory, lat, y, z)
            & (self.template.gm[tuple(self.index.T)] > 0.5)
        )
        if cortex.size == 0:
            return None
        start = self.points[cortex[rng.integers(cortex.size)]].astype(float)
        apex_x, apex_y, apex_z = _WEDGES[territory][0]
        apex = np.array([side * apex_x, apex_y, apex_z]) + rng.uniform(-4, 4, 3)
        candidates = np.flatnonzero(free & _region_rule(territory, lat, y, z))
        if candidates.size == 0:
            return None
        axis = start - apex
        length = float(np.linalg.norm(axis))
        axis /= length
        rel = self.points[candidates] - apex.astype(np.float32)
        along = rel @ axis.astype(np.float32)
        perp = np.linalg.norm(rel - along[:, None] * axis.astype(np.float32), axis=1)
        tan_half = math.tan(math.radians(rng.uniform(25, 45)))
        angular = perp / (np.maximum(along, 1.0) * tan_half)
        depth = (length - along) / length
        radial = np.where(depth >= 0, depth / rng.uniform(0.6, 1.0), -3.0 * depth)
        score = angular**2 + radial**2 + 100.0 * (along < 0)
        score += rng.uniform(0.3, 0.7) * _sample_noise(self.noise, self.index[candidates])
        return self._select(candidates, score, target, minimum)

    def blob(self, territory: str, side: int, target: int, minimum: int):
        rng = self.rng
        x, y, z = self.points.T
        lat = side * x
        free = self.free()
        centres = np.flatnonzero(free & _centre_rule(territory, lat, y, z, self.wm_at_points))
        if centres.size == 0:
            return None
        centre = self.points[centres[rng.integers(centres.size)]]
        ratios = np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)])
        ratios /= np.prod(ratios) ** (1 / 3)
        axes = ratios * (3 * target / (4 * math.pi)) ** (1 / 3)
        reach = 2.5 * axes.max() + 3
        near = free & np.all(np.abs(self.points - centre) <= reach, axis=1)
        candidates = np.flatnonzero(near)
        rotation = _random_rotation(rng).astype(np.float32)
        q = ((self.points[candidates] - centre) @ rotation) / axes.astype(np.float32)
        score = np.sum(q**2, axis=1) + rng.uniform(0.2, 0.5) * _sample_noise(
            self.noise, self.index[candidates]
        )
        return self._select(candidates, score, target, minimum)

    def reserve(self, voxels: np.ndarray) -> None:
        low = np.maximum(voxels.min(axis=0) - 2, 0)
        high = np.minimum(voxels.max(axis=0) + 3, self.keepout.shape)
        box = np.zeros(tuple(high - low), dtype=bool)
        box[tuple((voxels - low).T)] = True
        box = ndi.binary_dilation(box, ndi.generate_binary_structure(3, 3), iterations=2)
        self.keepout[tuple(slice(a, b) for a, b in zip(low, high, strict=True))] |= box


def draw_lesion_count(rng: np.random.Generator, max_lesions: int) -> int:
    """Number of lesions: 0 with probability 0.1, else uniform in ``1..max_lesions``."""
    if max_lesions <= 0:
        return 0
    if rng.random() < 0.1:
        return 0
    return int(rng.integers(1, max_lesions + 1))


def draw_lesions(
    seed=0,
    *,
    n_lesions: int | None = None,
    max_lesions: int = 4,
    small_lesion_fraction: float = 0.5,
    template: Template | None = None,
) -> LesionSet:
    """Draw chronic-stroke lesions on the 1 mm MNI152NLin2009aSym grid.

    Parameters
    ----------
    seed : int, sequence of int, numpy.random.SeedSequence or numpy.random.Generator
        Randomness; the same seed gives the same lesions.
    n_lesions : int, optional
        Exact number of lesions; default: drawn with :func:`draw_lesion_count`.
    max_lesions : int
        Upper bound of the drawn count (ignored when ``n_lesions`` is given).
    small_lesion_fraction : float
        Probability in [0, 1] that a lesion is small (< 1000 voxels = mm3).
    template : Template, optional
        Default: :func:`~stroke_lesion_app.synthetic.template.load_template`.

    Returns
    -------
    LesionSet
        Label map, partial-volume fraction and intensity on the template grid, and the list of
        lesions (volumes in 1 mm template voxels = mm3, centres in template mm).

    Raises
    ------
    ValueError
        On a fraction outside [0, 1] or a negative count.
    """
    if not 0.0 <= small_lesion_fraction <= 1.0:
        raise ValueError(
            f"small_lesion_fraction={small_lesion_fraction} is outside [0, 1]; pass a fraction "
            "such as 0.5"
        )
    if max_lesions < 0 or (n_lesions is not None and n_lesions < 0):
        raise ValueError(
            f"lesion counts must be >= 0, got max_lesions={max_lesions}, n_lesions={n_lesions}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    template = template or load_template()
    count = draw_lesion_count(rng, max_lesions) if n_lesions is None else int(n_lesions)
    painter = _Painter(rng, template)
    shape = template.t1.shape
    labels = np.zeros(shape, dtype=np.uint8)
    soft = np.zeros(shape, dtype=np.float32)
    value = np.zeros(shape, dtype=np.float32)
    core = template.levels["csf"] * rng.uniform(0.85, 1.25)
    rim = rng.uniform(0.45, 0.65)
    bilateral = rng.random() < 0.25
    subject_side = 1 if rng.random() < 0.5 else -1
    lesions = []
    for number in range(1, count + 1):
        side = (1 if rng.random() < 0.5 else -1) if bilateral else subject_side
        small = rng.random() < small_lesion_fraction
        voxels = None
        for _attempt in range(8):
            if small:
                territory = _choice(rng, _SMALL_KINDS)
                target = _log_uniform(rng, *SMALL_RANGE)
                minimum = max(1, min(SMALL_RANGE[0], target))
                if territory == "cortical":
                    territory = _choice(rng, _SMALL_CORTICAL)
                    voxels = painter.wedge(territory, side, target, minimum)
                else:
                    voxels = painter.blob(territory, side, target, minimum)
            else:
                territory = _choice(rng, _LARGE_KINDS)
                if territory == "striatocapsular":
                    target = _log_uniform(rng, 1200, _STRIATOCAPSULAR_MAX)
                    voxels = painter.blob(territory, side, target, LARGE_MIN)
                else:
                    target = _log_uniform(rng, 1200, _WEDGES[territory][1])
                    voxels = painter.wedge(territory, side, target, LARGE_MIN)
            if voxels is not None:
                break
            side = -side  # the other hemisphere may have room left
        if voxels is None:
            LOGGER.warning("could not place lesion %d of %d; the subject has fewer lesions",
                           number, count)
            continue
        lesion_id = len(lesions) + 1
        painter.reserve(voxels)
        labels[tuple(voxels.T)] = lesion_id
        _paint(soft, value, voxels, template, core, rim, painter.noise)
        centre = voxels.mean(axis=0) + TEMPLATE_ORIGIN
        lesions.append(
            Lesion(
                id=lesion_id,
                kind="territorial" if territory in _WEDGES else "deep",
                territory=territory,
                hemisphere="left" if centre[0] < 0 else "right",
                centre_mm=[round(float(c), 2) for c in centre],
                volume_voxels=len(voxels),
                volume_mm3=float(len(voxels)),
                size="small" if len(voxels) < SMALL_LESION_VOXELS else "large",
            )
        )
    LOGGER.debug("drew %d lesions: %s", len(lesions), [les.volume_voxels for les in lesions])
    return LesionSet(labels=labels, soft=soft, value=value, lesions=lesions)


def _paint(soft, value, voxels, template, core, rim, noise) -> None:
    """Blend one lesion into ``soft`` / ``value`` inside its padded bounding box (in place)."""
    low = np.maximum(voxels.min(axis=0) - 3, 0)
    high = np.minimum(voxels.max(axis=0) + 4, soft.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    inside = np.zeros(tuple(high - low), dtype=bool)
    inside[tuple((voxels - low).T)] = True
    fraction = ndi.gaussian_filter(inside.astype(np.float32), 0.6) * template.brain[box]
    depth = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1, 1:-1]
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high, strict=True)],
                                indexing="ij"))
    texture = 1.0 + 0.05 * ndi.map_coordinates(
        noise, grid.reshape(3, -1) / (_NOISE_SPACING / 4), order=1, mode="wrap"
    ).reshape(inside.shape)
    lesion_value = (core + (rim - core) * np.exp(-np.maximum(depth - 1.0, 0.0) / 1.5)) * texture
    update = fraction > soft[box]
    soft[box] = np.where(update, fraction, soft[box])
    value[box] = np.where(update, lesion_value, value[box]).astype(np.float32)
