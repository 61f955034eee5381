"""Train a teacher with a plain PyTorch loop and save a plain state_dict, as if it came from elsewhere.

It stands in for a model you already have. The only distil call is `load_dataset`, so that the teacher
sees the same split and input normalization that distil evaluates and distils with (per-channel
standardization with the training split's mean/std); a teacher trained on differently preprocessed
inputs loses accuracy when evaluated on distil's.

    python examples/own_teacher/train_teacher.py            # writes examples/own_teacher/out/teacher.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from distil.data import load_dataset

try:  # run as a script (python examples/own_teacher/train_teacher.py) or imported as a module
    from examples.own_teacher.my_models import make_teacher
except ImportError:  # pragma: no cover - script mode without the repository root on sys.path
    from my_models import make_teacher  # type: ignore[no-redef]

OUT = Path(__file__).parent / "out" / "teacher.pt"


def train(out: Path = OUT, epochs: int = 15, seed: int = 0) -> Path:
    """Train `make_teacher()` on digits with SGD and save `model.state_dict()` to `out`."""
    torch.manual_seed(seed)
    data = load_dataset("digits", val_fraction=0.0)
    model = make_teacher(num_classes=data.num_classes, in_channels=data.input_shape[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x, y = data.train.x, data.train.y
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = order[i : i + 64]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            acc = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
        print(f"epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}  test acc {acc:.2%}")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)  # a plain state_dict: no distil format, no sidecar
    print(f"saved {out}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    train(args.out, args.epochs)
