"""MSCSA blocks and MSCSA U-Nets: shapes, arguments, exact sizes, keys, init, modes (CPU only)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from stroke_lesion_app.nets import (
    FFN,
    MSCSA,
    CrossScaleAttention,
    DropPath,
    Injection,
    IntraFFN,
    MSCSABlock,
    PlainConvUNetMSCSA,
    ResidualEncoderUNetMSCSA,
)

torch.set_num_threads(1)

#: Encoder outputs of the paper's 128³ nnU-Net plan (spec §1.2).
PAPER_STAGES = [32, 64, 128, 256, 320, 320]
#: Small attention settings for fast CPU tests.
SMALL = {"num_heads": 2, "head_dim": 4}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def skips_for(channels, sizes, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *s, generator=gen) for c, s in zip(channels, sizes)]


# --------------------------------------------------------------------------------------------
# exact parameter counts (spec §4)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("heads", "total", "csa"),
    [(16, 27_744_640, 8_830_880), (28, 40_723_840, 15_320_480)],
)
def test_paper_parameter_counts(heads, total, csa):
    with torch.device("meta"):
        mscsa = MSCSA(3, PAPER_STAGES, num_heads=heads)
    assert n_params(mscsa) == total
    assert n_params(mscsa.block.csa1) == n_params(mscsa.block.csa2) == csa
    # breakdown of spec §4: Intra-FFN 1.86 M, FFN 7.63 M, final BN 2.2 k, injection 0.59 M
    assert n_params(mscsa.block.intra_ffn) == 1_858_560
    assert n_params(mscsa.block.ffn) == 7_633_920
    assert n_params(mscsa.norm) == 2 * 1120
    assert n_params(mscsa.injections) == 588_160


def test_network_adds_exactly_the_mscsa_parameters():
    kwargs = plain_kwargs(n_stages=4, features=[8, 16, 32, 32])
    base = PlainConvUNet(**kwargs)
    with_mscsa = PlainConvUNetMSCSA(**kwargs, mscsa_num_heads=2, mscsa_head_dim=4)
    addon = MSCSA(3, [8, 16, 32, 32], **SMALL)
    assert n_params(with_mscsa) - n_params(base) == n_params(addon)


# --------------------------------------------------------------------------------------------
# block shape table
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [(8, 8, 8), (5, 6, 7), (4, 9), (1, 1, 1)])
def test_block_shapes(spatial):
    dims = len(spatial)
    x = torch.randn(2, 12, *spatial)
    blocks = [
        DropPath(0.5),
        FFN(dims, 12),
        IntraFFN(dims, [4, 8]),
        CrossScaleAttention(dims, 12, **SMALL),
        MSCSABlock(dims, [4, 8], **SMALL),
    ]
    for block in blocks:
        assert block(x).shape == x.shape, type(block).__name__


@pytest.mark.parametrize(
    ("local", "global_"), [((16, 16, 16), (8, 8, 8)), ((4, 4, 4), (8, 8, 8)), ((6, 10), (3, 5))]
)
def test_injection_shape(local, global_):
    inj = Injection(len(local), 6)
    out = inj(torch.randn(2, 6, *local), torch.randn(2, 6, *global_))
    assert out.shape == (2, 6, *local)


MSCSA_CASES = {
    "4-stage 32³": ([8, 16, 32, 32], [(32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3]),
    "non-cubic": ([4, 8, 16, 16], [(16, 48, 40), (16, 24, 20), (8, 12, 10), (4, 6, 5)]),
    "2 stages": ([4, 8], [(8, 8, 8), (4, 4, 4)]),
    "2D": ([4, 8, 16], [(32, 24), (16, 12), (8, 6)]),
}


@pytest.mark.parametrize("case", MSCSA_CASES)
def test_mscsa_shapes_and_working_size(case):
    channels, sizes = MSCSA_CASES[case]
    mscsa = MSCSA(len(sizes[0]), channels, **SMALL)
    seen = {}
    mscsa.block.register_forward_hook(lambda mod, args, out: seen.update(shape=args[0].shape))
    skips = skips_for(channels, sizes)
    out = mscsa(skips)
    assert [o.shape for o in out] == [s.shape for s in skips]
    # all stages resized to the second-to-last stage and concatenated (spec §1.2)
    assert seen["shape"] == (2, sum(channels), *sizes[-2])


# --------------------------------------------------------------------------------------------
# full networks on several nnU-Net plans
# --------------------------------------------------------------------------------------------
def plain_kwargs(n_stages, features, convs=2, dims=3, strides=None, deep_supervision=False):
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
    strides = strides or [[1] * dims] + [[2] * dims] * (n_stages - 1)
    return {
        "input_channels": 1, "n_stages": n_stages, "features_per_stage": features,
        "conv_op": conv, "kernel_sizes": [[3] * dims] * n_stages, "strides": strides,
        "n_conv_per_stage": [convs] * n_stages, "num_classes": 2,
        "n_conv_per_stage_decoder": [convs] * (n_stages - 1), "conv_bias": True,
        "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "nonlin": nn.LeakyReLU, "nonlin_kwargs": {"inplace": True},
        "deep_supervision": deep_supervision,
    }


def residual_kwargs(**kwargs):
    kwargs = plain_kwargs(**kwargs)
    n = kwargs.pop("n_conv_per_stage")
    kwargs["n_blocks_per_stage"] = [1, 2, 3, 4, 4, 4][: len(n)]
    kwargs["n_conv_per_stage_decoder"] = [1] * (len(n) - 1)
    return kwargs


PLANS = {
    "4-stage 32³, 2 convs": (
        PlainConvUNetMSCSA, plain_kwargs(4, [8, 16, 32, 32]), (32, 32, 32)),
    "6-stage 64³, 3 convs": (
        PlainConvUNetMSCSA, plain_kwargs(6, [4, 8, 8, 16, 16, 16], convs=3), (64, 64, 64)),
    "non-cubic, anisotropic strides": (
        PlainConvUNetMSCSA,
        plain_kwargs(4, [4, 8, 16, 16], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]),
        (16, 48, 40),
    ),
    "residual 5-stage 32³": (
        ResidualEncoderUNetMSCSA, residual_kwargs(n_stages=5, features=[4, 8, 16, 16, 16]),
        (32, 32, 32),
    ),
    "2D 4-stage": (PlainConvUNetMSCSA, plain_kwargs(4, [4, 8, 16, 16], dims=2), (32, 24)),
}


@pytest.mark.parametrize("deep_supervision", [False, True])
@pytest.mark.parametrize("plan", PLANS)
def test_network_output_shapes(plan, deep_supervision):
    cls, kwargs, patch = PLANS[plan]
    kwargs = {**kwargs, "deep_supervision": deep_supervision}
    net = cls(**kwargs, mscsa_num_heads=2, mscsa_head_dim=4)
    net.apply(net.initialize)
    assert net.decoder.deep_supervision is deep_supervision
    with torch.no_grad():
        out = net(torch.randn(2, 1, *patch))
    if not deep_supervision:
        assert out.shape == (2, 2, *patch)
        return
    assert isinstance(out, list) and len(out) == kwargs["n_stages"] - 1
    size = list(patch)
    for level, o in enumerate(out):
        assert o.shape == (2, 2, *size), level
        size = [s // st for s, st in zip(size, kwargs["strides"][level + 1])]


def test_network_deep_supervision_switch():
    net = PlainConvUNetMSCSA(**plain_kwargs(4, [4, 8, 8, 8], deep_supervision=True),
                             mscsa_num_heads=2, mscsa_head_dim=4).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert isinstance(net(x), list)
        net.decoder.deep_supervision = False  # what nnUNetTrainer.set_deep_supervision_enabled does
        assert net(x).shape == (1, 2, 16, 16, 16)


def test_network_uses_encoder_channels_and_published_heads():
    net = PlainConvUNetMSCSA(**plain_kwargs(4, [4, 8, 8, 8]))
    res = ResidualEncoderUNetMSCSA(**residual_kwargs(n_stages=4, features=[4, 8, 8, 8]))
    assert net.mscsa.in_channels == tuple(net.encoder.output_channels) == (4, 8, 8, 8)
    assert net.mscsa.block.csa1.num_heads == 16
    assert res.mscsa.block.csa1.num_heads == 28
    assert net.mscsa.block.csa1.head_dim == 40 and net.mscsa.block.csa1.value_dim == 80


# --------------------------------------------------------------------------------------------
# ill arguments
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: MSCSA(1, [4, 8]), "spatial_dims must be 2 or 3, got 1"),
        (lambda: MSCSA(3, [4]), r"at least 2 .* got \(4,\)"),
        (lambda: MSCSA(3, [4, 0]), r"got \(4, 0\)"),
        (lambda: MSCSA(3, "48"), "got '48'"),
        (lambda: MSCSA(3, [4, 8], num_heads=0), "num_heads .* got 0"),
        (lambda: MSCSA(3, [4, 8], head_dim=2.5), "head_dim .* got 2.5"),
        (lambda: MSCSA(3, [4, 8], value_ratio=0.3, head_dim=4), r"value_ratio=0.3 .* 1.2"),
        (lambda: MSCSA(3, [4, 8], mlp_ratio=-1), "mlp_ratio .* got -1"),
        (lambda: MSCSA(3, [4, 8], drop_path_rate=1.0), "drop_path_rate .* got 1.0"),
        (lambda: MSCSA(3, [4, 8], dropout=-0.1), r"dropout .* got -0.1"),
        (lambda: DropPath(1.5), "drop_prob .* got 1.5"),
        (lambda: FFN(3, 5, mlp_ratio=1.5), r"mlp_ratio=1.5 .* 7.5"),
        (lambda: CrossScaleAttention(4, 8), "spatial_dims must be 2 or 3, got 4"),
        (lambda: Injection(3, 0), "in_channels .* got 0"),
        (lambda: MSCSABlock(3, [4, 8], drop_path_rates=(0.1,)), r"got \(0.1,\)"),
        (
            lambda: PlainConvUNetMSCSA(**{**plain_kwargs(2, [4, 8], dims=2), "conv_op": nn.Conv1d}),
            "conv_op must be .*Conv1d",
        ),
    ],
)
def test_ill_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_forward_rejects_wrong_skips():
    mscsa = MSCSA(3, [4, 8], **SMALL)
    good = skips_for([4, 8], [(8, 8, 8), (4, 4, 4)])
    with pytest.raises(ValueError, match="built for 2 encoder outputs, got 1"):
        mscsa(good[:1])
    with pytest.raises(ValueError, match=r"channels \(4, 8\)"):
        mscsa(skips_for([4, 6], [(8, 8, 8), (4, 4, 4)]))
    with pytest.raises(ValueError, match="3D skips"):
        mscsa([s[..., 0] for s in good])


# --------------------------------------------------------------------------------------------
# the maths, against the formulas of the spec
# --------------------------------------------------------------------------------------------
def test_cross_scale_attention_matches_formula():
    """Joint softmax over the keys of all three scales, heads = channel blocks (spec §1.3)."""
    torch.manual_seed(0)
    csa = CrossScaleAttention(3, 6, num_heads=2, head_dim=3, value_ratio=2).eval()
    for m in csa.modules():  # non-trivial BatchNorm running statistics
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 6, 6, 5, 4)
    b, h, d, dv = 2, 2, 3, 6

    xn = csa.norm(x)
    scales = [xn, csa.downsamples[0](xn), csa.downsamples[1](xn)]
    assert [s.shape[2:] for s in scales] == [(6, 5, 4), (3, 3, 2), (2, 2, 2)]
    q = csa.query(xn).reshape(b, h, d, -1).transpose(2, 3)
    k = torch.cat([p(s).reshape(b, h, d, -1) for p, s in zip(csa.keys, scales)], -1)
    v1 = csa.values[0](xn)
    v = torch.cat([p(s).reshape(b, h, dv, -1) for p, s in zip(csa.values, scales)], -1)
    attn = torch.softmax(q @ k * d**-0.5, dim=-1)
    assert attn.shape == (b, h, 120, 120 + 18 + 8)
    o = (attn @ v.transpose(2, 3)).transpose(2, 3).reshape(b, h * dv, 6, 5, 4)
    o = o + csa.rpe(F.hardswish(v1))
    expected = csa.proj.conv(F.hardswish(csa.proj.norm(o)))
    torch.testing.assert_close(csa(x), expected, rtol=1e-5, atol=1e-5)


def test_injection_matches_formula():
    torch.manual_seed(0)
    inj = Injection(3, 4).eval()
    x_local, x_global = torch.randn(2, 4, 8, 8, 8), torch.randn(2, 4, 4, 4, 4)
    gate = F.relu6(inj.gate(x_global) + 3) / 6  # hard sigmoid before the upsampling
    up = {"size": (8, 8, 8), "mode": "trilinear", "align_corners": False}
    expected = x_local * F.interpolate(gate, **up) + F.interpolate(inj.embed(x_global), **up)
    torch.testing.assert_close(inj(x_local, x_global), expected)


def test_block_order_and_residuals():
    """x += csa1; x += intra_ffn; x += csa2; x += ffn (spec §1.4)."""
    torch.manual_seed(0)
    block = MSCSABlock(3, [4, 8], **SMALL).eval()
    x = torch.randn(2, 12, 4, 4, 4)
    y = x + block.csa1(x)
    y = y + block.intra_ffn(y)
    y = y + block.csa2(y)
    y = y + block.ffn(y)
    torch.testing.assert_close(block(x), y)
    assert block.drop_path1.drop_prob == 0.0
    assert block.drop_path2.drop_prob == pytest.approx(0.1)


def test_intra_ffn_keeps_stage_groups_apart():
    ffn = IntraFFN(3, [4, 8]).eval()
    x = torch.randn(1, 12, 3, 3, 3)
    y = x.clone()
    y[:, 4:] += 1.0  # change only the second group
    torch.testing.assert_close(ffn(x)[:, :4], ffn(y)[:, :4])


# --------------------------------------------------------------------------------------------
# gradients, modes, init, state_dict keys
# --------------------------------------------------------------------------------------------
def test_gradients_reach_every_mscsa_parameter():
    torch.manual_seed(0)
    net = PlainConvUNetMSCSA(**plain_kwargs(4, [4, 8, 8, 8]), mscsa_num_heads=2,
                             mscsa_head_dim=4, mscsa_drop_path_rate=0.0)
    net.apply(net.initialize)
    net(torch.randn(2, 1, 16, 16, 16)).square().mean().backward()
    missing = [n for n, p in net.mscsa.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_drop_path_per_sample_scaling():
    torch.manual_seed(0)
    dp = DropPath(0.5)
    x = torch.ones(64, 3, 2, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # dropped, or scaled by 1 / keep_prob
    assert (per_sample == per_sample[:, :1]).all()  # whole samples at once
    assert torch.equal(dp.eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_eval_is_deterministic_and_train_is_stochastic():
    mscsa = MSCSA(3, [4, 8], **SMALL, drop_path_rate=0.5)
    skips = skips_for([4, 8], [(8, 8, 8), (4, 4, 4)], batch=8)
    mscsa.eval()
    with torch.no_grad():
        first, second = mscsa(skips), mscsa(skips)
    assert all(torch.equal(a, b) for a, b in zip(first, second))

    mscsa.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = mscsa(skips)
        torch.manual_seed(1)
        b = mscsa(skips)
        torch.manual_seed(2)
        c = mscsa(skips)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # DropPath is active in training


def _std_close(weight, std, rel=0.1):
    return abs(weight.detach().std().item() - std) < rel * std


def test_initialisation_backbone_he_mscsa_published():
    torch.manual_seed(0)
    net = PlainConvUNetMSCSA(**plain_kwargs(4, [16, 32, 64, 64]))
    net.apply(net.initialize)  # what nnU-Net's get_network_from_plans does
    csa = net.mscsa.block.csa1
    values = csa.values[0].conv  # 1×1, out 1280: fan_out 1280
    assert _std_close(values.weight, math.sqrt(2 / 1280))
    assert _std_close(csa.downsamples[1].conv.weight, math.sqrt(2 / 125))  # depth-wise k5
    assert _std_close(net.mscsa.block.ffn.dwconv.weight, math.sqrt(2 / 27))
    for m in net.mscsa.modules():
        if isinstance(m, nn.Conv3d) and m.bias is not None:
            assert not m.bias.any()
        if isinstance(m, nn.BatchNorm3d):
            assert (m.weight == 1).all() and not m.bias.any()
    enc = net.encoder.stages[2][0].convs[1].conv  # 64 -> 64, k3: He fan_in
    assert _std_close(enc.weight, math.sqrt(2 / (1 + 1e-4) / (64 * 27)))

    res = ResidualEncoderUNetMSCSA(**residual_kwargs(n_stages=4, features=[4, 8, 16, 16]))
    res.apply(res.initialize)
    block = res.encoder.stages[1].blocks[0]
    assert not block.conv2.norm.weight.any()  # nnU-Net's zero-init of the last BN per block
    assert (res.mscsa.injections[0].gate.norm.weight == 1).all()


FROZEN_KEYS = [
    "block.csa1.norm.weight",
    "block.csa1.query.conv.weight",
    "block.csa1.query.norm.running_mean",
    "block.csa1.downsamples.0.conv.weight",
    "block.csa1.downsamples.1.norm.bias",
    "block.csa1.keys.2.conv.weight",
    "block.csa1.values.0.norm.weight",
    "block.csa1.rpe.weight",
    "block.csa1.rpe.bias",
    "block.csa1.proj.norm.weight",
    "block.csa1.proj.conv.weight",
    "block.csa1.proj.conv.bias",
    "block.intra_ffn.branches.0.norm.weight",
    "block.intra_ffn.branches.5.fc1.weight",
    "block.intra_ffn.branches.5.hidden_norm.bias",
    "block.intra_ffn.branches.5.dwconv.weight",
    "block.intra_ffn.branches.5.fc2.bias",
    "block.csa2.values.2.conv.weight",
    "block.ffn.fc1.bias",
    "block.ffn.fc2.weight",
    "norm.weight",
    "norm.running_var",
    "injections.0.gate.conv.weight",
    "injections.0.gate.norm.weight",
    "injections.5.embed.conv.weight",
    "injections.5.embed.norm.num_batches_tracked",
]


def test_state_dict_keys_are_frozen():
    with torch.device("meta"):
        keys = set(MSCSA(3, PAPER_STAGES).state_dict())
    assert set(FROZEN_KEYS) <= keys
    assert len(keys) == 325  # CSA 2 x 68, Intra-FFN 6 x 16, FFN 16, norm 5, injections 6 x 12
    # bias-free projections (qkv_bias=False, spec §1.1)
    for name in ("query", "keys.0", "values.1", "downsamples.0"):
        assert f"block.csa1.{name}.conv.bias" not in keys
    assert "injections.0.gate.conv.bias" not in keys


def test_network_state_dict_is_backbone_plus_mscsa():
    kwargs = plain_kwargs(4, [4, 8, 8, 8])
    net = PlainConvUNetMSCSA(**kwargs, mscsa_num_heads=2, mscsa_head_dim=4)
    base_keys = set(PlainConvUNet(**kwargs).state_dict())
    keys = set(net.state_dict())
    assert base_keys <= keys
    assert all(k.startswith("mscsa.") for k in keys - base_keys)
    assert "mscsa.block.csa1.query.conv.weight" in keys

    res_kwargs = residual_kwargs(n_stages=4, features=[4, 8, 8, 8])
    res_keys = set(ResidualEncoderUNetMSCSA(**res_kwargs, mscsa_num_heads=2,
                                            mscsa_head_dim=4).state_dict())
    assert set(ResidualEncoderUNet(**res_kwargs).state_dict()) <= res_keys
