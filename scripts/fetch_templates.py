#!/usr/bin/env python3
"""Prefetch the TemplateFlow files stroke-lesion-app reads, for an image that runs offline.

Used by the Dockerfile at build time (the only step that needs the network)::

    TEMPLATEFLOW_HOME=/opt/templateflow python scripts/fetch_templates.py

The list of files is not written here: it is imported from
``stroke_lesion_app.core.templates``, so the image holds exactly what the app looks for:

* MNI152NLin2009aSym, the app's space (``TEMPLATEFLOW_REQUIRED``, ``TEMPLATEFLOW_OPTIONAL``
  and the atlas pattern ``TEMPLATEFLOW_ATLAS_GLOB``; ``res-1`` files);
* MNI152NLin6Asym, FSL's MNI152, the second group space (``FSL_TEMPLATEFLOW_FILES``: the 1 mm
  T1w and brain mask, TemplateFlow's ``res-01`` files).

Every file is fetched with ``templateflow.api.get`` and then checked to be real (non-empty)
at the path the app reads. Label atlases (``atlas-*_dseg`` at 1 mm) of MNI152NLin2009aSym are
fetched when TemplateFlow lists any (it currently lists none). The Dockerfile then computes
the MNI152NLin2009aSym → MNI152NLin6Asym transform once
(``python -m stroke_lesion_app.core.template_transforms``).

``--dry-run`` downloads nothing: it checks each query against TemplateFlow's file index (the
skeleton shipped in the templateflow package) and prints the files a real run would fetch.

Exit codes: 0 done, 1 a file could not be fetched or is empty, 2 a file is unknown to
TemplateFlow (the app and TemplateFlow disagree on a name).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from pathlib import Path

RESOLUTION = 1


def _templates_module():
    """``stroke_lesion_app.core.templates``, from the source tree when run from a checkout."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from stroke_lesion_app.core import templates

    return templates


def _app_constants():
    """Template name, file parts and atlas pattern, as the app defines them."""
    templates = _templates_module()
    return (templates.TEMPLATE,
            tuple(templates.TEMPLATEFLOW_REQUIRED) + tuple(templates.TEMPLATEFLOW_OPTIONAL),
            templates.TEMPLATEFLOW_ATLAS_GLOB, templates.templateflow_filename)


def _fsl_constants():
    """Name, file parts and file-name function of the second group space (MNI152NLin6Asym)."""
    templates = _templates_module()
    return (templates.FSL_TEMPLATE, tuple(templates.FSL_TEMPLATEFLOW_FILES),
            templates.fsl_templateflow_filename)


def query(part: str) -> dict[str, object]:
    """``templateflow.api.get`` keywords for a file part such as ``"label-GM_probseg"``.

    Entities the part does not name are required absent (``None``), so ``"T1w"`` does not also
    match ``desc-brain_T1w``.

    >>> query("desc-brain_mask")["desc"], query("desc-brain_mask")["suffix"]
    ('brain', 'mask')
    >>> query("T1w")["desc"] is None
    True
    """
    *entities, suffix = part.split("_")
    keywords: dict[str, object] = {"resolution": RESOLUTION, "suffix": suffix,
                                   "extension": ".nii.gz", "desc": None, "label": None,
                                   "atlas": None}
    for entity in entities:
        key, _, value = entity.partition("-")
        keywords[key] = value
    return keywords


def _requests() -> list[tuple[str, str, dict[str, object]]]:
    """``(template, file name, templateflow.api.get keywords)`` of every file to fetch: the
    app's MNI152NLin2009aSym images, its atlases, then MNI152NLin6Asym's images."""
    from templateflow import api

    template, parts, atlas_glob, filename = _app_constants()
    requests = [(template, filename(part), query(part)) for part in parts]
    atlases = api.ls(template, resolution=RESOLUTION, suffix="dseg", extension=".nii.gz")
    for path in sorted(atlases or []):
        name = Path(path).name
        if not fnmatch.fnmatch(name, atlas_glob):
            continue
        entities = dict(e.split("-", 1) for e in name[:-len("_dseg.nii.gz")].split("_")[1:])
        requests.append((template, name, {"resolution": RESOLUTION, "suffix": "dseg",
                                          "extension": ".nii.gz", "atlas": entities["atlas"],
                                          "desc": entities.get("desc")}))
    fsl_template, fsl_parts, fsl_filename = _fsl_constants()
    requests += [(fsl_template, fsl_filename(part), query(part)) for part in fsl_parts]
    return requests


def planned_files() -> list[str]:
    """File names (each in its ``tpl-<template>/``) a run fetches, in order: the app's
    MNI152NLin2009aSym images, any atlases, then the MNI152NLin6Asym images."""
    return [name for _, name, _ in _requests()]


def fetch(dry_run: bool) -> int:
    """Fetch (or, with ``dry_run``, look up) every file; return the exit code."""
    from templateflow import api

    requests = _requests()
    home = Path(os.environ.get("TEMPLATEFLOW_HOME", "")) if os.environ.get(
        "TEMPLATEFLOW_HOME") else None
    folder_note = f"TEMPLATEFLOW_HOME={home}" if home else "TEMPLATEFLOW_HOME unset (default)"
    names = " and ".join(dict.fromkeys(template for template, _, _ in requests))
    print(f"{'Checking' if dry_run else 'Fetching'} {names} files for stroke-lesion-app "
          f"({folder_note})")
    status = 0
    for template, name, keywords in requests:
        listed = api.ls(template, **keywords)
        listed = [Path(p) for p in (listed if isinstance(listed, list) else [listed]) if p]
        if [p.name for p in listed] != [name]:
            print(f"ERROR {name}: TemplateFlow query {keywords} lists "
                  f"{[p.name for p in listed] or 'nothing'}", file=sys.stderr)
            status = 2
            continue
        if dry_run:
            print(f"  would fetch {name}")
            continue
        try:
            path = api.get(template, **keywords)
        except Exception as error:  # noqa: BLE001 - requests/urllib3/OS errors: one line, go on
            print(f"ERROR {name}: download failed ({type(error).__name__}: "
                  f"{str(error).splitlines()[0][:200]}); check the network at build time",
                  file=sys.stderr)
            status = max(status, 1)
            continue
        path = Path(path[0] if isinstance(path, list) and path else path or "missing")
        if path.name != name or not path.is_file() or path.stat().st_size == 0:
            print(f"ERROR {name}: not fetched (got {path}, empty or missing); check the network "
                  "at build time", file=sys.stderr)
            status = max(status, 1)
            continue
        print(f"  {path} ({path.stat().st_size / 1e6:.1f} MB)")
        if "_atlas-" in name:
            table = api.get(template, atlas=keywords["atlas"], desc=keywords["desc"],
                            suffix="dseg", extension=".tsv")
            if table:
                print(f"  {table}")
    return status


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description="Prefetch the MNI152NLin2009aSym and MNI152NLin6Asym TemplateFlow files "
                    "stroke-lesion-app reads into $TEMPLATEFLOW_HOME (used by the Dockerfile "
                    "at build time).")
    parser.add_argument("--dry-run", action="store_true",
                        help="download nothing; check the queries against TemplateFlow's index "
                             "and list the files a real run would fetch")
    parser.add_argument("--list", action="store_true",
                        help="print only the file names, one per line, and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in planned_files():
            print(name)
        return 0
    return fetch(args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
