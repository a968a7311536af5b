import math

import pytest
import torch
from torch import nn

from lth_tune.models import MODELS, build_model, count_parameters, prunable_layers

INPUTS = {
    "mlp": (1, 28, 28),
    "conv1d": (1, 40),
    "lenet_300_100": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "resnet20": (3, 32, 32),
    "vgg16": (3, 32, 32),
    "resnet1d": (1, 40),
}


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("resnet20", {}, 272_474),
        ("vgg16", {}, 14_728_266),
        ("lenet_300_100", {}, 266_610),
        ("lenet5", {}, 61_706),
        ("conv1d", {}, 5_210),  # mnist1d ConvBase: 150 + 1900 + 1900 + 1260
        # stem 48+32, blocks 1600 / 5312 (with its k1 shortcut) / 20864, fc 650
        ("resnet1d", {}, 80 + 1600 + 5312 + 20864 + 650),
        # no BN (convs get biases), no shortcuts: 64 + 1568 + 4672 + 18560 + 650
        ("resnet1d", {"batchnorm": False, "residual": False}, 64 + 1568 + 4672 + 18560 + 650),
        ("mlp", {}, 784 * 100 + 100 + 100 * 100 + 100 + 1010),
        ("mlp", {"widths": [1000, 1000, 1000]}, 785_000 + 2 * 1_001_000 + 10_010),  # paper 004 MNIST MLP
    ],
)
def test_parameter_counts(name, kwargs, expected):
    model = build_model(name, input_shape=INPUTS[name], num_classes=10, **kwargs)
    assert count_parameters(model) == expected


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_output_shapes_and_classifier_name(name, num_classes):
    torch.manual_seed(0)
    model = build_model(name, input_shape=INPUTS[name], num_classes=num_classes)
    for training in (True, False):
        model.train(training)
        out = model(torch.randn(3, *INPUTS[name]))
        assert out.shape == (3, num_classes)
        assert torch.isfinite(out).all()
    fc = dict(model.named_modules())["fc"]
    assert isinstance(fc, nn.Linear) and fc.out_features == num_classes
    assert prunable_layers(model)[-1][0] == "fc"


def test_cifar100_heads():
    for name in ("resnet20", "vgg16"):
        model = build_model(name, input_shape=(3, 32, 32), num_classes=100)
        assert model.fc.out_features == 100
    assert (
        count_parameters(build_model("resnet20", input_shape=(3, 32, 32), num_classes=100))
        == 272_474 + 90 * 65
    )


@pytest.mark.parametrize(
    "name, shape, kwargs",
    [
        ("resnet20", (3, 32, 32), {"width": 4}),
        ("vgg16", (3, 32, 32), {"width": 8}),
        ("conv1d", (1, 40), {"width": 10}),
        ("mlp", (1, 40), {"widths": [7]}),
        ("resnet20", (1, 28, 28), {"width": 4}),  # grayscale input works too
    ],
)
def test_width_scaling(name, shape, kwargs):
    model = build_model(name, input_shape=shape, num_classes=10, **kwargs)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_width_changes_channels():
    r = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=4)
    assert r.conv.out_channels == 4 and r.fc.in_features == 16
    v = build_model("vgg16", input_shape=(3, 32, 32), num_classes=10, width=8)
    assert v.layers[0].conv.out_channels == 8 and v.fc.in_features == 64
    c = build_model("conv1d", input_shape=(1, 40), num_classes=10, width=10)
    assert c.conv1.out_channels == 10 and c.fc.in_features == 50


def test_conv1d_accepts_flat_inputs():
    model = build_model("conv1d", input_shape=(1, 40), num_classes=10)
    x = torch.randn(4, 1, 40)
    torch.testing.assert_close(model(x), model(x.squeeze(1)))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_model("resnet56", input_shape=(3, 32, 32), num_classes=10)
    for name in MODELS:
        assert name in str(err.value)


def test_unused_size_argument_is_rejected():
    with pytest.raises(ValueError, match="widths"):
        build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, widths=[10])
    with pytest.raises(ValueError, match="width"):
        build_model("lenet5", input_shape=(1, 28, 28), num_classes=10, width=4)


def test_prunable_layers():
    r = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=4)
    layers = prunable_layers(r)
    names = [n for n, _ in layers]
    assert len(layers) == 1 + 18 + 2 + 1  # stem, block convs, two 1x1 shortcuts, fc
    assert names[0] == "conv" and "blocks.3.shortcut.0" in names and names[-1] == "fc"
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for _, m in layers)
    v = build_model("vgg16", input_shape=(3, 32, 32), num_classes=10, width=8)
    assert len(prunable_layers(v)) == 14
    assert [n for n, _ in prunable_layers(build_model("conv1d", input_shape=(1, 40), num_classes=10))] == [
        "conv1",
        "conv2",
        "conv3",
        "fc",
    ]
    assert [n for n, _ in prunable_layers(build_model("mlp", input_shape=(1, 40), num_classes=10))] == [
        "fc_layers.0",
        "fc_layers.1",
        "fc",
    ]


def test_resnet_structure_matches_openlth():
    r = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10)
    assert len(r.blocks) == 9
    assert [b.conv1.stride[0] for b in r.blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert [b.conv2.out_channels for b in r.blocks] == [16] * 3 + [32] * 3 + [64] * 3
    assert [len(b.shortcut) for b in r.blocks] == [0, 0, 0, 2, 0, 0, 2, 0, 0]
    assert all(m.bias is None for m in r.modules() if isinstance(m, nn.Conv2d))


def test_openlth_initialisation():
    torch.manual_seed(0)
    model = build_model("lenet_300_100", input_shape=(1, 28, 28), num_classes=10)
    w = model.fc_layers[0].weight
    assert abs(w.std().item() / math.sqrt(2 / 784) - 1) < 0.02  # Kaiming normal, fan_in, ReLU gain
    r = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=4)
    for m in r.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert ((m.weight >= 0) & (m.weight < 1)).all() and (m.bias == 0).all()


def test_seeded_builds_are_identical():
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=4).state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])
