"""The CLI's options, each declared once: the options every command shares (``--out``, ``--overwrite``,
``--quiet``, the device), and the options of each step generated from its settings dataclass
(:func:`with_settings`, from the field metadata of :mod:`sparcom.settings`), so a flag's spelling, help, default
and bounds have one source. Old spellings of renamed flags are refused with the new name (:func:`renamed_flag`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from sparcom.errors import SparcomError
from sparcom.settings import Flat, build, options

# ----------------------------------------------------------------------------------------------- shared options

ModelArgument = Annotated[str, typer.Argument(
    help="The model: a built-in name, a local model folder, a .gguf file or a hub id.", show_default=False)]
RunArgument = Annotated[Path, typer.Argument(help="A profile run directory (from 'sparcom profile').",
                                             show_default=False)]
Data = Annotated[Path, typer.Option("--data", help="Instruction rows (JSON Lines, docs/hexainst.md); the causal "
                                                   "check needs their reference outputs.", show_default=False)]
Selection = Annotated[Path, typer.Option("--selection", help="A 'sparcom identify' output folder.",
                                         show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out (only an earlier output of "
                                                             "the same command).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run of this command into --out "
                                                       "(same arguments).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]
Plots = Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG figures.")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or mps.")]
DeviceMap = Annotated[str | None, typer.Option("--device-map", help="'auto' spreads a large model over devices.")]


def out_option(what: str, optional: bool = False) -> Any:
    """``--out``: what the command writes there, and the one rule for an existing path."""
    return Annotated[Path | None if optional else Path, typer.Option(
        "--out", help=f"{what}; an existing one is refused unless --overwrite.", show_default=False)]


# ----------------------------------------------------------------------------------------------- settings options


def _annotation(flat: Flat, hints: dict[str, Any]) -> Any:
    option = flat.option
    kind = option.cli_type if option.cli_type is not None else hints[flat.path[-1]]
    return Annotated[kind, typer.Option(option.flag, help=option.help)]


def settings_parameters(cls: type) -> list[inspect.Parameter]:
    """One keyword parameter per CLI option of the settings class ``cls`` (groups flattened)."""
    parameters = []
    for flat in options(cls):
        if not flat.option.cli:
            continue
        owner = _owner(cls, flat.path)
        hints = typing.get_type_hints(owner)
        parameters.append(inspect.Parameter(flat.name, inspect.Parameter.KEYWORD_ONLY, default=flat.cli_default,
                                            annotation=_annotation(flat, hints)))
    return parameters


def _owner(cls: type, path: Sequence[str]) -> type:
    """The dataclass that declares the field at ``path`` (a group's class for a field inside a group)."""
    from sparcom.settings import GROUP

    for name in path[:-1]:
        cls = next(f for f in cls.__dataclass_fields__.values() if f.name == name).metadata[GROUP].cls
    return cls


def with_settings(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command whose ``settings`` parameter is replaced by the options of the settings class ``cls``: typer sees
    one option per setting, and the command receives ``settings`` built from them (checked by the API)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        generated = settings_parameters(cls)
        names = {p.name for p in generated}
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            if parameter.name == "settings":
                parameters += generated
            else:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        clash = names & {p.name for p in signature.parameters.values()}
        if clash:
            raise TypeError(f"{command.__name__}: {sorted(clash)} are both settings and command parameters")

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            picked = {name: values.pop(name) for name in names}
            return command(settings=build(cls, picked), **values)

        del run.__wrapped__  # typer reads the signature below, not the command's
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def comma_values(values: Sequence[str] | str | None) -> list[str] | None:
    """A repeated and/or comma-separated option (``--component a,b --component c``) as a list."""
    from sparcom.settings import comma_list

    listed = comma_list(values)
    return list(listed) if listed else None


# ----------------------------------------------------------------------------------------------- renamed flags

#: Flags that meant one thing in one command and another elsewhere, or did not say what they seed: the command,
#: the old spelling, the new one and why. The old spelling is refused with one line naming the new flag.
RENAMED: dict[tuple[str, ...], dict[str, tuple[str, str]]] = {
    ("ablate",): {
        "--folds": ("--crossfit-folds", "--folds is the validity folds of identify, evaluate and sweep"),
        "--seed": ("--random-set-seed", "each seed flag names what it seeds"),
    },
    ("examples",): {
        "--per-category": ("--components-per-category", "--per-category counts rows in profile and ablate"),
    },
    ("tune",): {"--seed": ("--training-seed", "each seed flag names what it seeds")},
    ("models", "build-moe"): {"--seed": ("--clustering-seed", "each seed flag names what it seeds")},
}


#: Flags that were removed: the command, the flag and why (the old spelling is refused with one line).
REMOVED: dict[tuple[str, ...], dict[str, str]] = {
    ("ablate",): {"--test": "the causal decision is one test fixed in advance, the row-aware empirical test "
                            "(docs/causal.md, \"The decision rule\")"},
}


def renamed_flag(args: Sequence[str]) -> None:
    """Refuse a renamed flag in a command line (``args`` after the program name) with its new name, and a removed
    flag with why it went."""
    for path in dict.fromkeys([*RENAMED, *REMOVED]):
        if list(args[:len(path)]) != list(path):
            continue
        renamed, removed = RENAMED.get(path, {}), REMOVED.get(path, {})
        for arg in args[len(path):]:
            if arg == "--":
                break
            old = arg.split("=", 1)[0]
            if old in renamed:
                new, why = renamed[old]
                raise SparcomError(f"sparcom {' '.join(path)}: {old} is now {new} ({why}); pass {new}")
            if old in removed:
                raise SparcomError(f"sparcom {' '.join(path)}: {old} was removed: {removed[old]}; drop {old}")


__all__ = ["REMOVED", "RENAMED", "Data", "Device", "DeviceMap", "Dtype", "ModelArgument", "Overwrite", "Plots", "Quiet",
           "Resume", "RunArgument", "Selection", "comma_values", "out_option", "renamed_flag", "settings_parameters",
           "with_settings"]
