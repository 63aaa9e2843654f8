"""nnU-Net v1 ``FabiansUNet`` port: exact sizes, v1 state dicts, v1 outputs, seed MSCSA keys (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from stroke_lesion_app.nets import MSCSA
from stroke_lesion_app.nets.residual_unet_v1 import (
    FabiansUNet,
    FabiansUNetMSCSA,
    fabians_unet_kwargs_from_v1_plan,
    infer_v1_bias_layout,
    map_seed_mscsa_state_dict,
)

torch.set_num_threads(1)

DATA = Path(__file__).parents[1] / "data" / "nnunet_v1"

#: v1 FabiansResUNet plan stage of ATLAS (spec §2.3): 128³, 6 stages, pool [1,1,1] + 5×[2,2,2].
ATLAS_STAGE = {
    "conv_kernel_sizes": [[3, 3, 3]] * 6,
    "pool_op_kernel_sizes": [[1, 1, 1]] + [[2, 2, 2]] * 5,
    "num_blocks_encoder": [1, 2, 3, 4, 4, 4],
    "num_blocks_decoder": [1, 1, 1, 1, 1],
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_kwargs(**overrides) -> dict:
    kwargs = {
        "input_channels": 1, "n_stages": 4, "features_per_stage": [4, 8, 16, 16],
        "conv_op": nn.Conv3d, "kernel_sizes": [[3, 3, 3]] * 4,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_blocks_per_stage": [1, 2, 3, 4], "num_classes": 2,
        "n_conv_per_stage_decoder": [1, 1, 1], "norm_op": nn.InstanceNorm3d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"negative_slope": 1e-2, "inplace": True},
    }
    kwargs.update(overrides)
    return kwargs


# --------------------------------------------------------------------------------------------
# exact parameter counts at the ATLAS 128³ plan (measured with v1's own code, see the fixture README)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "layout", "expected"),
    [
        (FabiansUNet, {}, 72_137_888),  # seed fork (the paper's code): conv bias, no head bias
        (FabiansUNetMSCSA, {}, 112_861_728),  # seed FabiansUNet_MSCSA, 28 heads
        (FabiansUNet, {"conv_bias": False, "seg_bias": True}, 72_128_810),  # PyPI nnunet 1.7.1
    ],
)
def test_atlas_plan_parameter_counts(cls, layout, expected):
    with torch.device("meta"):
        net = cls.from_v1_plan(ATLAS_STAGE, input_channels=1, num_classes=2, **layout)
    assert n_params(net) == expected
    assert net.encoder.output_channels == [32, 64, 128, 256, 320, 320]
    assert [len(stage.convs) for stage in net.encoder.stages] == [1, 2, 3, 4, 4, 4]
    if cls is FabiansUNetMSCSA:
        assert net.mscsa.block.csa1.num_heads == 28
        assert n_params(net) - n_params(net.mscsa) == 72_137_888


def test_v1_plan_and_v2_keywords_build_the_same_network():
    v1 = fabians_unet_kwargs_from_v1_plan(ATLAS_STAGE)
    assert v1["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert v1["strides"] == ATLAS_STAGE["pool_op_kernel_sizes"]
    v2 = {  # a v2 plan's arch_kwargs after the Res U-Net edit of training/networks.py
        "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320], "conv_op": nn.Conv3d,
        "kernel_sizes": [[3, 3, 3]] * 6, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
        "n_blocks_per_stage": [1, 2, 3, 4, 4, 4], "n_conv_per_stage_decoder": [1] * 5,
        "conv_bias": True, "norm_op": nn.InstanceNorm3d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": nn.LeakyReLU, "nonlin_kwargs": {"inplace": True},
    }
    with torch.device("meta"):
        a = FabiansUNet.from_v1_plan(ATLAS_STAGE, 1, 2)
        b = FabiansUNet(input_channels=1, num_classes=2, deep_supervision=True, **v2)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }


# --------------------------------------------------------------------------------------------
# forward against nnU-Net v1 itself (fixtures made by scripts/make_fabians_v1_fixtures.py)
# --------------------------------------------------------------------------------------------
def load_fixture(name: str):
    folder = DATA / name
    config = json.loads((folder / "config.json").read_text())
    state = torch.load(folder / "state_dict.pth", weights_only=True)
    io = torch.load(folder / "io.pth", weights_only=True)
    return config, state, io


def build_from_fixture(config: dict, cls):
    extra = {k: config[k] for k in ("mscsa_num_heads", "mscsa_head_dim") if k in config}
    net = cls.from_v1_plan(
        config["stage_plan"], config["input_channels"], config["num_classes"],
        max_num_features=config["max_num_features"], conv_bias=config["conv_bias"],
        seg_bias=config["seg_bias"], **extra,
    )
    assert n_params(net) == config["num_parameters"]
    return net


@pytest.mark.parametrize(
    ("name", "cls", "atol"),
    [("fabians_small", FabiansUNet, 1e-5), ("fabians_mscsa_small", FabiansUNetMSCSA, 1e-4)],
)
def test_reproduces_v1_outputs(name, cls, atol):
    config, state, io = load_fixture(name)
    assert infer_v1_bias_layout(state) == {
        "conv_bias": config["conv_bias"], "seg_bias": config["seg_bias"]
    }
    net = build_from_fixture(config, cls)
    if cls is FabiansUNetMSCSA:
        state = map_seed_mscsa_state_dict(state)
    net.load_state_dict(state, strict=True)  # v1 keys as they are (seed MSCSA keys mapped)
    net.eval()
    expected = io["outputs"]
    with torch.no_grad():
        outputs = net(io["input"])
        assert [o.shape for o in outputs] == [e.shape for e in expected]
        for ours, theirs in zip(outputs, expected):
            torch.testing.assert_close(ours, theirs, atol=atol, rtol=1e-5)
        net.decoder.deep_supervision = False
        torch.testing.assert_close(net(io["input"]), expected[0], atol=atol, rtol=1e-5)
    # the fixture is sensitive: a perturbed bottleneck tensor changes the output (not a conv
    # weight scale: the instance norm behind each conv cancels that)
    with torch.no_grad():
        net.encoder.stages[-1].convs[-1].norm2.bias.add_(0.5)
        assert (net(io["input"]) - expected[0]).abs().max() > 10 * atol


def test_v1_state_dict_layout_is_kept():
    """Our own state dict has exactly v1's keys (including v1's duplicated decoder keys)."""
    config, state, _ = load_fixture("fabians_small")
    net = build_from_fixture(config, FabiansUNet)
    assert list(net.state_dict()) == list(state)
    assert "decoder.stages.0.convs.0.all.0.weight" in state
    assert net.decoder.stages[0].convs[0].all[0] is net.decoder.stages[0].convs[0].conv


# --------------------------------------------------------------------------------------------
# seed MSCSA key mapping
# --------------------------------------------------------------------------------------------
def test_seed_key_mapping_covers_every_mscsa_tensor():
    _, state, _ = load_fixture("fabians_mscsa_small")
    seed_mscsa = [k for k in state if not k.startswith(("encoder.", "decoder."))]
    assert any(k.startswith("mscsa_block.0.attn1.") for k in seed_mscsa)
    assert any(k.startswith("SIM.") for k in seed_mscsa)
    mapped = map_seed_mscsa_state_dict(state)
    assert len(mapped) == len(state)
    assert all(mapped[k] is state[k] for k in state if k.startswith(("encoder.", "decoder.")))
    assert mapped["mscsa.block.csa2.rpe.weight"] is state["mscsa_block.0.attn2.v_conv.1.weight"]
    assert mapped["mscsa.block.intra_ffn.branches.3.fc2.bias"] is state[
        "mscsa_block.0.mlp1.pipelines.3.6.bias"
    ]
    assert mapped["mscsa.injections.4.gate.norm.running_var"] is state[
        "SIM.4.global_act.1.running_var"
    ]
    assert mapped["mscsa.norm.weight"] is state["norm.weight"]


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("out_embed.0.proj.weight", "no counterpart"),  # channel_ratio != 1
        ("SIM.0.local_embedding.0.weight", "no counterpart"),
        ("mscsa_block.1.attn1.norm.weight", "no counterpart"),  # depth 2
        ("mscsa_block.0.attn1.v.weight", "no counterpart"),  # shared-projection ablation
    ],
)
def test_seed_key_mapping_refuses_other_configurations(key, match):
    with pytest.raises(ValueError, match=match):
        map_seed_mscsa_state_dict({key: torch.zeros(1)})


def test_infer_bias_layout_refuses_other_state_dicts():
    with pytest.raises(ValueError, match="Not a FabiansUNet"):
        infer_v1_bias_layout({"conv.weight": torch.zeros(1)})


# --------------------------------------------------------------------------------------------
# shapes, deep supervision, init, arguments
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FabiansUNet, FabiansUNetMSCSA])
def test_deep_supervision_outputs_and_switch(cls):
    extra = {"mscsa_num_heads": 2, "mscsa_head_dim": 4} if cls is FabiansUNetMSCSA else {}
    net = cls(**small_kwargs(deep_supervision=True), **extra).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        outputs = net(x)
        assert [tuple(o.shape) for o in outputs] == [
            (2, 2, 32, 32, 32), (2, 2, 16, 16, 16), (2, 2, 8, 8, 8)
        ]
        net.decoder.deep_supervision = False
        single = net(x)
    assert isinstance(single, torch.Tensor)
    torch.testing.assert_close(single, outputs[0])
    # heads exist either way, so inference networks load checkpoints trained with supervision
    no_ds = cls(**small_kwargs(deep_supervision=False), **extra)
    assert list(no_ds.state_dict()) == list(net.state_dict())


def test_two_dimensional_network():
    kwargs = small_kwargs(
        conv_op=nn.Conv2d, kernel_sizes=[[3, 3]] * 4, strides=[[1, 1]] + [[2, 2]] * 3,
        norm_op=nn.InstanceNorm2d, deep_supervision=True,
    )
    net = FabiansUNetMSCSA(**kwargs, mscsa_num_heads=2, mscsa_head_dim=4).eval()
    with torch.no_grad():
        outputs = net(torch.randn(2, 1, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 32, 32), (2, 2, 16, 16), (2, 2, 8, 8)]


def test_initialize_is_v1_he_and_published_mscsa():
    torch.manual_seed(0)
    net = FabiansUNetMSCSA(**small_kwargs(), mscsa_num_heads=2, mscsa_head_dim=4)
    net.apply(net.initialize)
    first = net.encoder.initial_conv
    assert torch.count_nonzero(first.bias) == 0
    fan_in = first.weight[0].numel()
    expected = (2.0 / ((1 + 1e-4) * fan_in)) ** 0.5  # kaiming_normal_(a=1e-2), fan_in mode
    assert first.weight.std().item() == pytest.approx(expected, rel=0.15)
    tu = net.decoder.tus[0]
    assert tu.weight.std().item() == pytest.approx(
        (2.0 / ((1 + 1e-4) * tu.weight[0].numel())) ** 0.5, rel=0.15
    )
    q = net.mscsa.block.csa1.query.conv  # published: N(0, sqrt(2 / fan_out))
    assert q.weight.std().item() == pytest.approx((2.0 / q.out_channels) ** 0.5, rel=0.15)
    assert isinstance(net.mscsa, MSCSA)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"conv_op": nn.Conv1d}, "conv_op must be"),
        ({"n_stages": 1}, "at least 2"),
        ({"features_per_stage": [4, 8, 16]}, "features_per_stage needs 4 entries"),
        ({"features_per_stage": [4, 8, 0, 16]}, "positive integers"),
        ({"strides": [[1, 1, 1], [2, 2], [2, 2, 2], [2, 2, 2]]}, "strides must be"),
        ({"n_conv_per_stage_decoder": [1, 1, 1, 1]}, "needs 3 entries"),
        ({"num_classes": 0}, "num_classes must be"),
    ],
)
def test_ill_arguments(overrides, match):
    with pytest.raises(ValueError, match=match):
        FabiansUNet(**small_kwargs(**overrides))


def test_v1_plan_missing_entries():
    with pytest.raises(ValueError, match="no 'pool_op_kernel_sizes'"):
        fabians_unet_kwargs_from_v1_plan({"conv_kernel_sizes": [[3, 3, 3]] * 2})
    with pytest.raises(ValueError, match="one entry per stage"):
        fabians_unet_kwargs_from_v1_plan(
            {"conv_kernel_sizes": [[3, 3, 3]] * 2, "pool_op_kernel_sizes": [[1, 1, 1]]}
        )
