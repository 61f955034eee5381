"""The errors distil raises on purpose.

Every message says what was received, what is valid, and how to fix it. The CLI prints these
without a traceback and exits non-zero; anything else escaping is a bug in distil.
"""

from __future__ import annotations


class DistilError(Exception):
    """Base class: a user-facing problem with a message that explains the fix."""


class ConfigError(DistilError):
    """A recipe or option is invalid (unknown key, wrong type, impossible value)."""


class NotLogitsError(ConfigError):
    """A teacher's outputs are probabilities (a final softmax or sigmoid), not the logits KD needs."""


class DataError(DistilError):
    """A dataset is missing, corrupt, or does not fit the model (shapes, class counts)."""


class CheckpointError(DistilError):
    """A checkpoint is missing, corrupt, unsafe to load, or does not match its sidecar or model."""


class ModelError(DistilError):
    """A model name or factory cannot be resolved or built."""


class TransferError(DistilError):
    """Knowledge cannot be transferred between two models (shapes, names, layer maps)."""


class TrainingError(DistilError):
    """Training hit a numerical fault (NaN/Inf) or a resource limit."""


class UntrustedCodeError(CheckpointError, ModelError):
    """A file (a checkpoint sidecar, a saved spec) names code to import that the user did not name.

    Raised before anything is imported. A file may name registered architectures and datasets; a
    ``pkg.module:function`` is imported only when the user names it (on the command line or in their own
    recipe) or says they trust the file's author (``--trust-code``, ``trust_code=True``).

    Attributes:
        names: the ``pkg.module:function`` names (or model directories) that were refused.
    """

    def __init__(
        self,
        names: list[str],
        *,
        source: str | None = None,
        what: str = "model factory",
        fix: str = "",
        message: str = "",
    ) -> None:
        self.names = list(names)
        self.what, self.fix = what, fix
        if message:  # a case the generic wording does not fit (a directory's own code, not a factory)
            super().__init__(message)
            return
        shown = ", ".join(repr(n) for n in self.names)
        plural = "s" if len(self.names) > 1 else ""
        fix = fix or (
            f"--model {self.names[0]} on the command line, or teacher.model / student.model: {self.names[0]} "
            "in your own recipe"
        )
        super().__init__(
            f"{source or 'the model spec'} names the {what}{plural} {shown}, code outside distil; distil does "
            "not import code that a file chooses (a checkpoint cannot choose code to run). If that is your "
            f"code, name it yourself ({fix}); or, only if you trust the file's author, pass --trust-code "
            "(trust_code=True in Python)."
        )
