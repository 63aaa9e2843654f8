"""The benchmark's input: a real head with skull, stored as a wide-field-of-view scanner would."""

from __future__ import annotations

import json
from pathlib import Path

#: the field of view of the stored head: neck to vertex with air around it, 1 mm voxels
SHAPE = (256, 256, 220)
#: (rotation about x, y, z in degrees, shift in mm) of each participant
POSES = (((12.0, -6.0, 4.0), (4.0, -10.0, 8.0)), ((-8.0, 5.0, -10.0), (-6.0, 12.0, -4.0)),
         ((4.0, 10.0, 7.0), (10.0, 3.0, -12.0)))


def wide_field_head(head: Path, out: Path, pose_index: int, seed: int) -> dict:
    """Write ``head`` in scanner pose on a 256×256×220 grid at 1 mm (LIA, int16) to ``out``.

    A smooth multiplicative bias field (exp of low-frequency cosines, about ±20 %) and
    Rayleigh noise (σ = 2 % of the head's 99th percentile) outside and inside the head make it
    look like a scanner's image. Returns the pose (rotation degrees, shift mm) and the shape.
    """
    import nibabel as nib
    import numpy as np
    from nibabel.processing import resample_from_to
    from scipy.spatial.transform import Rotation

    rotation, shift = POSES[pose_index % len(POSES)]
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", rotation, degrees=True).as_matrix()
    pose[:3, 3] = shift
    source = nib.load(str(head))
    # LIA storage: i runs right→left, j superior→inferior, k posterior→anterior
    affine = np.array([[-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
    shape = (SHAPE[0], SHAPE[2], SHAPE[1])
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2, 1.0])
    affine[:3, 3] = -(affine @ centre)[:3] + [0.0, -15.0, -20.0]  # head centred, neck below
    viewed = nib.Nifti1Image(source.get_fdata(dtype=np.float32),
                             np.linalg.inv(pose) @ source.affine)
    data = resample_from_to(viewed, (shape, affine), order=1).get_fdata(dtype=np.float32)
    data = np.clip(data, 0, None)
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(0, np.pi, n, dtype=np.float32) for n in shape],
                       indexing="ij", sparse=True)
    field = sum(rng.uniform(-0.07, 0.07) * np.cos(grid[axis] * rng.integers(1, 3))
                for axis in range(3))
    data *= np.exp(field)
    sigma = 0.02 * float(np.percentile(data[data > 0], 99))
    noisy = np.hypot(data + rng.normal(0, sigma, data.shape).astype(np.float32),
                     rng.normal(0, sigma, data.shape).astype(np.float32))
    scale = 3000.0 / float(noisy.max())
    nib.Nifti1Image(np.rint(noisy * scale).astype(np.int16), affine).to_filename(str(out))
    return {"rotation_deg": list(rotation), "shift_mm": list(shift), "shape": list(shape),
            "orientation": "".join(nib.aff2axcodes(affine))}


def wide_field_dataset(head: Path, bids: Path, subjects: int) -> tuple[Path, dict]:
    """A BIDS dataset of ``subjects`` posed copies of ``head`` (kept when already there)."""
    inputs = {}
    (bids / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "participant-nodes benchmark", "BIDSVersion": "1.9.0"}))
    for index in range(subjects):
        label = f"{index + 1:02d}"
        path = bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        sidecar = path.with_name(path.name.replace(".nii.gz", ".json"))
        if not path.exists():
            pose = wide_field_head(head, path, index, seed=index)
            sidecar.write_text(json.dumps({"BenchmarkPose": pose}))
        inputs[label] = json.loads(sidecar.read_text())["BenchmarkPose"]
    return bids, inputs
