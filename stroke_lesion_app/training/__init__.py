"""Training with nnU-Net v2: our trainers (``nnunet_trainers/``), networks, augmentation,
conversion, splits, self-training, evaluation and packaging.

Importing this package does not import nnU-Net; ``stroke_lesion_app.training.networks``,
``.augmentation`` and the trainer modules do. Trainer lookup by name (which the app's
ensemble predictor needs too) is :mod:`stroke_lesion_app.core.nnunet_lookup`.
"""
