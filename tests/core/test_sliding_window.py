"""Batched sliding windows (``core.sliding_window``) against nnU-Net's one-window loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from stroke_lesion_app.core.sliding_window import (
    batched_predictor_class,
    default_window_batch_size,
)

PATCH = (8, 8, 8)


@pytest.mark.parametrize(("device", "patch", "expected"), [
    ("cpu", (64, 64, 64), 2),  # the demo bundle's patch on CPU
    ("cpu", (128, 128, 128), 1),  # the paper's
    ("cpu", (16, 16, 16), 16),  # capped at 16
    ("cuda", (64, 64, 64), 16),
    ("cuda", (128, 128, 128), 4),
    ("cuda:1", (160, 192, 160), 1),
])
def test_default_window_batch_size(device, patch, expected):
    assert default_window_batch_size(device, patch) == expected


def _predictor(window_batch_size: int, mirroring: bool, network: torch.nn.Module | None = None,
               device: str = "cpu"):
    """The batched predictor around a two-layer 3-D CNN on 8³ patches."""
    predictor = batched_predictor_class()(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=device != "cpu", device=torch.device(device),
        verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    torch.manual_seed(0)
    predictor.network = (network or torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(),
        torch.nn.Conv3d(4, 2, 3, padding=1))).to(device).eval()
    predictor.configuration_manager = SimpleNamespace(patch_size=list(PATCH))
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=2)
    predictor.allowed_mirroring_axes = (0, 1, 2)
    predictor.window_batch_size = window_batch_size
    return predictor


def _logits(predictor, data: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Sliding-window logits of ``data`` (1, x, y, z) and the batch size of every network call."""
    calls = []
    handle = predictor.network.register_forward_pre_hook(  # also sees calls that fail
        lambda module, args: calls.append(args[0].shape[0]))
    slicers = predictor._internal_get_sliding_window_slicers(data.shape[1:])
    on_device = predictor.device.type == "cuda"
    logits = predictor._internal_predict_sliding_window_return_logits(data, slicers, on_device)
    handle.remove()
    return logits.float().cpu(), calls


@pytest.mark.parametrize("mirroring", [False, True])
@pytest.mark.parametrize("window_batch_size", [4, 100])
def test_batched_windows_equal_nnunet_loop(window_batch_size, mirroring):
    data = torch.randn(1, 20, 17, 24, generator=torch.Generator().manual_seed(1))
    reference, reference_calls = _logits(_predictor(1, mirroring), data)
    found, calls = _logits(_predictor(window_batch_size, mirroring), data)
    windows = len(reference_calls) // (8 if mirroring else 1)
    assert windows == 4 * 4 * 5  # 8³ windows every 4 voxels (or less) over (20, 17, 24)
    assert reference.shape == found.shape == (2, 20, 17, 24)
    # the same float16 accumulation of the same Gaussian-weighted windows
    torch.testing.assert_close(found, reference, rtol=2e-3, atol=2e-3)
    per_call = [min(window_batch_size, windows - start)
                for start in range(0, windows, window_batch_size)]
    assert calls == [n for n in per_call for _ in range(8 if mirroring else 1)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_windows_on_cuda_equal_cpu_loop():
    data = torch.randn(1, 20, 17, 24, generator=torch.Generator().manual_seed(1))
    reference, _ = _logits(_predictor(1, True), data)
    one, _ = _logits(_predictor(1, True, device="cuda"), data)
    batched, calls = _logits(_predictor(16, True, device="cuda"), data)
    # TF32 convolutions on the GPU, float16 accumulation everywhere
    torch.testing.assert_close(one, reference, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(batched, one, rtol=5e-3, atol=5e-3)
    assert calls == [n for n in (16,) * 5 for _ in range(8)]  # 80 windows, 16 per call


def test_one_window_per_call_is_nnunet_own_loop():
    predictor = _predictor(1, mirroring=False)
    data = torch.randn(1, 12, 12, 12)
    _, calls = _logits(predictor, data)
    assert calls == [1] * 8


class _OutOfMemoryAboveOne(torch.nn.Module):
    """A network that runs out of GPU memory for batches of more than one window."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.conv(x)


def test_out_of_memory_falls_back_to_one_window(caplog):
    data = torch.randn(1, 12, 12, 12)
    torch.manual_seed(0)
    network = _OutOfMemoryAboveOne().eval()
    reference, _ = _logits(_predictor(1, False, network), data)
    predictor = _predictor(4, False, network)
    found, calls = _logits(predictor, data)
    torch.testing.assert_close(found, reference)
    assert calls == [4] + [1] * 8  # the failed batch, then nnU-Net's loop
    assert predictor.window_batch_size == 1  # for the rest of the process
    assert "out of memory with 4 windows per call" in caplog.text
