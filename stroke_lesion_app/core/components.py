"""Connected components of 3-D lesion masks: the neighbourhoods and the labelling.

One place for the connectivity rule that the bundle manifest, the post-processing, the lesion
load and the evaluation all state: 6 (faces), 18 (faces + edges) or 26 (faces + edges +
corners) neighbours of a voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["CONNECTIVITIES", "check_connectivity", "connectivity_structure", "label_components"]

#: Neighbourhood size in 3-D → ``rank`` argument of ``scipy.ndimage.generate_binary_structure``.
CONNECTIVITIES = {6: 1, 18: 2, 26: 3}


def check_connectivity(connectivity) -> int:
    """``connectivity`` as an int, if it is one of 6, 18, 26; else :class:`ValueError`.

    >>> check_connectivity(18)
    18
    """
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity {connectivity!r} unknown; choose one of "
                         f"{sorted(CONNECTIVITIES)}.")
    return int(connectivity)


def connectivity_structure(connectivity: int) -> np.ndarray:
    """3×3×3 boolean structuring element of a 6-, 18- or 26-neighbourhood.

    >>> int(connectivity_structure(6).sum()), int(connectivity_structure(26).sum())
    (7, 27)
    """
    return ndimage.generate_binary_structure(3, CONNECTIVITIES[check_connectivity(connectivity)])


def label_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Label the connected components of a 3-D mask (non-zero voxels are foreground).

    Parameters
    ----------
    mask : numpy.ndarray
        3-D array, shape (X, Y, Z).
    connectivity : {6, 18, 26}
        Neighbourhood.

    Returns
    -------
    labels : numpy.ndarray
        ``int32`` array of ``mask``'s shape: 0 background, 1..n components.
    count : int
        Number of components.

    Examples
    --------
    Two voxels touching by a corner are one component with 26-connectivity, two with 6:

    >>> m = np.zeros((3, 3, 3), dtype=np.uint8); m[0, 0, 0] = m[1, 1, 1] = 1
    >>> label_components(m, 26)[1], label_components(m, 6)[1]
    (1, 2)
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"lesion components need a 3-D mask, got shape {mask.shape}; pass one "
                         "(X, Y, Z) volume.")
    labels, count = ndimage.label(mask != 0, structure=connectivity_structure(connectivity))
    return labels, int(count)
