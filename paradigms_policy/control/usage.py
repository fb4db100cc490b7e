"""`--help` of the node executables: usage and parameters, printed without starting ROS."""
from __future__ import annotations

import textwrap
from typing import Iterable, Sequence

from .parameters import ParamSpec

HELP_FLAGS = ("-h", "--help")
ROS_ARGS = "--ros-args"


def asks_for_help(argv: Sequence[str]) -> bool:
    """Whether the arguments before `--ros-args` (ROS's own) include -h or --help."""
    own = list(argv)
    if ROS_ARGS in own:
        own = own[:own.index(ROS_ARGS)]
    return any(arg in HELP_FLAGS for arg in own)


def _describe(spec: ParamSpec) -> str:
    kind = {bool: "bool", int: "integer", float: "double", str: "string", list: "array"}[type(spec.default)]
    bounds = [f">= {spec.minimum:g}" if spec.minimum is not None and kind != "bool" else "",
              f"<= {spec.maximum:g}" if spec.maximum is not None and kind != "bool" else "",
              spec.constraints, "read-only" if spec.read_only else "settable at run time"]
    details = ", ".join(part for part in bounds if part)
    text = f"{spec.name} ({kind}, default {spec.default!r}; {details}): {spec.description}"
    return textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="      ")


def usage(prog: str, summary: str, specs: Iterable[ParamSpec]) -> str:
    """The help text: usage line, summary and one entry per parameter."""
    lines = [f"usage: {prog} [-h] [--ros-args [-p NAME:=VALUE ...] [--params-file FILE ...] [-r FROM:=TO ...]]",
             "", summary, "", "parameters:"]
    lines += [_describe(spec) for spec in specs]
    return "\n".join(lines) + "\n"
