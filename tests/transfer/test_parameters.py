"""Parameter transfer: exact copies, channel selection along the graph, depth mapping, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.errors import TransferError
from distil.models import create_model
from distil.models.resnet_cifar import CifarResNet
from distil.transfer import auto_layer_map, parse_layer_map, select_indices, transfer_parameters

X8 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _largenet(width: float = 1.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("largenet", num_classes=10, in_channels=1, image_size=8, width=width).eval()


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def test_select_indices() -> None:
    assert select_indices(8, 4, "first") == [0, 1, 2, 3]
    assert select_indices(8, 4, "uniform") == [0, 2, 4, 6]
    assert select_indices(6, 3, "uniform") == [0, 2, 4]
    assert select_indices(5, 2, "l1", torch.tensor([1.0, 5.0, 0.0, 3.0, 2.0])) == [1, 3]
    with pytest.raises(TransferError, match="wider"):
        select_indices(4, 5, "first")
    with pytest.raises(TransferError, match="Did you mean 'uniform'"):
        select_indices(4, 2, "unifrom")


def test_exact_transfer_copies_matching_tensors_bit_for_bit() -> None:
    teacher, student = _largenet(seed=0), _largenet(seed=1)
    report = transfer_parameters(teacher, student)
    assert report.counts() == {"exact": 8}
    for k, v in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[k], v), k
    assert report.by_student("fc1.weight").teacher_tensor == "fc1.weight"


def test_first_k_selection_equals_slicing_by_hand() -> None:
    teacher, student = _largenet(), _largenet(width=0.5, seed=1)
    report = transfer_parameters(teacher, student, selection="first", example_inputs=X8)
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["conv1.weight"], t["conv1.weight"][:32])
    assert torch.equal(s["conv1.bias"], t["conv1.bias"][:32])
    assert torch.equal(s["conv2.weight"], t["conv2.weight"][:64, :32])
    # Flatten into fc1: the input features are (channel, y, x); the kept channels keep all positions.
    fc1 = t["fc1.weight"].reshape(512, 128, 2, 2)[:256, :64].reshape(256, -1)
    assert torch.equal(s["fc1.weight"], fc1)
    assert torch.equal(s["fc2.weight"], t["fc2.weight"][:, :256])
    assert torch.equal(s["fc2.bias"], t["fc2.bias"])
    assert report.by_student("fc1.weight").method == "selected"
    assert "64/128 in-channels" in report.by_student("fc1.weight").reason
    assert report.by_student("fc2.bias").method == "exact"


def test_uniform_selection_takes_evenly_spaced_channels() -> None:
    teacher, student = _largenet(), _largenet(width=0.25, seed=1)
    transfer_parameters(teacher, student, selection="uniform", example_inputs=X8)
    t, s = teacher.state_dict(), student.state_dict()
    keep1, keep2 = list(range(0, 64, 4)), list(range(0, 128, 4))
    assert torch.equal(s["conv2.weight"], t["conv2.weight"][keep2][:, keep1])


def test_l1_selection_keeps_top_channels_and_next_layer_follows() -> None:
    """A teacher whose dropped channels have no effect must compute exactly what its student computes."""
    teacher = _largenet()
    g = torch.Generator().manual_seed(3)
    keeps = {}
    with torch.no_grad():
        for name, n, k in (("conv1", 64, 32), ("conv2", 128, 64), ("fc1", 512, 256)):
            keep = sorted(torch.randperm(n, generator=g)[:k].tolist())
            drop = sorted(set(range(n)) - set(keep))
            layer = getattr(teacher, name)
            layer.weight[drop] = 0.0  # dropped units output exactly 0 -> ReLU 0 -> no effect downstream
            layer.bias[drop] = 0.0
            keeps[name] = keep
    student = _largenet(width=0.5, seed=1)
    report = transfer_parameters(teacher, student, selection="l1", example_inputs=X8)
    t = teacher.state_dict()
    assert torch.equal(student.conv1.weight, t["conv1.weight"][keeps["conv1"]])
    assert torch.equal(student.conv2.weight, t["conv2.weight"][keeps["conv2"]][:, keeps["conv1"]])
    assert torch.equal(student.fc2.weight, t["fc2.weight"][:, keeps["fc1"]])
    x = torch.randn(16, 1, 8, 8)
    torch.testing.assert_close(student(x), teacher(x), rtol=1e-5, atol=1e-5)
    assert report.settings["selection"] == "l1"


def test_teacher_is_unchanged_by_transfer() -> None:
    teacher = _largenet()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    transfer_parameters(teacher, _largenet(width=0.5), selection="l1", example_inputs=X8)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


# Residual groups of a CIFAR ResNet-8: every conv writing into the same residual sum shares one choice.
_GROUPS = [
    (["conv1", "layer1.0.conv2"], 16, 8),
    (["layer1.0.conv1"], 16, 8),
    (["layer2.0.conv1"], 32, 16),
    (["layer2.0.conv2", "layer2.0.downsample.0"], 32, 16),
    (["layer3.0.conv1"], 64, 32),
    (["layer3.0.conv2", "layer3.0.downsample.0"], 64, 32),
]


def _bn_of(conv: str) -> str:
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    return conv.replace("conv", "bn")


def test_resnet_residual_groups_stay_consistent_and_output_is_preserved() -> None:
    torch.manual_seed(0)
    teacher = CifarResNet(8, (16, 16, 32, 64), num_classes=10, in_channels=3).eval()
    _randomise_bn(teacher)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for convs, n, k in _GROUPS:
            keep = sorted(torch.randperm(n, generator=g)[:k].tolist())
            drop = sorted(set(range(n)) - set(keep))
            for conv in convs:
                teacher.get_submodule(conv).weight[drop] = 0.0
                bn = teacher.get_submodule(_bn_of(conv))
                bn.weight[drop] = 0.0  # BN output = beta = 0 for a dropped channel -> no effect
                bn.bias[drop] = 0.0
    student = CifarResNet(8, (8, 8, 16, 32), num_classes=10, in_channels=3).eval()
    report = transfer_parameters(teacher, student, selection="l1", example_inputs=torch.randn(1, 3, 8, 8))
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(student(x), teacher(x), rtol=1e-4, atol=1e-5)
    # The stem and the block writing into the same sum kept the same channels (same running stats).
    t = teacher.state_dict()
    keep = [int((t["bn1.running_mean"] == v).nonzero()) for v in student.bn1.running_mean]
    assert torch.equal(student.layer1[0].bn2.running_mean, t["layer1.0.bn2.running_mean"][keep])
    assert report.counts()["selected"] > 30


def test_first_selection_on_resnet_slices_the_residual_stream_consistently() -> None:
    teacher = CifarResNet(8, (16, 16, 32, 64)).eval()
    student = CifarResNet(8, (8, 8, 16, 32)).eval()
    transfer_parameters(teacher, student, selection="first", example_inputs=torch.randn(1, 3, 8, 8))
    t = teacher.state_dict()
    assert torch.equal(student.layer1[0].conv2.weight, t["layer1.0.conv2.weight"][:8, :8])
    assert torch.equal(student.layer2[0].downsample[0].weight, t["layer2.0.downsample.0.weight"][:16, :8])
    assert torch.equal(student.fc.weight, t["fc.weight"][:, :32])


def test_depth_map_automatic_and_explicit() -> None:
    teacher = create_model("resnet32", num_classes=10, in_channels=3).eval()  # 5 blocks per stage
    student = create_model("resnet14", num_classes=10, in_channels=3).eval()  # 2 blocks per stage
    assert auto_layer_map(teacher, student) == {
        "layer1.1": "layer1.2",
        "layer2.1": "layer2.2",
        "layer3.1": "layer3.2",
    }
    report = transfer_parameters(teacher, student)
    t = teacher.state_dict()
    assert torch.equal(student.layer1[1].conv1.weight, t["layer1.2.conv1.weight"])
    rec = report.by_student("layer2.1.bn2.running_var")
    assert (rec.method, rec.teacher_tensor) == ("depth-mapped", "layer2.2.bn2.running_var")
    assert report.by_student("layer2.0.conv1.weight").method == "exact"

    explicit = parse_layer_map("layer1.1=layer1.4, layer2.1=layer2.4")
    transfer_parameters(teacher, student, layer_map=explicit)
    assert torch.equal(student.layer1[1].conv2.weight, t["layer1.4.conv2.weight"])
    assert torch.equal(student.layer3[1].conv2.weight, t["layer3.1.conv2.weight"])  # unmapped: same name


def test_bad_layer_map_names_the_closest_modules() -> None:
    teacher = create_model("resnet32", num_classes=10)
    student = create_model("resnet14", num_classes=10)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(TransferError, match=r"teacher module 'layer1\.9' does not exist \(closest: layer1"):
        transfer_parameters(teacher, student, layer_map={"layer1.1": "layer1.9"})
    with pytest.raises(TransferError, match=r"student module 'layr1\.1'"):
        transfer_parameters(teacher, student, layer_map={"layr1.1": "layer1.2"})
    with pytest.raises(TransferError, match="same type"):
        transfer_parameters(teacher, student, layer_map={"layer1.1": "layer1.2.conv1"})
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(TransferError, match="STUDENT=TEACHER"):
        parse_layer_map("layer1.1")


def test_deeper_student_is_refused() -> None:
    with pytest.raises(TransferError, match="deeper student"):
        transfer_parameters(
            create_model("resnet14", num_classes=10), create_model("resnet32", num_classes=10)
        )


def test_wider_student_is_refused_and_left_untouched() -> None:
    teacher, student = _largenet(width=0.5), _largenet(width=1.0, seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(
        TransferError, match=r"wider than the teacher in 7 tensor\(s\): conv1.weight \(64, 1, 3, 3\)"
    ):
        transfer_parameters(teacher, student, example_inputs=X8)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_no_matching_names_lists_closest_matches() -> None:
    teacher = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[32])
    student = create_model("tiny-cnn", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(
        TransferError, match=r"no student tensor matches.*conv1.weight \(closest teacher: .*fc1.weight"
    ):
        transfer_parameters(teacher, student)


def test_incompatible_non_channel_shapes_strict_and_partial() -> None:
    class Net(nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, k, padding=k // 2)
            self.extra = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv1(x)

    teacher, student = Net(5), Net(3)
    del teacher.extra
    with pytest.raises(TransferError, match=r"cannot be taken from the teacher.*conv1\.weight"):
        transfer_parameters(teacher, student, example_inputs=X8)
    report = transfer_parameters(teacher, student, example_inputs=X8, strict=False)
    assert report.by_student("conv1.weight").method == "random-init"
    assert report.by_student("extra.weight").method == "random-init"
    assert "no teacher tensor 'extra.weight'" in report.by_student("extra.weight").reason
    assert torch.equal(student.conv1.bias, teacher.conv1.bias)


def test_thinner_student_without_example_inputs_says_what_is_missing() -> None:
    with pytest.raises(TransferError, match="example_inputs"):
        transfer_parameters(_largenet(), _largenet(width=0.5))


def test_report_serialises() -> None:
    import json

    report = transfer_parameters(_largenet(), _largenet(width=0.5), example_inputs=X8)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts"] == {"selected": 7, "exact": 1}
    assert {"student_tensor", "teacher_tensor", "method", "reason"} <= set(data["parameters"][0])
    assert "| conv1.weight [32, 1, 3, 3] | conv1.weight | selected |" in report.to_markdown()


def test_a_frozen_teacher_under_no_grad_is_traced_all_the_same() -> None:
    from distil.teachers.live import freeze

    teacher, student = freeze(_largenet()), _largenet(width=0.5, seed=1)
    with torch.no_grad():
        transfer_parameters(teacher, student, selection="first", example_inputs=X8)
    assert torch.equal(student.conv2.weight, teacher.conv2.weight[:64, :32])
    assert not any(p.requires_grad for p in teacher.parameters())
