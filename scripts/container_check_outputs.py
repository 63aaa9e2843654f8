"""Check a participant + group run of the demo dataset, the way the test suite checks it.

Run by ``scripts/container_smoke_test.sh`` inside the image (its Python has nibabel and numpy)::

    python container_check_outputs.py BIDS_DIR OUT_DIR --template-source templateflow|nilearn

The checks are those of ``tests/integration/test_participant.py`` (``EXPECTED`` below must stay
equal to that test's list; ``tests/packaging/test_container_scripts.py`` checks it): every
derivative and sidecar of each subject and nothing else, no temporary files left, native outputs
on the raw T1w's grid, brain mask Dice >= 0.95 and lesion Dice >= 0.5 against the generator's
truth (native and template space), probabilities in 0-1, template-space grid 197x233x189 at
1 mm, the demo bundle's identity in every lesion map's sidecar, the reports with the demo
warning, the group table with one row per subject, ``dataset_description.json``'s raw link,
and the template source recorded in the template-space sidecars. Prints one line per subject
and exits 1 with the list of failures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXPECTED = [  # every derivative of one image, with its JSON sidecar
    "desc-preproc_T1w.nii.gz", "desc-brain_mask.nii.gz",
    "space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz",
    "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat",
    "from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.mat",
    "label-L_mask.nii.gz", "label-L_probseg.nii.gz",
    "space-MNI152NLin2009aSym_label-L_mask.nii.gz",
    "space-MNI152NLin2009aSym_label-L_probseg.nii.gz",
    "label-L_desc-lesionload_stats.tsv", "label-L_desc-components_stats.tsv",
    # the lesion-aware second normalisation and the group-space maps
    "from-T1w_to-MNI152NLin2009aSym_mode-image_desc-lesionaware_xfm.h5",
    "from-MNI152NLin2009aSym_to-T1w_mode-image_desc-lesionaware_xfm.h5",
    "space-MNI152NLin2009aSym_label-L_desc-lesionaware_mask.nii.gz",
    "space-MNI152NLin2009aSym_label-L_desc-lesionaware_probseg.nii.gz",
]
#: Written besides when the image holds the MNI152NLin6Asym template (TEMPLATES=fetch).
FSL_EXPECTED = ["space-MNI152NLin6Asym_label-L_desc-lesionaware_mask.nii.gz",
                "space-MNI152NLin6Asym_label-L_desc-lesionaware_probseg.nii.gz"]
LESION_DICE_FLOOR = 0.5
BRAIN_DICE_FLOOR = 0.95
LESION_MAPS = ("label-L_mask", "label-L_probseg", "space-MNI152NLin2009aSym_label-L_mask",
               "space-MNI152NLin2009aSym_label-L_probseg")


def dice(a, b) -> float:
    a, b = a > 0, b > 0
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def check_subject(bids: Path, out: Path, subject: str, template_source: str,
                  failures: list[str]) -> str:
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core.bundle import DEMO_WARNING, load_bundle
    from stroke_lesion_app.core.templates import TEMPLATE_AFFINE

    def fail(message: str) -> None:
        failures.append(f"sub-{subject}: {message}")

    anat = out / f"sub-{subject}" / "anat"
    expected = {f"sub-{subject}_{name}" for name in EXPECTED}
    expected |= {name.split(".")[0] + ".json" for name in expected}
    found = {path.name for path in anat.iterdir()} if anat.is_dir() else set()
    fsl = {f"sub-{subject}_{name}" for name in FSL_EXPECTED}
    if fsl & found:
        expected |= fsl | {name.split(".")[0] + ".json" for name in fsl}
    if found != expected:
        fail(f"files missing {sorted(expected - found)}, unexpected {sorted(found - expected)}")
        return "files differ"
    truth = bids / f"derivatives/synthetic-truth/sub-{subject}/anat"
    raw = nib.load(bids / f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz")
    brain = nib.load(anat / f"sub-{subject}_desc-brain_mask.nii.gz")
    lesion = nib.load(anat / f"sub-{subject}_label-L_mask.nii.gz")
    probability = nib.load(anat / f"sub-{subject}_label-L_probseg.nii.gz")
    for image in (brain, lesion, probability):
        if image.shape != raw.shape or not np.allclose(image.affine, raw.affine, atol=1e-4):
            fail(f"{image.get_filename()} not on the raw T1w grid")
    brain_truth = nib.load(truth / f"sub-{subject}_desc-brain_mask.nii.gz")
    brain_dice = dice(brain.get_fdata(), brain_truth.get_fdata())
    if brain_dice < BRAIN_DICE_FLOOR:
        fail(f"brain mask Dice {brain_dice:.3f} < {BRAIN_DICE_FLOOR}")
    if not set(np.unique(np.asarray(lesion.dataobj))) <= {0, 1}:
        fail("lesion mask not binary")
    values = probability.get_fdata()
    if values.min() < 0 or values.max() > 1:
        fail("probability outside 0-1")
    lesion_truth = nib.load(truth / f"sub-{subject}_label-L_mask.nii.gz")
    native_dice = dice(lesion.get_fdata(), lesion_truth.get_fdata())
    std = nib.load(anat / f"sub-{subject}_space-MNI152NLin2009aSym_label-L_mask.nii.gz")
    if std.shape != (197, 233, 189) or not np.allclose(std.affine, TEMPLATE_AFFINE):
        fail(f"template-space mask grid {std.shape}")
    std_truth = nib.load(truth / f"sub-{subject}_space-MNI152NLin2009aSym_label-L_mask.nii.gz")
    std_dice = dice(std.get_fdata(), std_truth.get_fdata())
    for name, value in (("native", native_dice), ("template", std_dice)):
        if value < LESION_DICE_FLOOR:
            fail(f"lesion Dice ({name}) {value:.3f} < {LESION_DICE_FLOOR}")
    bundle = load_bundle("demo")
    for name in LESION_MAPS:
        sidecar = json.loads((anat / f"sub-{subject}_{name}.json").read_text())
        if sidecar["Model"]["name"] != "demo" or sidecar["Demo"] is not True:
            fail(f"{name}.json: not the demo bundle")
        if sidecar["Model"]["manifest_sha256"] != bundle.identity()["manifest_sha256"]:
            fail(f"{name}.json: bundle manifest differs from the image's demo bundle")
        if sidecar["LesionSource"] != "model":
            fail(f"{name}.json: LesionSource {sidecar['LesionSource']}")
    sources = set()
    for sidecar_path in anat.glob("*MNI152NLin2009aSym*.json"):
        sidecar = json.loads(sidecar_path.read_text())
        if "TemplateSource" in sidecar:
            sources.add(sidecar["TemplateSource"])
    if sources != {template_source}:
        fail(f"TemplateSource {sorted(sources)}, expected {template_source}")
    report = out / f"sub-{subject}.html"
    text = report.read_text() if report.is_file() else ""
    if DEMO_WARNING.split(":")[0] not in text or f"demo {bundle.version}" not in text:
        fail(f"{report.name}: missing or without the demo warning")
    return (f"brain Dice {brain_dice:.3f}, lesion Dice native {native_dice:.3f} template "
            f"{std_dice:.3f}, TemplateSource {','.join(sorted(sources))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bids", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--template-source", choices=("templateflow", "nilearn"), required=True)
    parser.add_argument("--participant-label", nargs="+", help="check these subjects only")
    parser.add_argument("--no-group", action="store_true", help="no group level was run")
    args = parser.parse_args(argv)
    failures: list[str] = []
    subjects = args.participant_label or sorted(
        path.name[4:] for path in args.bids.glob("sub-*") if path.is_dir())
    if not subjects:
        failures.append(f"no sub-* in {args.bids}")
    for subject in subjects:
        print(f"sub-{subject}: " + check_subject(args.bids, args.out, subject,
                                                 args.template_source, failures))
    hidden = [str(path) for path in args.out.rglob(".*") if path.name != ".bidsignore"]
    if hidden:
        failures.append(f"temporary files left: {hidden}")
    cohort_path = args.out / "group" / "label-L_desc-lesionload_stats.tsv"
    cohort = cohort_path.read_text().splitlines() if cohort_path.is_file() else []
    if args.no_group:
        pass
    elif len(cohort) != len(subjects) + 1 or not all(
            f"sub-{subject}" in "\n".join(cohort[1:]) for subject in subjects):
        failures.append(f"group table: {len(cohort)} lines for {len(subjects)} subjects")
    elif not (args.out / "group" / "group.html").is_file():
        failures.append("group/group.html missing")
    description = json.loads((args.out / "dataset_description.json").read_text())
    links = description.get("DatasetLinks", {})
    if description.get("DatasetType") != "derivative" or "raw" not in links:
        failures.append("dataset_description.json: not a derivative with a raw link")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"container_check_outputs: {len(subjects)} subjects, "
          f"{'all checks passed' if not failures else f'{len(failures)} failure(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
