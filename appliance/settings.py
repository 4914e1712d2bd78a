"""A small typed-settings toolkit: dataclass fields that carry their own limits.

Every setting is declared once, with its default, its allowed range or choices
and a one-line description. The YAML loader (``appliance.config``) walks these
declarations to validate a file and to name the exact line and key of any
mistake; the example config and the docs are checked against them too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

_META = "appliance_setting"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a setting allows, beyond its type."""

    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""
    unit: str = ""

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"{_num(self.minimum)}..{_num(self.maximum)}{self.unit}"
        if self.minimum is not None:
            return f">= {_num(self.minimum)}{self.unit}"
        if self.maximum is not None:
            return f"<= {_num(self.maximum)}{self.unit}"
        return ""


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[Any] | None = None,
    unit: str = "",
    factory: Any = dataclasses.MISSING,
) -> Any:
    """Declare a dataclass field with its limits and description."""
    limits = Limits(
        minimum=minimum,
        maximum=maximum,
        choices=tuple(choices) if choices is not None else None,
        doc=doc,
        unit=unit,
    )
    kwargs: dict[str, Any] = {"metadata": {_META: limits}}
    if factory is not dataclasses.MISSING:
        kwargs["default_factory"] = factory
    elif default is not dataclasses.MISSING:
        if isinstance(default, list | dict):
            value = default
            kwargs["default_factory"] = lambda: type(value)(value)
        else:
            kwargs["default"] = default
    return dataclasses.field(**kwargs)


def section(cls: type) -> Any:
    """Declare a nested settings section that defaults to its own defaults."""
    return dataclasses.field(default_factory=cls, metadata={_META: Limits(doc=cls.__doc__ or "")})


def limits_of(field: dataclasses.Field[Any]) -> Limits:
    limits = field.metadata.get(_META)
    return limits if isinstance(limits, Limits) else Limits()


def render_example(cls: type, title: str) -> str:
    """A commented YAML file showing every setting of ``cls`` with its default.

    ``config/appliance.yaml`` is this output; a test keeps the two identical, so
    the example can never drift from what the loader accepts.
    """
    import yaml

    lines = [f"# {line}".rstrip() for line in title.strip().splitlines()]
    lines.append("")

    def emit(section_cls: type, instance: Any, indent: str) -> None:
        for field in dataclasses.fields(section_cls):
            if field.metadata.get("internal"):
                continue
            limits = limits_of(field)
            value = getattr(instance, field.name)
            if dataclasses.is_dataclass(value):
                doc = (type(value).__doc__ or "").strip().splitlines()
                if indent == "":
                    lines.append("")
                for line in doc:
                    lines.append(f"{indent}# {line.strip()}")
                lines.append(f"{indent}{field.name}:")
                emit(type(value), value, indent + "  ")
                continue
            note = " ".join(
                part
                for part in (limits.doc, f"({limits.describe()})" if limits.describe() else "")
                if part
            )
            if (
                isinstance(value, list | dict)
                and value
                and not all(isinstance(v, str | int | float) for v in value)
            ):
                rendered = yaml.safe_dump({field.name: value}, default_flow_style=False)
                lines.extend(f"{indent}{line}" for line in rendered.rstrip().splitlines())
                continue
            scalar = yaml.safe_dump(_plain(value), default_flow_style=True, width=1000)
            scalar = scalar.strip().removesuffix("...").strip()
            text = f"{indent}{field.name}: {scalar}"
            if note:
                text = f"{text}  # {note}"
            lines.append(text)

    emit(cls, cls(), "")
    return "\n".join(lines).rstrip() + "\n"


def _plain(value: Any) -> Any:
    from pathlib import PurePath

    if isinstance(value, PurePath):
        return str(value)
    return value
