"""In-process ensemble inference: average the softmax probabilities of nnU-Net v2 models.

nnU-Net's own multi-fold prediction averages *logits*. The paper's ensemble averages softmax
*probabilities*, so :class:`EnsemblePredictor` runs every member × fold of a model bundle as its
own pass, each through nnU-Net's preprocessing, sliding window (with optional mirroring TTA)
and export (resampling back, softmax, uncropping), and averages the lesion probabilities with
the manifest's weights (normalised; a member's weight is split equally over its folds).

Every network is built once, in :class:`EnsemblePredictor`'s constructor: we build it
ourselves from the plans with the trainer's ``build_network_architecture`` (our trainers are
found through :func:`stroke_lesion_app.core.nnunet_lookup.find_trainer_class`), load the
checkpoint's weights and hand it to ``manual_initialization`` of an ``nnUNetPredictor``
subclass that only batches the sliding windows (:mod:`.sliding_window`); nnU-Net itself is
never patched.

Axis conventions: the arrays this module takes and returns are in nibabel's voxel order
``(i, j, k)`` with nibabel's zooms; nnU-Net's readers (``SimpleITKIO``, ``NibabelIO``) hand the
networks the transposed array ``(k, j, i)`` and reversed spacing, so we transpose on the way in
and back on the way out. torch and nnU-Net are imported lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import BundleError, BundleMember, ModelBundle, load_bundle, validate_bundle
from .fileio import write_nifti_atomic
from .postprocess import postprocess_probability
from .sliding_window import batched_predictor_class, default_window_batch_size

__all__ = ["EnsemblePredictor", "MemberFold", "average_probabilities", "window_count",
           "window_region"]

LOGGER = logging.getLogger(__name__)

#: nnU-Net image readers whose array axes are nibabel's, reversed.
_SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO")


def average_probabilities(probabilities: Sequence[np.ndarray],
                          weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of probability maps, weights normalised to sum to 1.

    Parameters
    ----------
    probabilities : sequence of numpy.ndarray
        Maps of one shape (any), values in [0, 1].
    weights : sequence of float, optional
        One positive weight per map; equal weights by default.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the common shape (accumulated in ``float64``).

    Examples
    --------
    >>> average_probabilities([np.array([0.0, 1.0]), np.array([1.0, 1.0])], [1, 3])
    array([0.75, 1.  ], dtype=float32)
    """
    if len(probabilities) == 0:
        raise ValueError("average_probabilities needs at least one probability map")
    weights = [1.0] * len(probabilities) if weights is None else [float(w) for w in weights]
    if len(weights) != len(probabilities):
        raise ValueError(f"got {len(probabilities)} probability maps but {len(weights)} weights")
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"weights must be finite and > 0, got {weights}")
    shape = np.shape(probabilities[0])
    total = np.zeros(shape, dtype=np.float64)
    for prob, weight in zip(probabilities, weights):
        if np.shape(prob) != shape:
            raise ValueError(f"probability maps differ in shape: {shape} vs {np.shape(prob)}")
        total += weight * np.asarray(prob, dtype=np.float64)
    return (total / sum(weights)).astype(np.float32)


def _load_checkpoint(path: Path) -> dict:
    """``torch.load`` an nnU-Net checkpoint on the CPU (its sha256 was checked before)."""
    import torch

    # nnU-Net checkpoints hold more than tensors (plans, logs); the bundle's checksums are
    # verified before this is reached, as nnU-Net's own predictor loads them the same way.
    return torch.load(path, map_location="cpu", weights_only=False)


def _build_network(trainer_class: type, plans_manager, configuration_manager,
                   num_input_channels: int, num_output_channels: int):
    """The trainer's network without deep supervision, as nnU-Net's predictor builds it."""
    return trainer_class.build_network_architecture(
        plans_manager, configuration_manager, num_input_channels, num_output_channels,
        enable_deep_supervision=False,
    )


@contextlib.contextmanager
def _nnunet_output_to_log():
    """Send nnU-Net's ``print`` output to this module's logger (DEBUG) instead of stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            LOGGER.debug("nnU-Net: %s", text)


@dataclass
class MemberFold:
    """One loaded pass of the ensemble: a member's fold and its nnU-Net predictor.

    Attributes
    ----------
    member : BundleMember
    fold : int or str
    weight : float
        Share of the average before normalisation (member weight / number of its folds).
    predictor : nnunetv2.inference.predict_from_raw_data.nnUNetPredictor
    """

    member: BundleMember
    fold: Any
    weight: float
    predictor: Any

    @property
    def label(self) -> str:
        """``"<member>/fold_<N>"``."""
        return f"{self.member.name}/fold_{self.fold}"


class EnsemblePredictor:
    """Keep a bundle's networks loaded; predict lesion probabilities and masks.

    Parameters
    ----------
    bundle : ModelBundle or str or os.PathLike
        A loaded bundle, or a bundle path or name (see :func:`load_bundle`).
    device : str or torch.device
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
    tta : bool
        Mirroring test-time augmentation along the axes the checkpoints allow.
    step_size : float
        Sliding-window step as a fraction of the patch size, in (0, 1].
    num_threads : int, optional
        torch CPU threads during prediction (restored afterwards); torch's setting by default.
    folds_per_member : int, optional
        Use only the first N folds of every member (``--fast``); all by default.
    window_batch_size : int, optional
        Sliding windows per network call (:mod:`.sliding_window`); by default chosen per
        member from the device and its patch size
        (:func:`~.sliding_window.default_window_batch_size`: 2 for 64³ and 1 for 128³ on CPU,
        16 and 4 on a GPU).
    verify : bool
        Run :func:`validate_bundle` (space, files, checksums) before loading.
    expected_space : str
        Template space the inputs are in.

    Raises
    ------
    BundleError
        Invalid bundle, or checkpoints that disagree with the manifest.
    RuntimeError
        CUDA requested but unavailable.
    """

    def __init__(self, bundle: ModelBundle | str | os.PathLike, device="cpu", tta: bool = True,
                 step_size: float = 0.5, num_threads: int | None = None, *,
                 folds_per_member: int | None = None, window_batch_size: int | None = None,
                 verify: bool = True, expected_space: str = "MNI152NLin2009aSym"):
        import torch

        if not 0.0 < step_size <= 1.0:
            raise ValueError(f"step_size must lie in (0, 1], got {step_size!r}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads!r}")
        if folds_per_member is not None and folds_per_member < 1:
            raise ValueError(f"folds_per_member must be >= 1, got {folds_per_member!r}")
        if window_batch_size is not None and window_batch_size < 1:
            raise ValueError(f"window_batch_size must be >= 1, got {window_batch_size!r}")
        if not isinstance(bundle, ModelBundle):
            bundle = load_bundle(bundle)
        if verify:
            validate_bundle(bundle, expected_space=expected_space)
        self.bundle = bundle
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; "
                               f"use device='cpu'.")
        self.tta = bool(tta)
        #: Probability threshold of :meth:`postprocess` (the manifest's unless changed).
        self.threshold = float(bundle.threshold)
        self.step_size = float(step_size)
        #: Sliding windows per network call (``None``: chosen per member, see above).
        self.window_batch_size = window_batch_size
        self.num_threads = num_threads
        self.passes: list[MemberFold] = []
        with self._threads(), _nnunet_output_to_log():  # trainer lookup prints
            for member in bundle.members:
                if folds_per_member is not None:
                    member = dataclasses.replace(member, folds=member.folds[:folds_per_member])
                self.passes += self._load_member(member)
        LOGGER.info("Loaded %d network(s) of bundle %s %s on %s: %s.", len(self.passes),
                    bundle.name, bundle.version, self.device,
                    ", ".join(p.label for p in self.passes))

    # -- loading ---------------------------------------------------------------------------------
    def _load_member(self, member: BundleMember) -> list[MemberFold]:
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from stroke_lesion_app.core.nnunet_lookup import find_trainer_class

        plans = json.loads((member.folder / "plans.json").read_text())
        dataset_json = json.loads((member.folder / "dataset.json").read_text())
        plans_manager = PlansManager(plans)
        reader = plans.get("image_reader_writer", "SimpleITKIO")
        if reader not in _SUPPORTED_READERS:
            raise BundleError(f"{member.folder / 'plans.json'}: image_reader_writer {reader!r} is "
                              f"not supported (use one of {_SUPPORTED_READERS}).")
        try:
            configuration_manager = plans_manager.get_configuration(member.configuration)
        except (KeyError, RuntimeError, ValueError):
            raise BundleError(f"{member.folder / 'plans.json'}: no configuration "
                              f"{member.configuration!r}; fix 'configuration' of member "
                              f"{member.name!r} in the manifest.") from None
        label_manager = plans_manager.get_label_manager(dataset_json)
        if label_manager.has_regions:
            raise BundleError(f"{member.folder / 'dataset.json'}: region-based (sigmoid) models "
                              f"are not supported; members must be softmax models.")
        num_inputs = determine_num_input_channels(plans_manager, configuration_manager,
                                                  dataset_json)
        if num_inputs != 1:
            raise BundleError(f"{member.folder / 'dataset.json'}: {num_inputs} input channels; "
                              f"members must take one (T1w) channel.")
        trainer_class = find_trainer_class(member.trainer)

        passes = []
        for fold in member.folds:
            path = member.checkpoint_path(fold)
            checkpoint = _load_checkpoint(path)
            if checkpoint.get("trainer_name") != member.trainer:
                raise BundleError(f"{path}: trained with {checkpoint.get('trainer_name')!r}, the "
                                  f"manifest says {member.trainer!r}; fix 'trainer' of member "
                                  f"{member.name!r}.")
            trained_configuration = checkpoint.get("init_args", {}).get("configuration")
            if trained_configuration not in (None, member.configuration):
                raise BundleError(f"{path}: trained as {trained_configuration!r}, the manifest "
                                  f"says {member.configuration!r}; fix 'configuration'.")
            network = _build_network(trainer_class, plans_manager, configuration_manager,
                                     num_inputs, label_manager.num_segmentation_heads)
            network.load_state_dict(checkpoint["network_weights"])
            network = network.to(self.device).eval()
            mirror_axes = checkpoint.get("inference_allowed_mirroring_axes")
            del checkpoint
            predictor = batched_predictor_class()(
                tile_step_size=self.step_size, use_gaussian=True, use_mirroring=self.tta,
                perform_everything_on_device=self.device.type == "cuda",
                device=self.device, verbose=False, verbose_preprocessing=False,
                allow_tqdm=False,
            )
            predictor.aggregation = member.aggregation
            predictor.window_batch_size = (
                self.window_batch_size
                or default_window_batch_size(self.device.type, configuration_manager.patch_size))
            # The state dict aliases the network's own tensors: no second copy of the weights.
            predictor.manual_initialization(
                network, plans_manager, configuration_manager, [network.state_dict()],
                dataset_json, member.trainer, mirror_axes,
            )
            passes.append(MemberFold(member, fold, member.weight / len(member.folds), predictor))
        return passes

    @contextlib.contextmanager
    def _threads(self):
        import torch

        if self.num_threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    # -- prediction ------------------------------------------------------------------------------
    def member_probabilities(self, image: np.ndarray, spacing: Sequence[float],
                             region: Sequence[slice] | None = None) -> list[np.ndarray]:
        """Lesion probability of every member × fold, in :attr:`passes` order.

        Parameters
        ----------
        image : numpy.ndarray
            3-D image ``(i, j, k)`` in nibabel's voxel order, on the template grid.
        spacing : sequence of float
            Voxel sizes in mm, nibabel's zooms order.
        region : sequence of three slices, optional
            Voxel box ``(i, j, k)`` of ``image`` that holds everything worth segmenting (the
            brain box, see :func:`~.segmentation.brain_region`). The image is preprocessed
            whole (the z-score statistics are the ones the model was trained with), then
            only the box, grown to the largest size that needs no extra sliding window
            (:func:`window_region`), goes through the networks; outside it the probability
            is 0. ``None``: the whole image.

        Returns
        -------
        list of numpy.ndarray
            ``float32`` maps of ``image.shape``: the softmax probability of the foreground
            (the sum over non-background classes).
        """
        from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"image must be 3-D, got shape {image.shape}")
        if len(spacing) != 3 or any(not s > 0 for s in spacing):
            raise ValueError(f"spacing must be three positive voxel sizes, got {spacing!r}")
        if not np.isfinite(image).all():
            raise ValueError("image holds NaN or infinite values")
        # nnU-Net layout: channel first, axes and spacing reversed (SimpleITK order)
        data = np.ascontiguousarray(image.transpose(2, 1, 0)[None], dtype=np.float32)
        nnunet_spacing = [float(s) for s in reversed(spacing)]

        results = []
        preprocessed = {}
        with self._threads(), _nnunet_output_to_log():
            for one in self.passes:
                predictor = one.predictor
                # members (and folds) with the same preprocessing share one preprocessed image
                key = _preprocessing_key(predictor)
                if key not in preprocessed:
                    adapter = PreprocessAdapterFromNpy(
                        [data.copy()], None, [{"spacing": list(nnunet_spacing)}], None,
                        predictor.plans_manager, predictor.dataset_json,
                        predictor.configuration_manager, num_threads_in_multithreaded=1,
                    )
                    preprocessed[key] = next(adapter)
                case = preprocessed[key]
                logits = _predict_in_region(predictor, case, region, one.member.aggregation)
                if one.member.aggregation == "softmax":  # already probabilities (nnU-Net v1)
                    probabilities = _probabilities_to_input_grid(
                        logits, predictor, case["data_properties"])
                else:
                    _, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
                        logits, predictor.plans_manager, predictor.configuration_manager,
                        predictor.label_manager, case["data_properties"],
                        return_probabilities=True,
                    )
                foreground = np.asarray(probabilities[1:], dtype=np.float64).sum(axis=0)
                results.append(foreground.transpose(2, 1, 0).astype(np.float32))
                LOGGER.debug("Predicted %s.", one.label)
        return results

    def predict_probability(self, image: np.ndarray, spacing: Sequence[float],
                            region: Sequence[slice] | None = None) -> np.ndarray:
        """Ensemble lesion probability: the weighted mean of :meth:`member_probabilities`.

        Parameters
        ----------
        image : numpy.ndarray
            3-D image ``(i, j, k)`` in nibabel's voxel order, on the template grid.
        spacing : sequence of float
            Voxel sizes in mm, nibabel's zooms order.
        region : sequence of three slices, optional
            Brain box ``(i, j, k)``, see :meth:`member_probabilities`.

        Returns
        -------
        numpy.ndarray
            ``float32`` probability in [0, 1], shape ``image.shape``.
        """
        probabilities = self.member_probabilities(image, spacing, region)
        return average_probabilities(probabilities, [p.weight for p in self.passes])

    def postprocess(self, probability: np.ndarray) -> np.ndarray:
        """:attr:`threshold` and the manifest's small-component rule; ``uint8`` mask."""
        return postprocess_probability(probability, self.threshold,
                                       self.bundle.min_component_voxels,
                                       self.bundle.connectivity)

    def predict_file(self, in_file: str | os.PathLike, out_probseg: str | os.PathLike,
                     out_mask: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
        """Segment a NIfTI image on the template grid; write probability and mask.

        Parameters
        ----------
        in_file : path
            3-D T1w NIfTI (a 4-D image with one volume is accepted) on the bundle's grid.
        out_probseg : path
            Output ``float32`` lesion probability, input affine.
        out_mask : path, optional
            Output ``uint8`` lesion mask (threshold + small-component rule), input affine.

        Returns
        -------
        tuple
            ``(out_probseg, out_mask)`` as paths (``out_mask`` ``None`` when not asked for).
        """
        import nibabel as nib

        img = nib.load(str(in_file))
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"{in_file}: expected a 3-D image, got shape {data.shape}")
        zooms = [float(z) for z in img.header.get_zooms()[:3]]
        if not np.allclose(zooms, self.bundle.resolution_mm, atol=1e-3):
            LOGGER.warning("%s: voxel size %s mm differs from the bundle's %s mm; nnU-Net "
                           "resamples to its plan.", in_file, zooms, self.bundle.resolution_mm)
        probability = self.predict_probability(data.astype(np.float32), zooms)
        _write_like(img, probability.astype(np.float32), Path(out_probseg), np.float32)
        if out_mask is None:
            return Path(out_probseg), None
        _write_like(img, self.postprocess(probability), Path(out_mask), np.uint8)
        return Path(out_probseg), Path(out_mask)


def _preprocessing_key(predictor) -> str:
    """What nnU-Net's preprocessing of an image depends on, as a string: members whose keys
    are equal get identical preprocessed arrays (same plan configuration, intensity
    statistics, channels and axis order)."""
    plans = predictor.plans_manager.plans
    return json.dumps([
        predictor.configuration_manager.configuration,
        plans.get("transpose_forward"),
        plans.get("foreground_intensity_properties_per_channel"),
        predictor.dataset_json.get("channel_names", predictor.dataset_json.get("modality")),
    ], sort_keys=True, default=str)


def window_count(length: int, patch: int, step_size: float) -> int:
    """Sliding windows along one axis of ``length`` voxels (nnU-Net's
    ``compute_steps_for_sliding_window``: a shorter axis is padded to one window)."""
    if length <= patch:
        return 1
    return int(math.ceil((length - patch) / (patch * step_size))) + 1


def window_region(box: Sequence[tuple[int, int]], shape: Sequence[int], patch: Sequence[int],
                  step_size: float) -> tuple[slice, ...]:
    """Grow a box to the largest size that has the same sliding-window count, inside ``shape``.

    nnU-Net places ``n`` windows of size ``P`` at step ``s·P`` over any length up to
    ``P + (n - 1)·s·P`` (a shorter axis is padded up to ``P``); growing the box to that
    length (centred, shifted back inside the image) gives the networks real image context
    around the box at no extra cost.

    Parameters
    ----------
    box : sequence of (start, stop)
        Voxel box per axis, in the axis order of ``shape`` and ``patch``.
    shape : sequence of int
        The whole image's shape, voxels.
    patch : sequence of int
        The network's patch size, voxels.
    step_size : float
        Sliding-window step as a fraction of the patch size, in (0, 1].

    Returns
    -------
    tuple of slice
        One slice per axis; ``stop - start`` never exceeds the image.

    Examples
    --------
    >>> window_region([(30, 200)], [233], [128], 0.5)
    (slice(19, 211, None),)
    """
    region = []
    for (start, stop), size, length in zip(box, shape, patch):
        start, stop = max(0, int(start)), min(int(size), int(stop))
        windows = window_count(stop - start, int(length), step_size)
        target = min(int(size), int(length + (windows - 1) * length * step_size))
        grow = max(0, target - (stop - start))
        start = max(0, start - grow // 2)
        stop = min(int(size), start + max(target, stop - start))
        start = max(0, stop - max(target, stop - start))
        region.append(slice(start, stop))
    return tuple(region)


def _predict_in_region(predictor, case: dict, region: Sequence[slice] | None,
                       aggregation: str):
    """The sliding window over the preprocessed image, or over the brain box only.

    ``case`` is nnU-Net's preprocessed case (``data``: ``(channels, *spatial)`` in nnU-Net's
    axis order, cropped to the non-zero box and resampled to the plan). ``region`` is in the
    input image's ``(i, j, k)`` order; it is mapped onto the preprocessed grid, grown by
    :func:`window_region`, predicted, and pasted into a whole-grid array whose outside holds
    background (logits 0 / -30, or probabilities 1 / 0 with v1-style ``softmax`` aggregation).
    Returns a CPU tensor ``(classes, *spatial)`` on the preprocessed grid.
    """
    import torch

    data = case["data"]
    if region is None:
        return predictor.predict_logits_from_preprocessed_data(data).cpu()
    properties = case["data_properties"]
    cropped = properties["bbox_used_for_cropping"]
    before_resampling = properties["shape_after_cropping_and_before_resampling"]
    spatial = data.shape[1:]
    box = []
    for axis in range(len(spatial)):
        # nnU-Net axis `axis` is the input's axis 2 - axis, then transposed by the plan
        source = predictor.plans_manager.transpose_forward[axis]
        wanted = region[2 - source]
        offset = cropped[axis][0]
        scale = spatial[axis] / before_resampling[axis]
        box.append((math.floor((wanted.start - offset) * scale),
                    math.ceil((wanted.stop - offset) * scale)))
    window = window_region(box, spatial, predictor.configuration_manager.patch_size,
                           predictor.tile_step_size)
    inside = predictor.predict_logits_from_preprocessed_data(
        data[(slice(None), *window)]).cpu()
    whole = torch.zeros((inside.shape[0], *spatial), dtype=inside.dtype)
    if aggregation == "softmax":
        whole[0] = 1.0
    else:
        whole[1:] = -30.0
    whole[(slice(None), *window)] = inside
    return whole


def _probabilities_to_input_grid(probabilities, predictor, properties: dict) -> np.ndarray:
    """Probabilities on the preprocessed grid → the input's grid and axis order.

    What ``convert_predicted_logits_to_segmentation_with_correct_shape`` does to logits, minus
    the softmax (nnU-Net v1 exported its averaged probabilities the same way: resampled with
    the plan's probability interpolation, put back into the crop's bounding box with
    background outside, transposed back).
    """
    import torch

    plans_manager = predictor.plans_manager
    configuration_manager = predictor.configuration_manager
    spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = (configuration_manager.spacing
                       if len(configuration_manager.spacing) == len(shape)
                       else [spacing[0], *configuration_manager.spacing])
    resampled = configuration_manager.resampling_fn_probabilities(
        probabilities, shape, current_spacing, spacing)
    resampled = torch.as_tensor(np.asarray(resampled, dtype=np.float32))
    reverted = predictor.label_manager.revert_cropping_on_probabilities(
        resampled, properties["bbox_used_for_cropping"], properties["shape_before_cropping"])
    reverted = np.asarray(reverted.cpu().numpy() if hasattr(reverted, "cpu") else reverted)
    return reverted.transpose([0] + [i + 1 for i in plans_manager.transpose_backward])


def _write_like(reference, data: np.ndarray, path: Path, dtype) -> None:
    """Write ``data`` with ``reference``'s affine and header, through a temporary name."""
    import nibabel as nib

    header = reference.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(np.asarray(data, dtype=dtype), reference.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    out.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
    out.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
    write_nifti_atomic(out, path)
