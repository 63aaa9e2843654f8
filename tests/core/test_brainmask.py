"""Skull-stripping backends."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import brainmask


def test_none_method_fills_the_stripped_brain():
    data = np.zeros((20, 20, 20), np.float32)
    data[4:16, 4:16, 4:16] = 100
    data[9:11, 9:11, 9:11] = 0          # a dark hole (ventricle) inside the brain
    data[0, 0, 0] = 5                   # a speck of noise outside
    mask = brainmask.brain_mask(nib.Nifti1Image(data, np.eye(4)), "none")
    values = np.asanyarray(mask.dataobj)
    assert mask.get_data_dtype() == np.uint8
    assert values.sum() == 12 ** 3 and values[0, 0, 0] == 0


def test_resolve_method(monkeypatch):
    assert brainmask.resolve_method("none") == "none"
    with pytest.raises(ValueError, match="unknown"):
        brainmask.resolve_method("bet")
    import builtins

    real_import = builtins.__import__

    def no_deepbet(name, *args, **kwargs):
        if name == "deepbet":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_deepbet)
    assert brainmask.resolve_method("auto") == "ants"
    with pytest.raises(ValueError, match="deepbet package is not installed"):
        brainmask.resolve_method("deepbet")
