"""Batched sliding-window prediction for nnU-Net v2 predictors.

nnU-Net's ``nnUNetPredictor`` runs its sliding window one patch at a time. On a GPU a small
patch (the demo bundle's 64³) leaves most of the device idle, so
:func:`batched_predictor_class` returns a subclass that sends ``window_batch_size`` windows
through the network at once: the windows are stacked along the batch axis, mirrored together
for test-time augmentation (nnU-Net's own ``_internal_maybe_mirror_and_predict``, which flips
the spatial axes of a whole batch), then weighted by the same Gaussian and accumulated into
the same half-precision buffers as nnU-Net's loop. Instance normalisation is per sample, so a
window's prediction does not depend on the other windows of its batch; the result equals
nnU-Net's up to floating-point rounding (convolution kernels may differ with the batch size).

The subclass also averages the way nnU-Net **v1** does when its ``aggregation`` attribute is
``"softmax"`` (imported v1 models, :mod:`stroke_lesion_app.core.bundle`): every mirrored pass
goes through the softmax before the mirrorings are averaged, and the sliding windows'
probabilities (not logits) are averaged with v1's Gaussian weights, in ``float32`` buffers as v1
uses on the CPU (``nnunet/network_architecture/neural_network.py`` of nnU-Net 1.7:
``_internal_maybe_mirror_and_pred_3D`` and ``_internal_predict_3D_3Dconv_tiled``; a single
window is not weighted). The array it returns then holds probabilities, which the caller must
not pass through the softmax again (:class:`stroke_lesion_app.core.ensemble.EnsemblePredictor`
exports them itself).

With ``window_batch_size == 1`` the subclass calls nnU-Net's own loop unchanged, and a GPU
out-of-memory error at a larger batch falls back to it for the rest of the process. The
override is of a private nnU-Net method (``_internal_predict_sliding_window_return_logits`` of
nnU-Net 2.8, the range setup.cfg allows); ``tests/core/test_sliding_window.py`` checks that
batched and one-at-a-time predictions agree.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Sequence

__all__ = ["batched_predictor_class", "default_window_batch_size", "mirrored_softmax"]

LOGGER = logging.getLogger(__name__)


def default_window_batch_size(device: str, patch_size: Sequence[int]) -> int:
    """Windows per network call when the user gives none, from the device and the patch size.

    Measured (``benchmarks/results/segmentation_{cpu,cuda}.md``, part w): on 2 CPU threads two
    64³ windows per call were 22 % faster than one, four no faster than two; on a GPU (H200) 16
    windows of 64³ per call were 5× faster than one, and 4 windows of 128³ 1.3× faster
    (6.9 GB of GPU memory; 8 windows gained little more for twice the memory). Hence about two
    64³ windows' voxels per call on a CPU and about four 128³ windows' voxels on a GPU, at
    most 16 windows.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    patch_size : sequence of int
        The network's patch size in voxels (nnU-Net's ``configuration_manager.patch_size``).

    Returns
    -------
    int
        Number of windows per network call (≥ 1).
    """
    budget = 4 * 128**3 if str(device).startswith("cuda") else 2 * 64**3
    return int(max(1, min(16, budget // math.prod(int(n) for n in patch_size))))


def mirrored_softmax(network, x, mirror_axes: Sequence[int] | None):
    """nnU-Net v1's test-time mirroring: the mean of the softmax of every mirrored pass.

    Parameters
    ----------
    network : torch.nn.Module
        Returns logits ``(batch, classes, *spatial)``.
    x : torch.Tensor
        Windows ``(batch, channels, *spatial)``.
    mirror_axes : sequence of int or None
        Spatial axes (0-based) to mirror along, every combination of them; ``None`` or empty:
        one pass.

    Returns
    -------
    torch.Tensor
        ``float32`` probabilities ``(batch, classes, *spatial)``.
    """
    import torch

    prediction = torch.softmax(network(x).float(), 1)
    axes = [int(axis) + 2 for axis in (mirror_axes or ())]
    combinations = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    for flip in combinations:
        prediction += torch.flip(torch.softmax(network(torch.flip(x, flip)).float(), 1), flip)
    if combinations:
        prediction /= len(combinations) + 1
    return prediction


@functools.lru_cache(maxsize=1)
def batched_predictor_class():
    """``nnUNetPredictor`` subclass whose sliding window runs ``window_batch_size`` windows per
    network call (attribute, default 1). Imports nnU-Net and torch on first call."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian
    from nnunetv2.utilities.helpers import empty_cache

    class BatchedWindowPredictor(nnUNetPredictor):
        """nnU-Net's predictor with batched sliding windows (see the module docstring)."""

        window_batch_size: int = 1
        #: ``"logits"`` (nnU-Net v2) or ``"softmax"`` (nnU-Net v1, see the module docstring).
        aggregation: str = "logits"

        @torch.inference_mode()
        def _internal_maybe_mirror_and_predict(self, x):
            if self.aggregation != "softmax":
                return super()._internal_maybe_mirror_and_predict(x)
            return mirrored_softmax(self.network, x,
                                    self.allowed_mirroring_axes if self.use_mirroring else None)

        @torch.inference_mode()
        def _softmax_sliding_window(self, data, slicers, do_on_device: bool):
            """v1's aggregation: Gaussian-weighted mean of the windows' probabilities
            (``float32``; no weighting when there is one window)."""
            results_device = self.device if do_on_device else torch.device("cpu")
            batch_size = max(1, int(self.window_batch_size))
            data = data.to(results_device)
            probabilities = torch.zeros((self.label_manager.num_segmentation_heads,
                                         *data.shape[1:]), dtype=torch.float32,
                                        device=results_device)
            weights = torch.zeros(data.shape[1:], dtype=torch.float32, device=results_device)
            patch_size = tuple(self.configuration_manager.patch_size)
            if self.use_gaussian and len(slicers) > 1:
                gaussian = compute_gaussian(patch_size, sigma_scale=1.0 / 8,
                                            value_scaling_factor=1, dtype=torch.float32,
                                            device=results_device)
            else:
                gaussian = torch.ones(patch_size, dtype=torch.float32, device=results_device)
            for start in range(0, len(slicers), batch_size):
                group = slicers[start:start + batch_size]
                windows = torch.stack([data[window] for window in group]).to(self.device)
                predictions = self._internal_maybe_mirror_and_predict(windows)
                predictions = predictions.to(results_device)
                for prediction, window in zip(predictions, group):
                    probabilities[window] += prediction * gaussian
                    weights[window[1:]] += gaussian
            probabilities /= weights
            return probabilities

        @torch.inference_mode()
        def _internal_predict_sliding_window_return_logits(self, data, slicers,
                                                           do_on_device: bool = True):
            """Logits ``(classes, *data.shape[1:])`` (float16) of the padded image ``data``
            ``(channels, x, y, z)``; ``slicers`` are nnU-Net's window index tuples. With
            ``aggregation == "softmax"``: ``float32`` probabilities instead."""
            if self.aggregation == "softmax":
                return self._softmax_sliding_window(data, slicers, do_on_device)
            batch_size = max(1, int(self.window_batch_size))
            if batch_size == 1:
                return super()._internal_predict_sliding_window_return_logits(
                    data, slicers, do_on_device)
            results_device = self.device if do_on_device else torch.device("cpu")
            empty_cache(self.device)
            data = data.to(results_device)
            logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]),
                                 dtype=torch.half, device=results_device)
            weights = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
            gaussian = (compute_gaussian(tuple(self.configuration_manager.patch_size),
                                         sigma_scale=1.0 / 8, value_scaling_factor=10,
                                         device=results_device)
                        if self.use_gaussian else 1)
            try:
                for start in range(0, len(slicers), batch_size):
                    group = slicers[start:start + batch_size]
                    windows = torch.stack([data[window] for window in group]).to(self.device)
                    predictions = self._internal_maybe_mirror_and_predict(windows)
                    predictions = predictions.to(results_device)
                    for prediction, window in zip(predictions, group):
                        if self.use_gaussian:
                            prediction = prediction * gaussian
                        logits[window] += prediction
                        weights[window[1:]] += gaussian
                torch.div(logits, weights, out=logits)
                if torch.any(torch.isinf(logits)):
                    raise RuntimeError("infinite logits in the sliding-window average; use "
                                       "window_batch_size=1 (nnU-Net's own loop).")
                return logits
            except torch.cuda.OutOfMemoryError:
                del logits, weights
                empty_cache(self.device)
                LOGGER.warning("GPU out of memory with %d windows per call; continuing with one "
                               "window per call.", batch_size)
                self.window_batch_size = 1
                return super()._internal_predict_sliding_window_return_logits(
                    data, slicers, do_on_device)
            except Exception:
                del logits, weights
                empty_cache(self.device)
                empty_cache(results_device)
                raise

    return BatchedWindowPredictor
