"""Training with nnU-Net v2: our trainers, their discovery, networks and augmentation.

Importing this package does not import nnU-Net; ``stroke_lesion_app.training.networks``,
``.augmentation`` and the trainer modules do.
"""

from stroke_lesion_app.core.nnunet_lookup import (
    TRAINER_ENV_VAR,
    TRAINER_NAMES,
    ensure_trainer_discovery,
    find_trainer_class,
    trainer_folder,
)

__all__ = [
    "TRAINER_ENV_VAR",
    "TRAINER_NAMES",
    "ensure_trainer_discovery",
    "find_trainer_class",
    "trainer_folder",
]
