"""Files that lesion-symptom-mapping tools read as they are: a NiiStat/NPM design sheet, a
LESYMAP file list, and a long-format regional lesion-load table.

The sheet and the list name each image by its absolute path, in the order of the stack of
the same space (:mod:`.group_stacks`). The regional table is built from the lesion-load
tables of the participant level (template space, MNI152NLin2009aSym).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from stroke_lesion_app.core.fileio import atomic_path, write_text_atomic
from stroke_lesion_app.core.group_stacks import StackVolume

__all__ = ["NIISTAT_PATH_COLUMN", "REGIONAL_COLUMNS", "REGIONAL_SIDECAR", "niistat_sheet",
           "read_participants", "region_involvement", "regional_table", "write_lesymap_list",
           "write_niistat_sheet", "write_regional_table"]

LOGGER = logging.getLogger("stroke_lesion_app.group")

#: Header of the sheet's first column (NiiStat takes the first column as the image, whatever
#: its name).
NIISTAT_PATH_COLUMN = "filename"

#: Columns of the long regional table, in order.
REGIONAL_COLUMNS = ("participant_id", "session_id", "atlas", "label", "lesion_ml",
                    "pct_region_damaged", "pct_lesion_in_region")

#: BIDS-style sidecar of the regional table.
REGIONAL_SIDECAR = {
    "Description": "Regional lesion load, one row per image and region (tissue class or atlas "
                   "label), from the images' lesion-load tables; template space "
                   "MNI152NLin2009aSym.",
    "participant_id": {"Description": "Participant"},
    "session_id": {"Description": "Session (n/a: the dataset has no sessions)"},
    "atlas": {"Description": "'tissue' (template tissue probability maps, weighted overlap) "
                             "or the name given to --atlas"},
    "label": {"Description": "Tissue class or atlas region name"},
    "lesion_ml": {"Description": "Lesion volume inside the region: pct_lesion_in_region / 100 "
                                 "x the lesion volume on the template grid (std_volume_ml)",
                  "Units": "mL"},
    "pct_region_damaged": {"Description": "Share of the region's volume that is lesioned",
                           "Units": "%"},
    "pct_lesion_in_region": {"Description": "Share of the lesion volume inside the region",
                             "Units": "%"},
}


def read_participants(bids_dir: Path | str | None) -> pd.DataFrame | None:
    """``BIDS_DIR/participants.tsv`` (opened read-only), every value as text, or ``None``.

    ``participant_id`` values without ``sub-`` get it; a participant listed twice keeps its
    first row.
    """
    if bids_dir is None:
        return None
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        LOGGER.info("No %s: the NiiStat sheet lists the images and participants only.", path)
        return None
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        LOGGER.warning("%s: not readable as TSV (%s); the NiiStat sheet lists the images and "
                       "participants only.", path, str(error).splitlines()[0])
        return None
    if "participant_id" not in table:
        LOGGER.warning("%s has no participant_id column; not used.", path)
        return None
    ids = table["participant_id"].str.strip()
    table["participant_id"] = ids.where(ids.str.startswith("sub-"), "sub-" + ids)
    return table.drop_duplicates("participant_id").reset_index(drop=True)


def niistat_sheet(volumes: Sequence[StackVolume],
                  participants: pd.DataFrame | None) -> pd.DataFrame:
    """The NiiStat/NPM design sheet: one row per stacked image, in stack order.

    The first column (:data:`NIISTAT_PATH_COLUMN`) is the absolute path of the image's
    group-space mask; the others are the columns of ``participants.tsv`` in its order (only
    ``participant_id`` without one), the participant's values as written there. Missing
    values (``n/a`` or a participant absent from the file) are empty cells, which NiiStat
    reads as missing.
    """
    columns = list(participants.columns) if participants is not None else ["participant_id"]
    rows = {row["participant_id"]: row for row in participants.to_dict("records")} \
        if participants is not None else {}
    records = []
    for volume in volumes:
        values = rows.get(volume.participant_id, {})
        record = {NIISTAT_PATH_COLUMN: str(Path(volume.path).absolute())}
        for column in columns:
            value = volume.participant_id if column == "participant_id" else \
                values.get(column, "")
            record[column] = "" if value == "n/a" else value
        records.append(record)
    return pd.DataFrame(records, columns=[NIISTAT_PATH_COLUMN, *columns])


def write_niistat_sheet(path: Path | str, volumes: Sequence[StackVolume],
                        participants: pd.DataFrame | None) -> Path:
    """Write :func:`niistat_sheet` as tab-separated text (``.tab``: NiiStat's extension for
    tab-delimited design files)."""
    with atomic_path(path) as tmp:
        niistat_sheet(volumes, participants).to_csv(tmp, sep="\t", index=False,
                                                    lineterminator="\n")
    return Path(path)


def write_lesymap_list(path: Path | str, volumes: Sequence[StackVolume]) -> Path:
    """One absolute image path per line, in stack order (LESYMAP's ``lesions.list``, e.g.
    ``readLines(file)`` in R)."""
    return write_text_atomic(path, "".join(f"{Path(volume.path).absolute()}\n"
                                           for volume in volumes))


def _split_region(prefix: str) -> tuple[str, str]:
    """``tissue_WM`` → ``("tissue", "WM")``; ``atlas-AAL_Precentral_L`` → ``("AAL",
    "Precentral_L")`` (the atlas name ends at its first underscore).

    >>> _split_region("atlas-AAL_Precentral_L"), _split_region("tissue_GM")
    (('AAL', 'Precentral_L'), ('tissue', 'GM'))
    """
    source, _, label = prefix.partition("_")
    return source.removeprefix("atlas-"), label


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def regional_table(cohort: pd.DataFrame) -> pd.DataFrame:
    """The long regional table (:data:`REGIONAL_COLUMNS`) of the measured rows of a cohort
    table (wide ``<prefix>_<region>_lesion_percent`` / ``_region_percent`` columns).

    ``lesion_ml`` = ``pct_lesion_in_region`` / 100 × ``std_volume_ml``: the percentages are
    computed on the template grid, over the template-space mask.
    """
    if cohort.empty or "status" not in cohort:
        return pd.DataFrame(columns=list(REGIONAL_COLUMNS))
    prefixes = []
    for column in cohort.columns:
        for ending in ("_lesion_percent", "_region_percent"):
            prefix = str(column)[: -len(ending)]
            if str(column).endswith(ending) and prefix not in prefixes:
                prefixes.append(prefix)
    rows = []
    for _, row in cohort[cohort["status"] == "measured"].iterrows():
        session = row.get("session_id")
        session = session if isinstance(session, str) and session else "n/a"
        volume_ml = _number(row.get("std_volume_ml"))
        for prefix in prefixes:
            lesion = _number(row.get(f"{prefix}_lesion_percent"))
            region = _number(row.get(f"{prefix}_region_percent"))
            if math.isnan(lesion) and math.isnan(region):
                continue
            atlas, label = _split_region(prefix)
            rows.append({"participant_id": row["participant_id"], "session_id": session,
                         "atlas": atlas, "label": label,
                         "lesion_ml": round(lesion / 100 * volume_ml, 6),
                         "pct_region_damaged": region, "pct_lesion_in_region": lesion})
    return pd.DataFrame(rows, columns=list(REGIONAL_COLUMNS))


def write_regional_table(path: Path | str, table: pd.DataFrame) -> Path:
    """Write the regional table as TSV (missing values ``n/a``)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    return Path(path)


def region_involvement(regional: pd.DataFrame) -> pd.DataFrame:
    """Per region of a regional table: images involved, mean and largest % of the region
    damaged, mean lesion volume inside it over the involved images.

    Returns
    -------
    pandas.DataFrame
        Columns ``atlas``, ``label``, ``images_involved`` (images with any lesion in the
        region), ``images`` (images measured in that atlas), ``mean_pct_region_damaged``,
        ``max_pct_region_damaged``, ``mean_lesion_ml_involved``; most involved first.
    """
    columns = ["atlas", "label", "images_involved", "images", "mean_pct_region_damaged",
               "max_pct_region_damaged", "mean_lesion_ml_involved"]
    if regional.empty:
        return pd.DataFrame(columns=columns)
    table = regional.copy()
    table["involved"] = table["pct_lesion_in_region"].astype(float) > 0
    table["involved_ml"] = table["lesion_ml"].astype(float).where(table["involved"])
    summary = table.groupby(["atlas", "label"], sort=False).agg(
        images_involved=("involved", "sum"), images=("involved", "size"),
        mean_pct_region_damaged=("pct_region_damaged", "mean"),
        max_pct_region_damaged=("pct_region_damaged", "max"),
        mean_lesion_ml_involved=("involved_ml", "mean")).reset_index()
    summary["images_involved"] = summary["images_involved"].astype(int)
    summary = summary.sort_values(["images_involved", "mean_pct_region_damaged"],
                                  ascending=False, kind="stable")
    return summary[columns].reset_index(drop=True)
