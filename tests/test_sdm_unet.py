"""The SDM's SPADE group norm and UNet at both sizes."""

import pytest
import torch

from echo_vlsm.sdm.unet import (
    UNET_SIZES,
    SPADEGroupNorm,
    build_unet,
    count_parameters,
    one_hot,
    unet_spec,
)


def _randomize(net):
    """Give the zero-initialised convs (residual outputs, attention and output projections)
    weights, so that every input's effect reaches the output of an untrained net."""
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)
    return net


def _maps(b, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (b, s, s), generator=g)


def test_spade_group_norm_modulates_per_pixel_from_the_map():
    torch.manual_seed(0)
    spade = SPADEGroupNorm(16, 5, hidden=8, groups=4)
    assert not any(p is not None for p in (spade.norm.weight, spade.norm.bias))  # no affine
    x = torch.randn(2, 16, 8, 8)
    seg_a = one_hot(_maps(2, 4, 0))  # a coarser map is resized (nearest) to x
    seg_b = one_hot(_maps(2, 4, 1))
    ya, yb = spade(x, seg_a), spade(x, seg_b)
    assert ya.shape == x.shape
    assert not torch.allclose(ya, yb)
    with torch.no_grad():  # zero gamma/beta convs -> plain normalisation
        for conv in (spade.gamma, spade.beta):
            conv.weight.zero_()
            conv.bias.zero_()
    expected = torch.nn.functional.group_norm(x, 4)
    assert torch.allclose(spade(x, seg_a), expected, atol=1e-5)


def test_tiny_unet_shapes_and_conditioning():
    torch.manual_seed(0)
    net = build_unet("tiny")
    n = count_parameters(net)
    print(f"tiny SDM UNet: {n / 1e6:.2f} M parameters")
    assert 0.5e6 < n < 10e6
    _randomize(net)
    x = torch.randn(2, 1, 64, 64)
    t = torch.tensor([10, 900])
    seg = one_hot(_maps(2, 64))
    out = net(x, t, seg)
    assert out.shape == (2, 1, 64, 64)
    assert not torch.allclose(out, net(x, t, one_hot(_maps(2, 64, 5))))
    assert not torch.allclose(out, net(x, torch.tensor([500, 20]), seg))


def test_label_map_enters_only_middle_and_decoder():
    net = build_unet("tiny")
    seen = {}
    for i, level in enumerate(net.down):
        level.res[0].register_forward_hook(lambda m, a, o, i=i: seen.setdefault(i, []).append(o))
    x, t = torch.randn(1, 1, 64, 64), torch.tensor([100])
    net(x, t, one_hot(_maps(1, 64, 0)))
    net(x, t, torch.zeros(1, 5, 64, 64))  # the "no condition" map of guidance
    for outs in seen.values():
        assert torch.equal(outs[0], outs[1])
    spade_blocks = [m for m in net.modules() if isinstance(m, SPADEGroupNorm)]
    expected = 2 * (2 + len(net.spec.channel_mult) * (net.spec.num_res_blocks + 1))
    assert len(spade_blocks) == expected


def test_view_phase_embedding_changes_the_output():
    torch.manual_seed(0)
    net = _randomize(build_unet("tiny", view_phase_classes=4))
    x, t, seg = torch.randn(2, 1, 64, 64), torch.tensor([300, 300]), one_hot(_maps(2, 64))
    a = net(x, t, seg, torch.tensor([0, 1]))
    b = net(x, t, seg, torch.tensor([2, 3]))
    assert not torch.allclose(a, b)
    assert net(x, t, seg).shape == a.shape  # None -> the null index


def test_paper_unet_is_the_studys_size():
    spec = UNET_SIZES["paper"]
    assert (spec.image_size, spec.channels, spec.channel_mult) == (256, 256, (1, 1, 2, 2, 4, 4))
    assert spec.attention_resolutions == (32, 16, 8) and spec.head_channels == 64
    assert spec.spade_hidden == 128 and spec.num_res_blocks == 2
    with torch.device("meta"):
        net = build_unet("paper")
        n = count_parameters(net)
        print(f"paper SDM UNet: {n / 1e6:.1f} M parameters")
        assert 400e6 < n < 800e6
        out = net(torch.empty(1, 1, 256, 256), torch.zeros(1), torch.empty(1, 5, 256, 256))
        assert out.shape == (1, 1, 256, 256)


def test_bad_inputs_say_what_is_expected():
    net = build_unet("tiny")
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 1, 60, 60), torch.zeros(1), torch.zeros(1, 5, 60, 60))
    with pytest.raises(ValueError, match="one-hot"):
        net(torch.randn(1, 1, 64, 64), torch.zeros(1), torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="unknown SDM size"):
        unet_spec("huge")
    with pytest.raises(ValueError, match="outside 0..4"):
        one_hot(torch.full((1, 4, 4), 5))
