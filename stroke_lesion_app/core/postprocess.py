"""From the ensemble's lesion probability to a binary lesion mask.

The bundle's manifest states both rules: a probability ``threshold`` and a minimum component
size ``min_component_voxels`` counted with a stated ``connectivity`` (6, 18 or 26 neighbours).
"""

from __future__ import annotations

import logging

import numpy as np

from .components import check_connectivity, label_components

__all__ = ["postprocess_probability", "remove_small_components", "threshold_probability"]

LOGGER = logging.getLogger(__name__)



def threshold_probability(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary mask of the voxels whose probability is strictly above ``threshold``.

    Strictly above, so that at 0.5 a two-class argmax (ties go to background) is reproduced.

    Parameters
    ----------
    prob : numpy.ndarray
        Lesion probability, any shape, values in [0, 1] (NaN counts as background).
    threshold : float
        In [0, 1).

    Returns
    -------
    numpy.ndarray
        ``uint8`` mask (0/1), same shape as ``prob``.

    Examples
    --------
    >>> threshold_probability(np.array([0.2, 0.5, 0.51, 1.0]), 0.5)
    array([0, 0, 1, 1], dtype=uint8)
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    prob = np.asarray(prob)
    with np.errstate(invalid="ignore"):
        return (prob > threshold).astype(np.uint8)


def remove_small_components(mask: np.ndarray, min_voxels: int,
                            connectivity: int = 26) -> np.ndarray:
    """Drop the connected components of a 3-D mask smaller than ``min_voxels`` voxels.

    Parameters
    ----------
    mask : numpy.ndarray
        3-D mask; non-zero voxels are foreground.
    min_voxels : int
        Components with fewer voxels are removed; 0 or 1 keeps everything.
    connectivity : int
        6 (faces), 18 (faces + edges) or 26 (faces + edges + corners) neighbours.

    Returns
    -------
    numpy.ndarray
        ``uint8`` mask (0/1), same shape as ``mask``.

    Examples
    --------
    Two voxels touching by a corner are one component with 26-connectivity, two with 6:

    >>> m = np.zeros((3, 3, 3), dtype=np.uint8); m[0, 0, 0] = m[1, 1, 1] = 1
    >>> int(remove_small_components(m, 2, connectivity=26).sum())
    2
    >>> int(remove_small_components(m, 2, connectivity=6).sum())
    0
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D, got shape {mask.shape}")
    check_connectivity(connectivity)
    if int(min_voxels) != min_voxels or min_voxels < 0:
        raise ValueError(f"min_voxels must be a non-negative integer, got {min_voxels!r}")
    foreground = mask != 0
    if min_voxels <= 1 or not foreground.any():
        return foreground.astype(np.uint8)
    labels, n_components = label_components(foreground, connectivity)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    LOGGER.debug("Kept %d of %d components (>= %d voxels, %d-connectivity).",
                 int(keep.sum()), n_components, min_voxels, connectivity)
    return keep[labels].astype(np.uint8)


def postprocess_probability(prob: np.ndarray, threshold: float, min_voxels: int,
                            connectivity: int = 26) -> np.ndarray:
    """:func:`threshold_probability` then :func:`remove_small_components`; ``uint8`` 3-D mask."""
    return remove_small_components(threshold_probability(prob, threshold), min_voxels,
                                   connectivity)
