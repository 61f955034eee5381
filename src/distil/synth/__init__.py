"""Data-free distillation: transfer sets synthesised from the teacher alone.

* `deepinversion`: inputs optimised to match the teacher's BatchNorm running statistics and sampled
  classes (teachers with BatchNorm layers);
* `adversarial`: a generator trained against the student to find where it disagrees with the teacher
  (any teacher).

`synthesize` makes a `SyntheticSet`; `write_synthetic` writes it as an `npz` dataset (with the
teacher's input normalization, ids, the real test split, class grids and a report page) that
`distil distill` trains on like any other. `distil synthesize` is the command.
"""

from distil.synth.adversarial import AdversarialConfig
from distil.synth.deepinversion import DeepInversionConfig, require_batchnorm
from distil.synth.store import write_synthetic
from distil.synth.synthesize import METHODS, SynthesisConfig, SyntheticSet, synthesize

__all__ = [
    "METHODS",
    "AdversarialConfig",
    "DeepInversionConfig",
    "SynthesisConfig",
    "SyntheticSet",
    "require_batchnorm",
    "synthesize",
    "write_synthetic",
]
