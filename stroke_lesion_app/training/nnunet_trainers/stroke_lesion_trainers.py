"""nnU-Net v2 trainers of the paper's schemes, with and without MSCSA
(``docs/mscsa-spec.md`` §2.2-§2.6).

This folder is listed in ``nnUNet_extTrainer`` (see ``stroke_lesion_app.core.nnunet_lookup``);
nnU-Net imports this module as the top-level module ``stroke_lesion_trainers``, so it uses
absolute imports only. Class names are frozen: they are stored in checkpoints and result folder
names.

=============================  ==============================================================
trainer                        what changes against ``nnUNetTrainer``
=============================  ==============================================================
StrokeTrainerDefault           nothing (Dice + CE, 1000 epochs, SGD 0.01 / 0.99 Nesterov)
StrokeTrainerDefaultMSCSA      + MSCSA add-on, 16 heads
StrokeTrainerDTK10             Dice + top-10 % CE (nnU-Net's TopK machinery), 800 epochs
StrokeTrainerDTK10MSCSA        + MSCSA add-on, 16 heads
StrokeTrainerResUNet           v1 Res U-Net backbone (our port of v1's ``FabiansUNet``:
                               residual encoder, 1-2-3-4-4-4 blocks), DA3 augmentation
StrokeTrainerResUNetMSCSA      + MSCSA add-on, 28 heads (seed's ``FabiansUNet_MSCSA``)
=============================  ==============================================================
"""

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.loss.nnUNetTrainerTopkLoss import (
    nnUNetTrainerDiceTopK10Loss,
)
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from stroke_lesion_app.training.augmentation import da3_training_transforms
from stroke_lesion_app.training.networks import build_network

__all__ = [
    "StrokeTrainerDTK10",
    "StrokeTrainerDTK10MSCSA",
    "StrokeTrainerDefault",
    "StrokeTrainerDefaultMSCSA",
    "StrokeTrainerResUNet",
    "StrokeTrainerResUNetMSCSA",
]

#: Published MSCSA heads per backbone (spec §1.1, §1.8).
PLAIN_HEADS = 16
RESIDUAL_HEADS = 28

_CUDA = torch.device("cuda")  # nnU-Net's default device argument


class StrokeTrainerDefault(nnUNetTrainer):
    """"Default" scheme: nnU-Net v2's default trainer under our frozen name."""


class StrokeTrainerDefaultMSCSA(StrokeTrainerDefault):
    """"Default" scheme with the MSCSA add-on (16 heads) on the plan's U-Net."""

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """The plan's U-Net with the MSCSA add-on (16 heads); see ``networks.build_network``."""
        return build_network(
            configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision, mscsa_num_heads=PLAIN_HEADS,
        )


class StrokeTrainerDTK10(nnUNetTrainerDiceTopK10Loss):
    """"DTK10" scheme: Dice + CE over the worst 10 % of voxels, 800 epochs (spec §2.5)."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = _CUDA,
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 800


class StrokeTrainerDTK10MSCSA(StrokeTrainerDTK10):
    """"DTK10" scheme with the MSCSA add-on (16 heads) on the plan's U-Net."""

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """The plan's U-Net with the MSCSA add-on (16 heads); see ``networks.build_network``."""
        return build_network(
            configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision, mscsa_num_heads=PLAIN_HEADS,
        )


class StrokeTrainerResUNet(nnUNetTrainer):
    """"Res U-Net" scheme: v1 ``FabiansUNet`` port from the plan, DA3 augmentation (§2.6)."""

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """v1 ``FabiansUNet`` (1-2-3-4-4-4 residual blocks) from the plan.

        See ``networks.build_network``; with ``enable_deep_supervision`` the network returns
        ``n_stages - 1`` logits, full resolution first (the trainer's deep-supervision scales),
        otherwise one tensor.
        """
        return build_network(
            configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision, residual_encoder=True,
        )

    get_training_transforms = staticmethod(da3_training_transforms)


class StrokeTrainerResUNetMSCSA(StrokeTrainerResUNet):
    """"Res U-Net" scheme with the MSCSA add-on (28 heads)."""

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """v1 ``FabiansUNet`` port with the MSCSA add-on (28 heads); see ``networks.build_network``."""
        return build_network(
            configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision, residual_encoder=True, mscsa_num_heads=RESIDUAL_HEADS,
        )
