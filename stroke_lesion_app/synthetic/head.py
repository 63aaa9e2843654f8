"""Synthetic heads: template anatomy + lesions, warped and "scanned" onto a native grid.

Spaces
------
*template* = MNI152NLin2009aSym world mm (RAS+); *native* = the synthetic scanner's world mm (RAS+,
the NIfTI affine's output). A subject is a deformed template (:class:`Anatomy`); a scan (session) is
that anatomy posed in the scanner (:class:`Acquisition`). A native voxel centre ``p`` (native mm)
shows the template point::

    y = native_to_template @ p          (4x4 affine, exact, written to the truth derivatives)
    x = y + u(y)                        (u: smooth displacement, |u| <= max_displacement_mm)

``u`` is Gaussian-smoothed white noise (sigma 20 mm) on a 4 mm lattice, scaled so that its largest
length is 1.5-4 mm; it stands for anatomical variability and is *not* in the written affine.

Head outside the brain (the nilearn template is skull-stripped, so the rest is built here), as a
function of ``d``, the distance (mm) from the brain + spinal cord divided by a smooth per-subject
thickness factor (0.6-1.6): CSF rim (dark, 1.5-3.5 mm), inner table (very dark), marrow (bright),
outer table (very dark), scalp fat/muscle (bright), skin (grey), then air. Outside the outer table
a neck (elliptic cylinder below z = -35..-50 mm) with an airway, a lower face (ellipsoid in front of
and below the frontal lobes) with two dark eyes, both filled with a smooth muscle/fat texture; a
spinal cord continues the medulla below the template grid (not part of the brain mask).

Image formation on the native grid: partial-volume sampling of the 1 mm fields (block means at
the voxel size's integer part, then trilinear), gamma contrast change, smooth multiplicative bias
field (exp of a random degree-2 cosine series, about +-20 %), Rician noise, scaling and storage as
int16 or float32 in the requested orientation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from stroke_lesion_app.synthetic.lesions import LesionSet, draw_lesions
from stroke_lesion_app.synthetic.template import (
    CORD_TOP,
    HEAD_ORIGIN,
    HEAD_SHAPE,
    HEAD_SPACING,
    TEMPLATE_ORIGIN,
    Template,
    cord_weight,
    head_distance,
    load_template,
)

LOGGER = logging.getLogger("stroke_lesion_app.synthetic")

ORIENTATIONS = ("RAS", "LPS", "LIA")
"""Storage orientations cycled through by the dataset generator (nibabel axis codes)."""
VOXEL_SIZES = ((1.0, 1.0, 1.0), (0.9, 0.9, 1.2), (1.2, 1.2, 1.2))
"""Voxel sizes (mm, per storage axis) drawn from; multiplied by ``resolution`` when given."""
DTYPES = ("int16", "float32")
FOV_CROPS = ("none", "top", "neck")

_LATTICE = 4.0  # mm spacing of the displacement / thickness / texture lattices
_LATTICE_SHAPE = tuple(math.ceil((s - 1) * HEAD_SPACING / _LATTICE) + 2 for s in HEAD_SHAPE)
_HEAD_BOX = ((-95.0, 95.0), (-130.0, 105.0), (-110.0, 110.0))  # template mm to image
_BRAIN_BOX = ((-88.0, 88.0), (-122.0, 88.0), (-75.0, 98.0))  # never cut, except by a top crop
_MAX_FOV = 240.0  # mm per axis, unless the brain box needs more
_CHUNK = 1_500_000  # voxels rendered at once


@dataclass
class Anatomy:
    """One synthetic subject in template space (shared by all its sessions).

    Attributes
    ----------
    lesions : LesionSet
        Lesions on the 1 mm template grid.
    t1 : numpy.ndarray of float32, shape (197, 233, 189)
        Template T1w with the lesions blended in (WM = 1, 0 outside the brain).
    displacement : numpy.ndarray of float32, shape (3, *lattice)
        Displacement u (mm, template axes) on the 4 mm lattice starting at ``HEAD_ORIGIN``.
    max_displacement_mm : float
        Largest length of u (mm).
    distance : numpy.ndarray of float32, shape ``HEAD_SHAPE``
        Distance from brain + cord (mm) divided by the thickness factor, on the 2 mm head grid.
    texture : numpy.ndarray of float32, shape (lattice)
        Smooth unit-variance field for neck/face soft tissue.
    params : dict
        Layer boundaries (mm) and intensities (WM = 1), neck/face geometry (template mm).
    """

    lesions: LesionSet
    t1: np.ndarray
    displacement: np.ndarray
    max_displacement_mm: float
    distance: np.ndarray
    texture: np.ndarray
    params: dict
    _cache: dict = field(default_factory=dict, repr=False)

    def working_fields(self, factor: int, template: Template) -> tuple[np.ndarray, ...]:
        """T1w, brain and lesion partial-volume fields as block means of ``factor`` 1 mm voxels."""
        if factor not in self._cache:
            fields = (
                self.t1,
                template.brain.astype(np.float32),
                self.lesions.mask.astype(np.float32),
            )
            self._cache[factor] = tuple(_block_mean(array, factor) for array in fields)
        return self._cache[factor]

    def lesion_tree(self) -> tuple[cKDTree, np.ndarray]:
        """KD-tree over lesion voxel centres (template mm) and their labels."""
        if "tree" not in self._cache:
            index = np.argwhere(self.lesions.labels > 0)
            labels = self.lesions.labels[tuple(index.T)]
            self._cache["tree"] = (cKDTree(index + TEMPLATE_ORIGIN), labels)
        return self._cache["tree"]


@dataclass
class Acquisition:
    """How one session was scanned.

    Attributes
    ----------
    template_to_native : numpy.ndarray, shape (4, 4)
        Affine mapping template mm to native mm (rotation, scaling, translation).
    affine : numpy.ndarray, shape (4, 4)
        Native voxel-to-world (native mm) affine of the stored array.
    shape : tuple of int
        Stored array shape.
    voxel_size : tuple of float
        mm per storage axis.
    orientation : str
        Storage axis codes, e.g. ``"LIA"``.
    dtype : str
        ``"int16"`` or ``"float32"``.
    fov_crop : str
        ``"none"``, ``"top"`` (vertex cut) or ``"neck"`` (cut above the neck).
    params : dict
        Pose (degrees, scales, mm), gamma, bias coefficients, noise sigma (WM = 1), scale.
    """

    template_to_native: np.ndarray
    affine: np.ndarray
    shape: tuple
    voxel_size: tuple
    orientation: str
    dtype: str
    fov_crop: str
    params: dict

    @property
    def native_to_template(self) -> np.ndarray:
        """Affine mapping native mm to template mm, shape ``(4, 4)`` (inverse of the pose)."""
        return np.linalg.inv(self.template_to_native)


@dataclass
class SyntheticScan:
    """One rendered T1w session and its native-space truth.

    Attributes
    ----------
    t1w : numpy.ndarray, int16 or float32, shape ``acquisition.shape``
        The image, stored orientation as in ``affine``.
    affine : numpy.ndarray, shape (4, 4)
        Voxel-to-native-world affine.
    lesion_mask, brain_mask : numpy.ndarray of uint8, shape ``acquisition.shape``
        Native truth (lesion within brain).
    lesion_voxels : dict
        Native voxel count per lesion id (lesions cut by the field of view may have 0).
    acquisition : Acquisition
    """

    t1w: np.ndarray
    affine: np.ndarray
    lesion_mask: np.ndarray
    brain_mask: np.ndarray
    lesion_voxels: dict
    acquisition: Acquisition


def _sigmoid(value):
    return 0.5 * (1.0 + np.tanh(0.5 * value))


def _block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return np.ascontiguousarray(array, dtype=np.float32)
    pad = [(0, (-s) % factor) for s in array.shape]
    padded = np.pad(array.astype(np.float32), pad)
    n0, n1, n2 = (s // factor for s in padded.shape)
    return padded.reshape(n0, factor, n1, factor, n2, factor).mean(axis=(1, 3, 5))


def _lattice_noise(rng: np.random.Generator, sigma: float, count: int = 1) -> np.ndarray:
    noise = rng.standard_normal((count, *_LATTICE_SHAPE)).astype(np.float32)
    for i in range(count):
        noise[i] = ndi.gaussian_filter(noise[i], sigma, mode="reflect")
    return noise


def build_anatomy(
    rng: np.random.Generator,
    *,
    n_lesions: int | None = None,
    max_lesions: int = 4,
    small_lesion_fraction: float = 0.5,
    template: Template | None = None,
) -> Anatomy:
    """Draw one subject's anatomy: lesions, deformation, head layers and neck/face.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_lesions, max_lesions, small_lesion_fraction
        Passed to :func:`~stroke_lesion_app.synthetic.lesions.draw_lesions`.
    template : Template, optional

    Returns
    -------
    Anatomy
    """
    template = template or load_template()
    lesions = draw_lesions(
        rng, n_lesions=n_lesions, max_lesions=max_lesions,
        small_lesion_fraction=small_lesion_fraction, template=template,
    )
    t1 = template.t1 * (1.0 - lesions.soft) + lesions.soft * lesions.value

    displacement = _lattice_noise(rng, 20.0 / _LATTICE, 3)
    amplitude = rng.uniform(1.5, 4.0)
    displacement *= amplitude / float(np.sqrt((displacement**2).sum(axis=0)).max())

    thickness = _lattice_noise(rng, 12.0 / _LATTICE)[0]
    thickness = np.exp(0.18 * thickness / thickness.std())
    grid = np.stack(np.meshgrid(*[np.arange(s) * (HEAD_SPACING / _LATTICE) for s in HEAD_SHAPE],
                                indexing="ij"))
    factor = ndi.map_coordinates(thickness, grid.reshape(3, -1), order=1, mode="nearest")
    distance = head_distance() / np.clip(factor.reshape(HEAD_SHAPE), 0.6, 1.6)

    texture = _lattice_noise(rng, 1.5)[0]
    texture /= texture.std()

    widths = [rng.uniform(1.5, 3.5), rng.uniform(1.5, 2.5), rng.uniform(1.5, 3.5),
              rng.uniform(1.0, 2.0), rng.uniform(3.0, 6.0), rng.uniform(1.5, 2.5)]
    levels = template.levels
    params = {
        "layer_boundaries_mm": np.cumsum(widths).round(4).tolist(),
        "layer_values": [
            levels["csf"] * rng.uniform(0.8, 1.1),  # CSF rim
            rng.uniform(0.03, 0.1),  # inner table
            rng.uniform(0.55, 0.9),  # marrow
            rng.uniform(0.03, 0.1),  # outer table
            rng.uniform(0.8, 1.2),  # scalp fat / muscle
            rng.uniform(0.4, 0.6),  # skin
            0.0,  # air
        ],
        "cord_value": rng.uniform(0.8, 0.95),
        "neck": {"y": rng.uniform(-30, -15), "radii": [rng.uniform(45, 55), rng.uniform(45, 55)],
                 "top": rng.uniform(-50, -35)},
        "face": {"centre": [0.0, rng.uniform(50, 60), rng.uniform(-50, -40)],
                 "radii": [rng.uniform(45, 55), rng.uniform(38, 48), rng.uniform(35, 45)]},
        "eyes": {"centre": [rng.uniform(30, 34), rng.uniform(56, 62), rng.uniform(-40, -34)],
                 "radius": rng.uniform(10, 12)},
    }
    return Anatomy(
        lesions=lesions, t1=t1.astype(np.float32), displacement=displacement,
        max_displacement_mm=float(amplitude), distance=distance.astype(np.float32),
        texture=texture, params=params,
    )


def _rotation(degrees) -> np.ndarray:
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _directions(orientation: str) -> np.ndarray:
    """3x3 matrix whose column i is the RAS unit vector storage axis i points to."""
    if len(orientation) != 3 or sorted(orientation.replace("L", "R").replace("P", "A")
                                       .replace("I", "S")) != ["A", "R", "S"]:
        raise ValueError(
            f"orientation {orientation!r} is not a 3-letter axis code such as 'RAS' or 'LIA'")
    vectors = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0),
               "S": (0, 0, 1), "I": (0, 0, -1)}
    return np.array([vectors[c] for c in orientation], dtype=float).T


def _box_corners(box) -> np.ndarray:
    return np.array([[x, y, z, 1.0] for x in box[0] for y in box[1] for z in box[2]]).T


def draw_acquisition(
    rng: np.random.Generator,
    *,
    voxel_size=(1.0, 1.0, 1.0),
    orientation: str = "RAS",
    dtype: str | None = None,
    fov_crop: str | None = None,
) -> Acquisition:
    """Draw the pose, grid and image-formation parameters of one scan.

    Parameters
    ----------
    rng : numpy.random.Generator
    voxel_size : sequence of 3 float
        mm per storage axis.
    orientation : str
        Storage axis codes (nibabel convention), e.g. ``"RAS"``, ``"LPS"``, ``"LIA"``.
    dtype : str, optional
        ``"int16"`` or ``"float32"``; default: int16 with probability 0.6.
    fov_crop : str, optional
        ``"none"``, ``"top"`` or ``"neck"``; default: none 70 %, top 15 %, neck 15 %.

    Returns
    -------
    Acquisition
    """
    zooms = np.asarray(voxel_size, dtype=float)
    if zooms.shape != (3,) or np.any(zooms <= 0):
        raise ValueError(f"voxel_size {tuple(voxel_size)} must be three positive sizes in mm")
    directions = _directions(orientation)
    angles = rng.uniform(-20, 20, 3)
    scales = rng.uniform(0.9, 1.1, 3)
    shift = rng.uniform(-15, 15, 3)
    centre = np.array([0.0, -18.0, 10.0])
    pose = np.eye(4)
    pose[:3, :3] = _rotation(angles) @ np.diag(scales)
    pose[:3, 3] = shift - pose[:3, :3] @ centre
    dtype = dtype or ("int16" if rng.random() < 0.6 else "float32")
    if fov_crop is None:
        fov_crop = str(rng.choice(FOV_CROPS, p=[0.7, 0.15, 0.15]))
    if dtype not in DTYPES or fov_crop not in FOV_CROPS:
        raise ValueError(f"dtype {dtype!r} / fov_crop {fov_crop!r} not in {DTYPES} / {FOV_CROPS}")

    # field of view: the head box, at most _MAX_FOV mm per axis, never less than the brain box
    wanted = directions.T @ (pose @ _box_corners(_HEAD_BOX))[:3]
    needed = directions.T @ (pose @ _box_corners(_BRAIN_BOX))[:3]
    low, high = wanted.min(axis=1), wanted.max(axis=1)
    need_low, need_high = needed.min(axis=1), needed.max(axis=1)
    for a in range(3):
        excess = (high[a] - low[a]) - max(_MAX_FOV, need_high[a] - need_low[a])
        if excess > 0:  # trim both ends evenly, but never into the brain box
            slack_low, slack_high = need_low[a] - low[a], high[a] - need_high[a]
            cut_low = min(max(excess / 2, excess - slack_high), slack_low)
            low[a] += cut_low
            high[a] -= excess - cut_low
    margin = rng.uniform(2.0, 10.0, 3)
    low -= margin
    high += margin

    if fov_crop != "none":  # cut along the storage axis closest to the head's superior axis
        superior = pose[:3, :3] @ np.array([0.0, 0.0, 1.0])
        axis = int(np.argmax(np.abs(directions.T @ superior)))
        sign = np.sign(directions[:, axis] @ superior)
        z_cut = rng.uniform(70, 92) if fov_crop == "top" else rng.uniform(-78, -62)
        plane = directions[:, axis] @ (pose @ np.array([0.0, -18.0, z_cut, 1.0]))[:3]
        if (fov_crop == "top") == (sign > 0):
            high[axis] = min(high[axis], plane)
        else:
            low[axis] = max(low[axis], plane)

    shape = tuple(int(n) for n in np.floor((high - low) / zooms).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = directions * zooms
    affine[:3, 3] = directions @ low
    params = {
        "rotation_deg": angles.round(6).tolist(),
        "scaling": scales.round(6).tolist(),
        "translation_mm": shift.round(6).tolist(),
        "gamma": float(math.exp(rng.uniform(math.log(0.8), math.log(1.25)))),
        "bias_coefficients": _bias_coefficients(rng).round(6).tolist(),
        "noise_sigma": float(rng.uniform(0.01, 0.04)),
        "scale": float(rng.uniform(400, 2500) if dtype == "int16" else rng.uniform(50, 1500)),
    }
    return Acquisition(
        template_to_native=pose, affine=affine, shape=shape, voxel_size=tuple(zooms.tolist()),
        orientation=orientation, dtype=dtype, fov_crop=fov_crop, params=params,
    )


def _bias_coefficients(rng: np.random.Generator) -> np.ndarray:
    """Degree-2 cosine-series coefficients (3, 3, 3) of log(bias); the constant term is 0."""
    coefficients = rng.normal(0.0, 0.08, (3, 3, 3))
    coefficients[0, 0, 0] = 0.0
    return coefficients


def _head_intensity(d, x, anatomy: Anatomy, edge: float):
    """Intensity (WM = 1) outside the brain at template points ``x`` (3, n) at distance ``d``."""
    params = anatomy.params
    bounds = params["layer_boundaries_mm"]
    values = params["layer_values"]
    out = np.full(d.shape, values[0], dtype=np.float32)
    for boundary, before, after in zip(bounds, values[:-1], values[1:], strict=True):
        out += (after - before) * _sigmoid((d - boundary) / edge)
    outer = bounds[3]  # outer table of the skull
    sel = np.flatnonzero((d > outer - 2 * edge) & (x[2] < 10.0))
    if sel.size:
        px, py, pz = x[0, sel], x[1, sel], x[2, sel]
        beyond = _sigmoid((d[sel] - outer) / edge)
        neck, face, eyes = params["neck"], params["face"], params["eyes"]
        rho = np.hypot(px / neck["radii"][0], (py - neck["y"]) / neck["radii"][1])
        w_neck = _sigmoid((1 - rho) * min(neck["radii"]) / 1.5) * _sigmoid((neck["top"] - pz) / 4)
        rho = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in
                          zip((px, py, pz), face["centre"], face["radii"], strict=True)))
        w_face = _sigmoid((1 - rho) * min(face["radii"]) / 1.5)
        blob = np.maximum(w_neck, w_face) * beyond
        lattice = (x[:, sel] - HEAD_ORIGIN[:, None]) / _LATTICE
        tissue = 0.5 + 0.5 * _sigmoid(2.0 * ndi.map_coordinates(
            anatomy.texture, lattice, order=1, mode="nearest"))
        value = (1 - blob) * out[sel] + blob * tissue
        ex, ey, ez = eyes["centre"]
        eye_r = np.sqrt((np.abs(px) - ex) ** 2 + (py - ey) ** 2 + (pz - ez) ** 2)
        w_eye = _sigmoid((eyes["radius"] - eye_r) / edge) * beyond
        value = (1 - w_eye) * value + w_eye * 0.2
        airway = np.hypot(px, py - (neck["y"] + 15.0))
        in_airway = _sigmoid((7.0 - airway) / edge) * _sigmoid((neck["top"] - 10 - pz) / 3)
        value *= 1 - in_airway * beyond
        out[sel] = value
    return out


def _bias_basis(n: int) -> np.ndarray:
    t = np.arange(n) / max(n - 1, 1)
    return np.stack([np.cos(np.pi * k * t) for k in range(3)], axis=1).astype(np.float32)


def _coarse_displacement(anatomy: Anatomy, vox_to_template, shape, stride: int) -> np.ndarray:
    """u (mm) at native voxels whose indices are multiples of ``stride``; (3, c0, c1, c2)."""
    grids = np.meshgrid(*[np.arange((n - 1) // stride + 2, dtype=np.float32) * stride
                          for n in shape], indexing="ij")
    y = np.stack([(m[0] * grids[0] + m[1] * grids[1] + m[2] * grids[2] + m[3]).ravel()
                  for m in vox_to_template])
    lattice = (y - HEAD_ORIGIN[:, None].astype(np.float32)) / _LATTICE
    return np.stack([
        ndi.map_coordinates(anatomy.displacement[c], lattice, order=1, mode="nearest")
        .reshape(grids[0].shape) for c in range(3)
    ])


def _upsample(coarse: np.ndarray, stride: int, start: int, stop: int, shape) -> np.ndarray:
    """Trilinear upsampling of ``coarse`` to native rows ``start:stop`` (separable, exact grid)."""
    out = coarse
    for axis, positions in enumerate((np.arange(start, stop), np.arange(shape[1]),
                                      np.arange(shape[2]))):
        if stride == 1:
            out = np.take(out, positions, axis=axis)
            continue
        low = positions // stride
        weight = ((positions - low * stride) / stride).astype(np.float32)
        weight = weight.reshape([-1 if a == axis else 1 for a in range(3)])
        before = np.take(out, low, axis=axis)
        out = before + (np.take(out, low + 1, axis=axis) - before) * weight
    return out


def render_scan(
    anatomy: Anatomy,
    acquisition: Acquisition,
    rng: np.random.Generator,
    *,
    template: Template | None = None,
) -> SyntheticScan:
    """Render one native T1w image with its native lesion and brain masks.

    Parameters
    ----------
    anatomy : Anatomy
    acquisition : Acquisition
    rng : numpy.random.Generator
        Used for the noise only.
    template : Template, optional

    Returns
    -------
    SyntheticScan
        Arrays of shape ``acquisition.shape`` in the stored orientation.
    """
    template = template or load_template()
    shape = acquisition.shape
    min_zoom = float(min(acquisition.voxel_size))
    factor = int(np.clip(math.floor(min_zoom + 1e-6), 1, 4))
    t1_field, brain_field, lesion_field = anatomy.working_fields(factor, template)
    work_origin = (TEMPLATE_ORIGIN + (factor - 1) / 2.0)[:, None]
    vox_to_template = (acquisition.native_to_template @ acquisition.affine)[:3].astype(np.float32)
    edge = 0.35 * max(1.0, min_zoom)
    params = acquisition.params
    coefficients = np.asarray(params["bias_coefficients"], dtype=np.float32)
    basis = [_bias_basis(n) for n in shape]
    gamma, sigma, scale = params["gamma"], params["noise_sigma"], params["scale"]
    cord_value = anatomy.params["cord_value"]
    # partial-volume brain reaches ~factor mm beyond the 1 mm mask; d is scaled by 0.6-1.6
    near_limit = 2.0 + 2.0 * factor

    image = np.empty(shape, dtype=np.float32)
    lesion_mask = np.zeros(shape, dtype=np.uint8)
    brain_mask = np.zeros(shape, dtype=np.uint8)
    lesion_points = []
    step = max(1, _CHUNK // (shape[1] * shape[2]))
    j = np.arange(shape[1], dtype=np.float32)[None, :, None]
    k = np.arange(shape[2], dtype=np.float32)[None, None, :]
    stride = max(1, round(4.0 / min_zoom))  # u is sampled every ~4 mm, then trilinear
    coarse_u = _coarse_displacement(anatomy, vox_to_template, shape, stride)
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        i = np.arange(start, stop, dtype=np.float32)[:, None, None]
        x = np.stack([
            (m[0] * i + m[1] * j + m[2] * k + m[3]
             + _upsample(coarse_u[c], stride, start, stop, shape)).ravel()
            for c, m in enumerate(vox_to_template)
        ])
        head_index = (x - HEAD_ORIGIN[:, None].astype(np.float32)) / HEAD_SPACING
        d = ndi.map_coordinates(anatomy.distance, head_index, order=1, mode="nearest")
        del head_index
        value = _head_intensity(d, x, anatomy, edge)
        near = np.flatnonzero(d < near_limit)
        if near.size:
            work_index = (x[:, near] - work_origin.astype(np.float32)) / factor
            t1v, bv, lv = (ndi.map_coordinates(f, work_index, order=1, mode="constant", cval=0.0)
                           for f in (t1_field, brain_field, lesion_field))
            cw = np.zeros_like(bv)
            low = np.flatnonzero(x[2, near] < CORD_TOP + 2.0)
            if low.size:
                cw[low] = np.minimum(cord_weight(*x[:, near[low]]), 1.0 - bv[low])
            value[near] = t1v + cw * cord_value + (1.0 - bv - cw) * value[near]
            chunk_brain = np.zeros(d.shape, dtype=np.uint8)
            chunk_brain[near] = bv >= 0.5
            brain_mask[start:stop] = chunk_brain.reshape(stop - start, *shape[1:])
            in_lesion = lv >= 0.5
            if in_lesion.any():
                chunk_lesion = np.zeros(d.shape, dtype=np.uint8)
                chunk_lesion[near[in_lesion]] = 1
                lesion_mask[start:stop] = chunk_lesion.reshape(stop - start, *shape[1:])
                lesion_points.append(x[:, near[in_lesion]].T)
        value = np.maximum(value, 0.0).reshape(stop - start, *shape[1:]) ** gamma
        partial = np.einsum("abc,ia->ibc", coefficients, basis[0][start:stop])
        partial = np.einsum("ibc,jb->ijc", partial, basis[1])
        value *= np.exp(partial @ basis[2].T)
        noise = rng.standard_normal((2, *value.shape), dtype=np.float32) * sigma
        image[start:stop] = np.sqrt((value + noise[0]) ** 2 + noise[1] ** 2) * scale

    if acquisition.dtype == "int16":
        t1w = np.clip(np.rint(image), 0, 32767).astype(np.int16)
    else:
        t1w = image
    lesion_voxels = {lesion.id: 0 for lesion in anatomy.lesions.lesions}
    if lesion_points:
        tree, labels = anatomy.lesion_tree()
        _, nearest = tree.query(np.concatenate(lesion_points))
        for label, count in zip(*np.unique(labels[nearest], return_counts=True), strict=True):
            lesion_voxels[int(label)] = int(count)
    return SyntheticScan(
        t1w=t1w, affine=acquisition.affine.copy(), lesion_mask=lesion_mask, brain_mask=brain_mask,
        lesion_voxels=lesion_voxels, acquisition=acquisition,
    )


def to_nifti(array: np.ndarray, affine: np.ndarray, *, code: int = 1) -> nib.Nifti1Image:
    """NIfTI-1 image with both qform and sform set to ``affine`` (``code`` 1 scanner, 4 MNI)."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    img.header.set_xyzt_units("mm")
    if array.dtype == np.int16 or array.dtype == np.uint8:
        img.header.set_slope_inter(1.0, 0.0)
    return img
