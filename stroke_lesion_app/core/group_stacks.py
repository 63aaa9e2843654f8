"""Group-space lesion stacks for lesion-symptom mapping: 4D stacks, flipping, overlap.

Every image written here lies on one fixed grid per template space (:data:`GROUP_GRIDS`) and
carries a NIfTI header built from that grid by :func:`grid_header`: the grid's shape, its
affine as both qform and sform (code 4, MNI152), 1 mm zooms and mm units. Two images of one
space therefore have byte-identical headers apart from the data type and the number of
volumes: LESYMAP refuses lesion images whose headers differ even slightly.

Shapes: a 3D map has ``grid.shape`` (197×233×189 for MNI152NLin2009aSym, 182×218×182 for
MNI152NLin6Asym, 1 mm voxels). A stack has shape ``(*grid.shape, n)`` with one volume per
image. Stacks are written volume by volume into the gzip stream (:class:`StackWriter`), so a
cohort never needs more memory than one volume and the count map.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import nibabel as nib
import numpy as np
from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

from stroke_lesion_app.core import bids as bids_core
from stroke_lesion_app.core.fileio import atomic_path
from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE

__all__ = ["GROUP_GRIDS", "MNI_CODE", "MaskStacks", "StackVolume", "StackWriter", "TemplateGrid",
           "UnreadableImage", "check_volumes", "effective_min_overlap", "grid_header",
           "grid_transform", "image_label", "lesion_is_right", "min_overlap_mask", "mirror_x",
           "read_on_grid", "write_map", "write_mask_stacks", "write_probability_stack"]

#: NIfTI ``qform_code``/``sform_code`` of every group image: 4, coordinates in MNI152 space.
MNI_CODE = 4
#: Largest difference (mm) between an image's affine and the grid's that counts as the grid.
GRID_TOLERANCE = 1e-3
#: Every volume of a stack is written at this gzip level (nibabel's default for ``.gz``).
_COMPRESSLEVEL = 1


@dataclass(frozen=True)
class TemplateGrid:
    """The 1 mm voxel grid of a template space.

    Attributes
    ----------
    space : str
        TemplateFlow name (``MNI152NLin2009aSym``, ``MNI152NLin6Asym``).
    shape : tuple of int
        Voxels along i, j, k.
    affine : numpy.ndarray
        4×4 voxel-to-world (mm) matrix, axis-aligned.
    reference : str
        ``SpatialReference`` (TemplateFlow address of the template's 1 mm T1w).
    symmetric : bool
        Whether the template itself is symmetric about x = 0 mm (MNI152NLin2009aSym is;
        MNI152NLin6Asym is not: a mirrored lesion lands on anatomy that is only close to
        homologous).
    """

    space: str
    shape: tuple[int, int, int]
    affine: np.ndarray = field(compare=False)
    reference: str
    symmetric: bool

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel sizes (mm) along i, j, k."""
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


#: The grids of the group spaces. MNI152NLin6Asym is FSL's ``MNI152_T1_1mm`` grid (LAS
#: storage, origin (90, -126, -72) mm); masks stored on the same voxel centres in another axis
#: order (TemplateFlow's RAS ``res-01`` copy) are reordered onto it exactly
#: (:func:`grid_transform`).
GROUP_GRIDS: dict[str, TemplateGrid] = {
    "MNI152NLin2009aSym": TemplateGrid(
        "MNI152NLin2009aSym", tuple(TEMPLATE_SHAPE), np.array(TEMPLATE_AFFINE, dtype=float),
        bids_core.TEMPLATE_REFERENCE_URL, True),
    "MNI152NLin6Asym": TemplateGrid(
        "MNI152NLin6Asym", (182, 218, 182),
        np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]]),
        "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin6Asym/"
        "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz", False),
}


class UnreadableImage(ValueError):
    """An image whose data cannot be read (a torn gzip, a truncated file)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


@dataclass
class StackVolume:
    """One image's lesion map in one group space: a volume of a stack.

    Attributes
    ----------
    participant_id, session_id, run : str
        Identity of the image (``n/a`` where the entity is absent).
    path : Path
        Absolute path of the group-space map (``.nii.gz``).
    lesion_source : str
        ``model``, ``edited`` or ``manual``.
    branch : str
        Normalisation that put the lesion on the grid (``enantiomorphic``, ``cost-function``,
        ``syn``; ``affine``: the registration of the segmentation).
    transforms : list of str
        Transform files (URIs) from the map's sidecar, in ANTs order.
    interpolation : str
        How the map was resampled onto the grid.
    reference : str or None
        ``SpatialReference`` of the map's sidecar.
    """

    participant_id: str
    session_id: str
    run: str
    path: Path
    lesion_source: str
    branch: str
    transforms: list[str] = field(default_factory=list)
    interpolation: str = "n/a"
    reference: str | None = None

    @property
    def label(self) -> str:
        """``sub-01``, ``sub-01 ses-2 run-1``: the image in one line."""
        return image_label(self.participant_id, self.session_id, self.run)


def image_label(participant_id: str, session_id: str = "n/a", run: str = "n/a") -> str:
    """An image in one line, for tables and logs.

    >>> image_label("sub-01"), image_label("sub-01", "ses-2", "1")
    ('sub-01', 'sub-01 ses-2 run-1')
    """
    parts = [participant_id]
    parts += [session_id] if session_id != "n/a" else []
    parts += [f"run-{run}"] if run != "n/a" else []
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Header and grid checks
# --------------------------------------------------------------------------------------------
def grid_header(grid: TemplateGrid, dtype, volumes: int | None = None) -> nib.Nifti1Header:
    """The NIfTI-1 header of every group image on ``grid``.

    Parameters
    ----------
    grid : TemplateGrid
        Shape and affine (set as qform and sform, both with code :data:`MNI_CODE`).
    dtype : numpy dtype
        ``uint8`` for masks, ``float32`` for probabilities, ``int16`` for counts.
    volumes : int, optional
        Number of volumes of a stack (4D header); ``None``: a 3D map.

    Returns
    -------
    nibabel.Nifti1Header
        Zooms 1 mm (and 1 along the 4th axis), xyz units mm, no scaling (slope 1, inter 0),
        data at byte 352 (no extensions).
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(grid.shape if volumes is None else (*grid.shape, int(volumes)))
    header.set_qform(grid.affine, code=MNI_CODE)
    header.set_sform(grid.affine, code=MNI_CODE)
    header.set_zooms(grid.zooms if volumes is None else (*grid.zooms, 1.0))
    header.set_xyzt_units(xyz="mm")
    header.set_slope_inter(1.0, 0.0)
    header["descrip"] = b"stroke-lesion-app group map"
    header.set_data_offset(352)
    return header


def grid_transform(image: nib.Nifti1Image, grid: TemplateGrid
                   ) -> tuple[np.ndarray | None, str | None]:
    """How ``image``'s voxels map onto ``grid`` without interpolation.

    Returns
    -------
    (ornt, reason)
        ``(None, None)``: the image is on the grid (shape equal, affine within
        :data:`GRID_TOLERANCE` mm); ``(ornt, None)``: the same voxel centres stored in another
        axis order or direction, reordered exactly by
        :func:`nibabel.orientations.apply_orientation` with ``ornt``; ``(None, reason)``:
        another grid (the reason in one line).
    """
    shape = tuple(image.shape)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] != 1):
        return None, f"not a 3D image (shape {shape})"
    shape = shape[:3]
    affine = image.affine
    if shape == grid.shape and np.allclose(affine, grid.affine, atol=GRID_TOLERANCE):
        return None, None
    ornt = ornt_transform(io_orientation(affine), io_orientation(grid.affine))
    moved_shape = tuple(int(shape[axis]) for axis in np.argsort(ornt[:, 0]))
    moved_affine = affine @ inv_ornt_aff(ornt, shape)
    if moved_shape == grid.shape and np.allclose(moved_affine, grid.affine,
                                                 atol=GRID_TOLERANCE):
        return ornt, None
    origin = ", ".join(f"{value:g}" for value in np.round(affine[:3, 3], 3))
    return None, (f"not on the {grid.space} 1 mm grid (shape {shape}, origin ({origin}) mm; "
                  f"expected shape {grid.shape}); re-run the participant level")


def read_on_grid(path: Path, grid: TemplateGrid, ornt: np.ndarray | None) -> np.ndarray:
    """The data of a 3D image checked by :func:`grid_transform`, in ``grid``'s voxel order.

    Raises
    ------
    UnreadableImage
        The file cannot be read whole.
    """
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, ValueError, zlib.error,
            nib.filebasedimages.ImageFileError) as error:
        raise UnreadableImage(path, f"unreadable ({type(error).__name__}: {error}); re-run the "
                                    "participant level") from None
    data = data.reshape(data.shape[:3])
    if ornt is not None:
        data = nib.orientations.apply_orientation(data, ornt)
    if data.shape != grid.shape:
        raise UnreadableImage(path, f"shape {data.shape} after reordering, expected "
                                    f"{grid.shape}")
    return data


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
class StackWriter:
    """Write a NIfTI-1 ``.nii.gz`` one volume at a time, atomically.

    The header is written first; each :meth:`append` adds one 3D volume (Fortran order, so
    that volume ``t`` is the ``t``-th block). Leaving the context checks that exactly the
    header's number of volumes came, then renames the file into place; on any error nothing
    appears under ``path``. The gzip stream has no time stamp, so equal input gives equal
    bytes.

    Examples
    --------
    >>> import tempfile
    >>> grid = TemplateGrid("toy", (2, 2, 2), np.eye(4), "", True)
    >>> path = Path(tempfile.mkdtemp()) / "stack.nii.gz"
    >>> with StackWriter(path, grid_header(grid, np.uint8, volumes=2)) as stack:
    ...     stack.append(np.zeros((2, 2, 2))); stack.append(np.ones((2, 2, 2)))
    >>> float(nib.load(path).get_fdata()[..., 1].sum())
    8.0
    """

    def __init__(self, path: Path | str, header: nib.Nifti1Header):
        self.path = Path(path)
        self.header = header
        shape = header.get_data_shape()
        self.shape = tuple(shape[:3])
        self.expected = int(shape[3]) if len(shape) > 3 else 1
        self.dtype = header.get_data_dtype()
        self.count = 0
        self._exits = contextlib.ExitStack()
        self._stream = None

    def __enter__(self) -> Self:
        tmp = self._exits.enter_context(atomic_path(self.path))
        raw = self._exits.enter_context(open(tmp, "wb"))
        self._stream = self._exits.enter_context(
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=_COMPRESSLEVEL,
                          mtime=0))
        self.header.write_to(self._stream)  # 348 bytes + the 4-byte "no extension" flag
        return self

    def append(self, volume: np.ndarray) -> None:
        """Add the next volume (shape of the header's first three dimensions)."""
        volume = np.asarray(volume)
        if volume.shape != self.shape:
            raise ValueError(f"{self.path.name}: volume of shape {volume.shape}, expected "
                             f"{self.shape}")
        if self.count >= self.expected:
            raise ValueError(f"{self.path.name}: more than {self.expected} volume(s)")
        self._stream.write(np.asarray(volume, dtype=self.dtype).tobytes(order="F"))
        self.count += 1

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None and self.count != self.expected:
            kind = ValueError
            error = ValueError(f"{self.path.name}: {self.count} volume(s) written, the header "
                               f"says {self.expected}")
            traceback = None
            self._exits.__exit__(kind, error, traceback)
            raise error
        return bool(self._exits.__exit__(kind, error, traceback))


def write_map(path: Path | str, data: np.ndarray, grid: TemplateGrid, dtype) -> Path:
    """Write a 3D map (shape ``grid.shape``) with the grid's header (:func:`grid_header`)."""
    with StackWriter(path, grid_header(grid, dtype)) as writer:
        writer.append(data)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Side, mirror, overlap
# --------------------------------------------------------------------------------------------
def lesion_is_right(mask: np.ndarray, grid: TemplateGrid) -> bool:
    """Whether most lesion voxels of ``mask`` (on ``grid``) lie at world x > 0 mm (right).

    Voxels on the plane x = 0 count for neither side; a tie (or no lesion) is not right.
    """
    index = np.nonzero(mask)
    if not index[0].size:
        return False
    x = (grid.affine[0, :3] @ np.vstack(index).astype(float)) + grid.affine[0, 3]
    return int((x > 0).sum()) > int((x < 0).sum())


def mirror_axis(affine: np.ndarray, shape: tuple[int, ...], name: str = "grid"
                ) -> tuple[int, np.ndarray, np.ndarray]:
    """For x → −x on the grid (``affine``, ``shape``): the voxel axis along world x, and for
    each output index along it the source index (nearest voxel centre) and whether that source
    lies on the grid.

    Raises
    ------
    ValueError
        The grid's axes are not aligned with the world axes.
    """
    rotation = np.asarray(affine, dtype=float)[:3, :3]
    axis = int(np.argmax(np.abs(rotation[0])))
    if np.count_nonzero(np.abs(rotation[0]) > 1e-6) != 1 or \
            np.count_nonzero(np.abs(rotation[:, axis]) > 1e-6) != 1:
        raise ValueError(f"{name}: grid not aligned with the world axes; cannot mirror "
                         "about x = 0")
    scale, offset = rotation[0, axis], float(affine[0, 3])
    index = np.arange(shape[axis])
    source = np.rint((-(scale * index + offset) - offset) / scale).astype(int)
    inside = (source >= 0) & (source < shape[axis])
    return axis, source, inside


def is_exact_mirror(source: np.ndarray, inside: np.ndarray) -> bool:
    """Whether a :func:`mirror_axis` mapping is an exact reversal of the axis (voxel centres
    symmetric about x = 0)."""
    return bool(inside.all()) and np.array_equal(source, source[0] - np.arange(source.size))


def mirror_x(volume: np.ndarray, grid: TemplateGrid) -> np.ndarray:
    """``volume`` mirrored about the plane world x = 0 mm, on the same grid (nearest).

    On a grid whose voxel centres are symmetric about x = 0 (MNI152NLin2009aSym: voxel
    ``i`` ↔ ``196 − i``) this is an exact reversal of the x axis. Otherwise (MNI152NLin6Asym,
    x from −91 to 90 mm) each output voxel takes the voxel nearest to its mirror point;
    voxels whose mirror point is off the grid are 0.

    >>> grid = GROUP_GRIDS["MNI152NLin2009aSym"]
    >>> volume = np.zeros(grid.shape, np.uint8); volume[150, 10, 10] = 1
    >>> int(np.argwhere(mirror_x(volume, grid))[0][0])
    46
    """
    axis, source, inside = mirror_axis(grid.affine, grid.shape, grid.space)
    if is_exact_mirror(source, inside):
        return np.flip(volume, axis=axis)
    moved = np.zeros_like(volume)
    target = [slice(None)] * volume.ndim
    target[axis] = np.flatnonzero(inside)
    moved[tuple(target)] = np.take(volume, source[inside], axis=axis)
    return moved


def effective_min_overlap(requested: int, n_images: int) -> int:
    """The minimum overlap used: ``requested``, but never more than the number of images.

    >>> effective_min_overlap(5, 3), effective_min_overlap(5, 40)
    (3, 5)
    """
    if requested < 1:
        raise ValueError(f"minimum overlap {requested}: give at least 1 image")
    return max(1, min(int(requested), int(n_images)))


def min_overlap_mask(count: np.ndarray, minimum: int) -> np.ndarray:
    """Voxels lesioned in at least ``minimum`` images (uint8 0/1, shape of ``count``).

    >>> min_overlap_mask(np.array([0, 1, 2, 3]), 2).tolist()
    [0, 0, 1, 1]
    """
    return (np.asarray(count) >= minimum).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------
@dataclass
class MaskStacks:
    """Result of :func:`write_mask_stacks`.

    Attributes
    ----------
    volumes : list of StackVolume
        The images stacked, in stack order.
    count : numpy.ndarray
        int32, ``grid.shape``: number of images lesioned at each voxel.
    flipped : list of bool
        Per volume, whether the flipped stack holds it mirrored (empty without a flipped stack).
    excluded : list of (StackVolume, str)
        Images left out while reading, with the reason.
    """

    volumes: list[StackVolume]
    count: np.ndarray
    flipped: list[bool]
    excluded: list[tuple[StackVolume, str]]


def _binary(data: np.ndarray) -> np.ndarray:
    return (np.nan_to_num(np.asarray(data, dtype=np.float32)) > 0.5).astype(np.uint8)


def write_mask_stacks(volumes: Sequence[tuple[StackVolume, np.ndarray | None]],
                      grid: TemplateGrid, stack_path: Path,
                      flipped_path: Path | None = None) -> MaskStacks:
    """Write the 4D uint8 stack of binary masks (and its flipped-to-left twin).

    Parameters
    ----------
    volumes : sequence of (StackVolume, ornt)
        Images already checked by :func:`grid_transform`, in stack order.
    grid : TemplateGrid
        The space's grid; both stacks get the same header (:func:`grid_header`).
    stack_path : Path
        ``.nii.gz``, shape ``(*grid.shape, n)``, 0/1 (a map's values > 0.5 are lesion).
    flipped_path : Path, optional
        The flipped stack: volumes whose lesion lies mostly at x > 0 mm are mirrored about
        x = 0 (:func:`mirror_x`), so that every lesion lies mostly in the left hemisphere.

    An image that turns out unreadable is left out (listed in ``excluded``) and the stacks
    are written again without it.
    """
    todo = list(volumes)
    excluded: list[tuple[StackVolume, str]] = []
    while todo:
        try:
            return _write_mask_stacks(todo, grid, stack_path, flipped_path, excluded)
        except UnreadableImage as error:
            bad = next(item for item in todo if item[0].path == error.path)
            excluded.append((bad[0], error.reason))
            todo.remove(bad)
    return MaskStacks([], np.zeros(grid.shape, np.int32), [], excluded)


def _write_mask_stacks(volumes, grid, stack_path, flipped_path, excluded) -> MaskStacks:
    header = grid_header(grid, np.uint8, volumes=len(volumes))
    count = np.zeros(grid.shape, np.int32)
    flipped: list[bool] = []
    with contextlib.ExitStack() as writers:
        stack = writers.enter_context(StackWriter(stack_path, header))
        mirrored = (writers.enter_context(StackWriter(flipped_path, header))
                    if flipped_path is not None else None)
        for volume, ornt in volumes:
            mask = _binary(read_on_grid(volume.path, grid, ornt))
            stack.append(mask)
            count += mask
            if mirrored is not None:
                right = lesion_is_right(mask, grid)
                mirrored.append(mirror_x(mask, grid) if right else mask)
                flipped.append(right)
    return MaskStacks([volume for volume, _ in volumes], count, flipped, list(excluded))


def write_probability_stack(volumes: Sequence[tuple[StackVolume, np.ndarray | None]],
                            grid: TemplateGrid, path: Path
                            ) -> tuple[list[StackVolume], list[tuple[StackVolume, str]]]:
    """Write the 4D float32 stack of lesion probabilities (0-1, NaN → 0), shape
    ``(*grid.shape, n)``; unreadable maps are left out as in :func:`write_mask_stacks`.

    Returns the volumes stacked and the ones left out (with the reason).
    """
    todo = list(volumes)
    excluded: list[tuple[StackVolume, str]] = []
    while todo:
        try:
            with StackWriter(path, grid_header(grid, np.float32, volumes=len(todo))) as stack:
                for volume, ornt in todo:
                    data = np.nan_to_num(np.asarray(read_on_grid(volume.path, grid, ornt),
                                                    dtype=np.float32))
                    stack.append(np.clip(data, 0.0, 1.0))
            return [volume for volume, _ in todo], excluded
        except UnreadableImage as error:
            bad = next(item for item in todo if item[0].path == error.path)
            excluded.append((bad[0], error.reason))
            todo.remove(bad)
    return [], excluded


def check_volumes(volumes: Iterable[StackVolume], grid: TemplateGrid
                  ) -> tuple[list[tuple[StackVolume, np.ndarray | None]],
                             list[tuple[StackVolume, str]]]:
    """Split images into those on ``grid`` (with the reordering :func:`grid_transform` found)
    and those on another grid or unreadable (with the reason). Reads headers only."""
    accepted, excluded = [], []
    for volume in volumes:
        try:
            image = nib.load(str(volume.path))
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as error:
            reason = f"unreadable ({type(error).__name__}); re-run the participant level"
            excluded.append((volume, reason))
            continue
        ornt, reason = grid_transform(image, grid)
        if reason:
            excluded.append((volume, reason))
        else:
            accepted.append((volume, ornt))
    return accepted, excluded
