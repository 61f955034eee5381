"""`distil import`: your own weights file (a .pt/.pth state_dict or pickled module) as safetensors."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import console, user_errors


@user_errors
def import_(
    src: Annotated[str, typer.Argument(help="Your weights file: .pt/.pth/.bin or .safetensors.")],
    out: Annotated[str, typer.Argument(help="The .safetensors file to write (atomically).")],
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Unpickle SRC when it holds more than tensors (a torch.save(model) file). Unpickling runs "
            "code the file names: only for files you made or trust.",
        ),
    ] = False,
) -> None:
    """Re-save a state_dict as safetensors; a pickled module only with --trust-pickle.

    A torch.save(model.state_dict()) file loads as it is wherever distil takes weights (weights_only=True),
    so it needs no import; this is for files that pickle a whole module, read once on your say-so.

    Example: distil import my_model.pt my_model.safetensors --trust-pickle
    """
    from distil.train.import_weights import import_weights

    result = import_weights(src, out, trust_pickle=trust_pickle)
    how = "unpickled (--trust-pickle)" if result.unpickled else "read as tensors only (nothing unpickled)"
    console.print(f"wrote {result.path}: {result.tensors} tensors, {result.parameters:,} values; {src} {how}")
