"""Parameter transfer: initialise a student from a trained teacher's weights.

Three cases, combined as needed:

* **exact**: a student tensor with the same name and shape as a teacher tensor is copied;
* **selection** (a thinner student): in each layer the student keeps a subset of the teacher's output
  channels/units ("weight selection", Xu et al., ICLR 2024). The choice is made once per group of
  coupled channels and followed along the graph, so the next layer's input channels, BatchNorm
  statistics, every branch of a residual sum and the flatten into the first Linear (channel x spatial
  position) keep exactly the selected channels. The graph is traced with Torch-Pruning's
  ``DependencyGraph``, which knows how channels propagate through these operations; a copy of the teacher is
  thinned to the student's widths and then copied by name.
* **depth mapping** (a shallower student): student block ``i`` of a stage takes the weights of a chosen
  teacher block, by an explicit layer map or automatically (evenly spaced: 6 -> 3 blocks takes 0, 2, 4,
  DistilBERT's "every other layer").

Every student tensor gets a :class:`~distil.transfer.report.TransferRecord` saying where it came from.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from distil.errors import TransferError
from distil.transfer.hf_layers import hf_width_donor, is_hf_model
from distil.transfer.report import TransferRecord, TransferReport
from distil.transfer.selection import SELECTIONS, select_indices


# --------------------------------------------------------------------------------------------- layer map
def _numbered_children(module: nn.Module) -> int | None:
    names = [n for n, _ in module.named_children()]
    if names and all(n.isdigit() for n in names) and sorted(map(int, names)) == list(range(len(names))):
        return len(names)
    return None


def auto_layer_map(teacher: nn.Module, student: nn.Module) -> dict[str, str]:
    """Map each block of a shallower student stage to an evenly spaced teacher block.

    A stage is a container with numbered children (``nn.Sequential``, ``nn.ModuleList``) at the same path
    in both models. Student block ``i`` of ``k`` takes teacher block ``floor(i * n / k)`` of ``n``.

    Returns:
        ``{student_prefix: teacher_prefix}`` for the blocks whose index changes (identity elsewhere).

    Raises:
        TransferError: a student stage is deeper than the teacher's.
    """
    teacher_modules = dict(teacher.named_modules())
    mapping: dict[str, str] = {}
    for name, module in student.named_modules():
        k = _numbered_children(module)
        other = teacher_modules.get(name)
        n = _numbered_children(other) if other is not None else None
        if k is None or n is None or k == n:
            continue
        if k > n:
            raise TransferError(
                f"student stage {name!r} has {k} blocks but the teacher's has {n}: a deeper student cannot be "
                "initialised by depth mapping. Use a student with at most as many blocks per stage."
            )
        prefix = f"{name}." if name else ""
        for i in range(k):
            j = i * n // k
            if i != j:
                mapping[f"{prefix}{i}"] = f"{prefix}{j}"
    return mapping


def _stacks(model: nn.Module) -> dict[str, int]:
    return {name: n for name, module in model.named_modules() if (n := _numbered_children(module) or 0)}


def expand_block_numbers(
    teacher: nn.Module, student: nn.Module, layer_map: Mapping[Any, Any]
) -> dict[str, str]:
    """A layer map whose bare block numbers (``{0: 1, 1: 3}``) are resolved in the models' one block stack.

    A transformer has one list of blocks (``hf.model.layers``), so ``{student_block: teacher_block}`` by
    number is enough; entries that are module names pass through unchanged.

    Raises:
        TransferError: numbers for models with several stacks (name the modules instead), or out of range.
    """
    out: dict[str, str] = {}
    numbered = {k: v for k, v in layer_map.items() if str(k).isdigit() and str(v).isdigit()}
    if numbered:
        t_stacks, s_stacks = _stacks(teacher), _stacks(student)
        common = [name for name in s_stacks if name in t_stacks]
        if len(common) != 1:
            raise TransferError(
                f"layer map {dict(layer_map)} gives bare block numbers, which need one stack of blocks in both "
                f"models; found {len(common)} ({', '.join(common) or 'none'}). Name the modules, e.g. "
                "{'layer1.1': 'layer1.2'}."
            )
        stack = common[0]
        for k, v in numbered.items():
            if int(k) >= s_stacks[stack] or int(v) >= t_stacks[stack]:
                raise TransferError(
                    f"layer map entry {k}: {v} is out of range: the student has {s_stacks[stack]} blocks in "
                    f"{stack!r}, the teacher {t_stacks[stack]}."
                )
            out[f"{stack}.{int(k)}"] = f"{stack}.{int(v)}"
    for k, v in layer_map.items():
        if k not in numbered:
            out[str(k)] = str(v)
    return out


def map_name(name: str, layer_map: Mapping[str, str]) -> str:
    """The teacher name of a student tensor/module `name` under `layer_map` (longest prefix wins)."""
    best = ""
    for prefix in layer_map:
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return layer_map[best] + name[len(best) :] if best else name


def _check_layer_map(teacher: nn.Module, student: nn.Module, layer_map: Mapping[str, str]) -> None:
    t_names = [n for n, _ in teacher.named_modules() if n]
    s_names = [n for n, _ in student.named_modules() if n]
    problems = []
    for s, t in layer_map.items():
        if s not in s_names:
            problems.append(f"student module {s!r} does not exist{_hint(s, s_names)}")
        if t not in t_names:
            problems.append(f"teacher module {t!r} does not exist{_hint(t, t_names)}")
    if problems:
        raise TransferError("invalid layer map: " + "; ".join(problems) + ". Nothing was transferred.")
    for s, t in layer_map.items():
        ts, ss = type(dict(teacher.named_modules())[t]), type(dict(student.named_modules())[s])
        if ts is not ss:
            raise TransferError(
                f"invalid layer map: student {s!r} is a {ss.__name__} but teacher {t!r} is a {ts.__name__}; "
                "map modules of the same type."
            )


def _hint(name: str, choices: Sequence[str]) -> str:
    near = _closest_n(name, choices)
    return f" (closest: {', '.join(near)})" if near else ""


def _closest_n(name: str, choices: Sequence[str], n: int = 3) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)


# --------------------------------------------------------------------------------------------- transfer
def _out_size(module: nn.Module) -> int | None:
    if isinstance(module, nn.Conv2d | nn.Conv1d | nn.ConvTranspose2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        return module.num_features
    return None


def _l1_importance(group: Any, n: int) -> torch.Tensor:
    """Per-channel L1 norm of the weights (and biases) that produce each channel of the group.

    This is the filter norm of Li et al. (2017), summed over every producer in the group (several for
    a residual sum), so a channel that every producer writes as zero scores zero.
    """
    score = torch.zeros(n, dtype=torch.float64)
    for dep, idxs in group:
        module = dep.target.module
        if not isinstance(module, nn.Conv2d | nn.Conv1d | nn.Linear):
            continue
        if getattr(dep.handler, "__name__", "") != "prune_out_channels" or len(idxs) != n:
            continue
        w = module.weight.detach().double().flatten(1).abs().sum(1)
        if module.bias is not None:
            w = w + module.bias.detach().double().abs()
        score += w[torch.as_tensor([int(i) for i in idxs])]
    return score


def _thin_teacher(
    teacher: nn.Module,
    student_modules: dict[str, nn.Module],
    inverse_map: Mapping[str, str],
    selection: str,
    example_inputs: Any,
) -> tuple[nn.Module, dict[str, str]]:
    """A copy of `teacher` with each channel group cut to the student's width.

    Returns:
        (thinned copy, {teacher tensor prefix: reason}) for the layers whose out-channels were selected.
    """
    try:
        import torch_pruning as tp
    except ImportError:
        raise TransferError(
            "selecting channels for a thinner student traces the graph with torch-pruning, which is not "
            "installed: pip install 'distil[compress]' (or pip install torch-pruning). Students of the "
            "teacher's exact widths need no extra package."
        ) from None

    thinned = copy.deepcopy(teacher).eval().cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    # The graph is traced through autograd: a frozen teacher (requires_grad=False, or a caller inside
    # torch.no_grad) would give an empty graph, so the copy is made trainable for the trace.
    thinned.requires_grad_(True)
    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(thinned, example_inputs=example_inputs, verbose=False)
    names = {m: n for n, m in thinned.named_modules()}
    notes: dict[str, list[str]] = {}
    for t_name, module in list(thinned.named_modules()):
        pruner = dg.get_pruner_of_module(module)
        if pruner is None or _out_size(module) is None or module not in dg.module2node:
            continue
        n = int(_out_size(module) or 0)
        group = dg.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(n)))
        # The student's width for this group: every coupled producer/BN the student has must agree.
        targets: dict[str, int] = {}
        for dep, idxs in group:
            m = dep.target.module
            if getattr(dep.handler, "__name__", "") != "prune_out_channels" or len(idxs) != n:
                continue
            member = names.get(m)
            s_name = inverse_map.get(member) if member is not None else None
            s_mod = student_modules.get(s_name) if s_name is not None else None
            if s_mod is not None and type(s_mod) is type(m) and _out_size(s_mod) is not None:
                targets[str(s_name)] = int(_out_size(s_mod) or 0)
        if not targets or set(targets.values()) == {n}:
            continue
        if len(set(targets.values())) > 1:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(targets.items()))
            raise TransferError(
                f"teacher layer {t_name!r} shares its {n} channels with other layers (e.g. through a residual "
                f"sum), but the student gives them different widths ({shown}); coupled layers must have "
                "one width. Nothing was transferred."
            )
        k = next(iter(targets.values()))
        if k > n:
            raise TransferError(
                f"student layer {next(iter(targets))!r} has {k} channels but teacher layer {t_name!r} has only "
                f"{n}: a student wider than its teacher cannot be initialised from it. Make the student "
                "thinner or equal (e.g. a smaller `width`), or use init=random. Nothing was transferred."
            )
        importance = _l1_importance(group, n) if selection == "l1" else None
        keep = select_indices(n, k, selection, importance)
        drop = sorted(set(range(n)) - set(keep))
        dg.get_pruning_group(module, pruner.prune_out_channels, idxs=drop).prune()
        for dep, _ in group:
            member = names.get(dep.target.module)
            side = getattr(dep.handler, "__name__", "").removeprefix("prune_").replace("_", "-")
            if member is not None and side in ("out-channels", "in-channels"):
                note = f"{selection} selection of {k}/{n} {side} (group of {t_name})"
                if note not in notes.setdefault(member, []):
                    notes[member].append(note)
    return thinned, {m: "; ".join(v) for m, v in notes.items()}


def transfer_parameters(
    teacher: nn.Module,
    student: nn.Module,
    *,
    selection: str = "uniform",
    layer_map: Mapping[Any, Any] | None = None,
    example_inputs: torch.Tensor | None = None,
    strict: bool = True,
) -> TransferReport:
    """Initialise `student` (in place) from `teacher`'s weights, and say how each tensor was set.

    Args:
        teacher: the trained model (left unchanged).
        student: a model of the same layout, possibly thinner (fewer channels/units per layer) and/or
            shallower (fewer blocks per stage).
        selection: which teacher channels a thinner student keeps: "uniform", "first" or "l1".
        layer_map: ``{student_module: teacher_module}`` prefixes for a shallower student, or block
            numbers ``{0: 1, 1: 3}`` for models with one stack of blocks (transformers); None maps the
            blocks of each shorter stage automatically (evenly spaced: every other of twice as many,
            as DistilBERT).
        example_inputs: a batch the teacher accepts (e.g. one training image); needed only when a
            student layer is thinner than the teacher's, to trace how channels flow (not for Hugging
            Face transformers, whose layout :mod:`distil.transfer.hf_layers` writes out).
        strict: when True, a student tensor that exists in the teacher under its (mapped) name but
            cannot be made to fit (e.g. a different kernel size) is an error; when False it stays at
            its random init and the report says why.

    Returns:
        A TransferReport with one record per student tensor.

    Raises:
        TransferError: nothing matches by name (the closest names are listed), a student wider than
            the teacher, an invalid layer map, or (strict) shapes that selection cannot reconcile.
            The student is left untouched when this is raised.
    """
    if selection not in SELECTIONS:
        select_indices(1, 1, selection)  # raises with the valid choices
    t_state = teacher.state_dict()
    s_state = student.state_dict()
    if layer_map is None:
        layer_map = auto_layer_map(teacher, student)
        map_source = "automatic"
    else:
        layer_map = expand_block_numbers(teacher, student, layer_map)
        _check_layer_map(teacher, student, layer_map)
        map_source = "explicit"
    source = {k: map_name(k, layer_map) for k in s_state}
    matched = [k for k, t in source.items() if t in t_state]
    if not matched:
        examples = [
            f"{k} (closest teacher: {', '.join(_closest_n(k, list(t_state))) or 'none'})"
            for k in list(s_state)[:5]
        ]
        raise TransferError(
            "no student tensor matches a teacher tensor by name, so nothing can be transferred: "
            + "; ".join(examples)
            + ". Use a student of the teacher's layout (e.g. the same model with a smaller width), or give "
            "a layer map {student_module: teacher_module}. Nothing was transferred."
        )
    wider = [
        f"{k} {tuple(s_state[k].shape)} vs teacher {source[k]} {tuple(t_state[source[k]].shape)}"
        for k in matched
        if s_state[k].dim() == t_state[source[k]].dim()
        and any(s > t for s, t in zip(s_state[k].shape, t_state[source[k]].shape, strict=True))
    ]
    if wider:
        raise TransferError(
            f"the student is wider than the teacher in {len(wider)} tensor(s): {'; '.join(wider[:4])}. "
            "Parameter transfer selects a subset of the teacher's channels, so every student layer must be "
            "at most as wide. Make the student thinner, or use init=random. Nothing was transferred."
        )

    needs_selection = any(s_state[k].shape != t_state[source[k]].shape for k in matched)
    notes: dict[str, str] = {}
    donor_state = t_state
    if needs_selection and is_hf_model(teacher) and is_hf_model(student):
        # Heads and the residual stream are coupled through reshapes a trace cannot follow: the
        # transformer's layout is written out instead (and needs no example inputs).
        donor_state, notes = hf_width_donor(teacher, student, selection)
    elif needs_selection:
        if example_inputs is None:
            raise TransferError(
                "the student is thinner than the teacher, so channels must be selected along the graph, which "
                "needs example_inputs (e.g. data.train.head(1)) to trace it."
            )
        inverse = {}
        for s_mod_name, _ in student.named_modules():
            if s_mod_name:
                inverse[map_name(s_mod_name, layer_map)] = s_mod_name
        thinned, notes = _thin_teacher(
            teacher, dict(student.named_modules()), inverse, selection, example_inputs.detach().cpu()
        )
        donor_state = thinned.state_dict()

    records: list[TransferRecord] = []
    incompatible: list[str] = []
    new_state: dict[str, torch.Tensor] = {}
    for k, s_tensor in s_state.items():
        t_name = source[k]
        shape = tuple(s_tensor.shape)
        if t_name not in t_state:
            near = _closest_n(t_name, list(t_state), n=1)
            why = f"no teacher tensor {t_name!r}" + (f" (closest: {near[0]})" if near else "")
            records.append(TransferRecord(k, None, "random-init", why, shape, None))
            continue
        t_shape = tuple(t_state[t_name].shape)
        donor = donor_state[t_name]
        if tuple(donor.shape) != shape:
            why = f"shape {shape} cannot be selected from teacher {t_shape} (not a channel dimension)"
            incompatible.append(f"{k}: {why}")
            records.append(TransferRecord(k, t_name, "random-init", why, shape, t_shape))
            continue
        new_state[k] = donor.detach().to(s_tensor.dtype).clone()
        module_name = t_name.rsplit(".", 1)[0]
        selected = t_shape != shape
        if t_name != k:
            how = f"teacher block {t_name.rsplit('.', 1)[0]} by {map_source} layer map"
            if selected:
                how += f"; {notes.get(module_name, 'channels selected')}"
            records.append(TransferRecord(k, t_name, "depth-mapped", how, shape, t_shape))
        elif selected:
            why = notes.get(module_name, f"{selection} selection")
            records.append(TransferRecord(k, t_name, "selected", why, shape, t_shape))
        else:
            records.append(TransferRecord(k, t_name, "exact", "same name and shape", shape, t_shape))
    if incompatible and strict:
        raise TransferError(
            f"{len(incompatible)} student tensor(s) cannot be taken from the teacher: {'; '.join(incompatible[:4])}. "
            "Pass strict=False (--partial) to leave them at random init. Nothing was transferred."
        )
    with torch.no_grad():
        live = student.state_dict()
        for k, v in new_state.items():
            live[k].copy_(v)
    report = TransferReport(
        parameters=records,
        settings={
            "init": "teacher",
            "selection": selection if needs_selection else "none (same widths)",
            "layer_map": dict(layer_map),
            "layer_map_source": map_source,
        },
    )
    return report


def parse_layer_map(text: str) -> dict[str, str]:
    """Parse ``"layer1.1=layer1.2,layer2.1=layer2.2"`` into a layer map."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in re.split(r"[,;]", text))):
        s, sep, t = part.partition("=")
        if not sep or not s.strip() or not t.strip():
            raise TransferError(
                f"layer map entry {part!r} is not STUDENT=TEACHER; example: layer1.1=layer1.2,layer2.1=layer2.2"
            )
        mapping[s.strip()] = t.strip()
    return mapping
