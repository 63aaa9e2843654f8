"""Label atlases for regional lesion load: parsed once from ``--atlas NAME=IMAGE[:LABELS]`` (or
found in TemplateFlow) into :class:`Atlas`, and passed as that object down to the measures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Atlas"]


@dataclass(frozen=True)
class Atlas:
    """A label atlas in MNI152NLin2009aSym space.

    Attributes
    ----------
    name : str
        A Python identifier; the prefix of the atlas' columns in the lesion-load tables.
    image : pathlib.Path
        Label image (integer labels; any grid in template space).
    labels : pathlib.Path or None
        Label table: TSV with ``index`` and ``name`` columns, or an FSL/MRIcron ``.txt``;
        ``None``: the labels are named by their numbers.
    """

    name: str
    image: Path
    labels: Path | None = None

    @classmethod
    def parse(cls, value: str, *, check_files: bool = True) -> Atlas:
        """Parse ``NAME=IMAGE[:LABELS]`` (the ``--atlas`` option).

        Raises
        ------
        ValueError
            A malformed value, a name that is not an identifier, or (with ``check_files``) an
            image or label table that does not exist; one line naming the fix.

        Examples
        --------
        >>> Atlas.parse("AAL=/atlases/aal.nii.gz:/atlases/aal.txt", check_files=False)
        Atlas(name='AAL', image=PosixPath('/atlases/aal.nii.gz'), \\
labels=PosixPath('/atlases/aal.txt'))
        >>> Atlas.parse("AAL=/atlases/aal.nii.gz", check_files=False).to_option()
        'AAL=/atlases/aal.nii.gz'
        """
        name, separator, rest = value.partition("=")
        image, _, labels = rest.partition(":")
        if not separator or not name.isidentifier() or not image:
            raise ValueError(f"{value!r}: write NAME=IMAGE[:LABELS.tsv], e.g. "
                             "AAL=/atlases/aal.nii.gz:/atlases/aal.tsv")
        atlas = cls(name, Path(image), Path(labels) if labels else None)
        if check_files:
            for path in filter(None, (atlas.image, atlas.labels)):
                if not path.is_file():
                    raise ValueError(f"{path}: file not found (in {value!r}).")
        return atlas

    def to_option(self) -> str:
        """Back to ``NAME=IMAGE[:LABELS]`` (the settings dump, the command line)."""
        return f"{self.name}={self.image}" + (f":{self.labels}" if self.labels else "")
