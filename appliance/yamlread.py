"""Reading YAML without trusting it: bounded nesting and size, plain values only.

PyYAML's composer recurses once per nesting level, so a deeply nested file
ends in ``RecursionError``, and its constructors raise whatever Python raises
(``ValueError``, ``KeyError``, ``AttributeError``) for a value that does not
fit an explicit tag such as ``!!int abc``. Here the node tree is built with the
depth and the node count checked as it grows, so a hostile file is refused at
the line where it crosses a limit, and scalars become Python values only for
the plain tags, with ``Refused`` for everything else.

The events come from libyaml when PyYAML was built with it (several times
faster on a Pi), else from PyYAML's own parser; both parse without recursion,
and the composition on top is the same Python either way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, Event, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

HAVE_LIBYAML: bool = bool(getattr(yaml, "__with_libyaml__", False))

_CORE = "tag:yaml.org,2002:"
NULL, BOOL, INT, FLOAT, STR, TIMESTAMP = (
    _CORE + name for name in ("null", "bool", "int", "float", "str", "timestamp")
)
MAP, SEQ, MERGE = _CORE + "map", _CORE + "seq", _CORE + "merge"
_SCALAR_TAGS = frozenset((NULL, BOOL, INT, FLOAT, STR, TIMESTAMP))
_COLLECTION_TAGS: dict[type[Node], str] = {MappingNode: MAP, SequenceNode: SEQ}
#: How much of a value or tag an error message quotes.
SHOWN_CHARS = 60


class Refused(Exception):
    """The text is valid YAML but not something a configuration may contain."""

    def __init__(self, message: str, node_or_mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        self.line: int | None = mark.line + 1 if mark is not None else None


class _Bounded(Composer):
    """PyYAML's composer with a nesting depth and a node count checked as it goes."""

    # Provided by the parser it is mixed with (PyYAML's Parser or libyaml's CParser).
    peek_event: Callable[[], Event | None]

    def __init__(self, max_depth: int, max_nodes: int) -> None:
        Composer.__init__(self)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()
        assert event is not None  # the composer asks for a node only where one starts
        if isinstance(event, AliasEvent):
            # A shallow copy where the alias is written: it shares the anchored node's
            # children, so it costs nothing, but it knows its own line and what it is.
            anchored = super().compose_node(parent, index)
            assert anchored is not None  # an alias names a node already composed
            use = copy.copy(anchored)
            use.start_mark, use.end_mark = event.start_mark, event.end_mark
            vars(use)["alias"] = event.anchor  # read by alias_of; Node declares no such field
            return use
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise Refused(
                f"the file holds more than {self._max_nodes} values (the limit)", event.start_mark
            )
        nested = isinstance(event, MappingStartEvent | SequenceStartEvent)
        if not nested:
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise Refused(
                    f"nested deeper than {self._max_depth} levels (the limit)", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PythonEvents(Reader, Scanner, Parser, _Bounded, Resolver):
    def __init__(self, text: str, max_depth: int, max_nodes: int) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Bounded.__init__(self, max_depth, max_nodes)
        Resolver.__init__(self)


class _Loader(Protocol):
    def get_single_node(self) -> Node | None: ...
    def dispose(self) -> None: ...


_EVENT_SOURCES: dict[bool, Callable[[str, int, int], _Loader]] = {False: _PythonEvents}

if HAVE_LIBYAML:
    from yaml._yaml import CParser

    class _LibyamlEvents(_Bounded, Resolver, CParser):
        # CParser last: its events, but the Python composer's get_single_node and compose_*.
        def __init__(self, text: str, max_depth: int, max_nodes: int) -> None:
            CParser.__init__(self, text)
            _Bounded.__init__(self, max_depth, max_nodes)
            Resolver.__init__(self)

    _EVENT_SOURCES[True] = _LibyamlEvents


def compose(
    text: str, *, max_depth: int, max_nodes: int, libyaml: bool = HAVE_LIBYAML
) -> Node | None:
    """The single document in ``text`` as a node tree (None if empty).

    Raises ``Refused`` past a limit and ``yaml.YAMLError`` for bad syntax. An alias
    becomes a copy of its anchor's node sharing the same children (``alias_of`` names
    it), so a self-reference is a cycle: whoever walks the tree bounds its expansion.
    """
    loader = _EVENT_SOURCES[libyaml and HAVE_LIBYAML](text, max_depth, max_nodes)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()


def scalar_value(node: ScalarNode) -> Any:
    """The Python value of a scalar node: text, int, float, bool, None or a date.

    An explicit tag must be one of those and the text must fit it (``!!float 1``
    does, ``!!int abc`` does not); anything else raises ``Refused``.
    """
    tag = node.tag
    if tag == MERGE:
        raise Refused("merge keys (<<) are not supported: write the settings out", node)
    if tag not in _SCALAR_TAGS:
        raise Refused(f"the tag {tag_name(tag)} is not allowed (only plain values)", node)
    if tag != STR:
        implied = _RESOLVER.resolve(ScalarNode, node.value, (True, False))
        if implied != tag and not (tag == FLOAT and implied == INT):
            raise Refused(f"{shown(node.value)} is not a valid {tag_name(tag)}", node)
    try:
        return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
    except (ValueError, OverflowError):  # e.g. 2024-13-45, 0x_, an int of 5000 digits
        raise Refused(f"{shown(node.value)} is not a valid {tag_name(tag)}", node) from None


def alias_of(node: Node) -> str | None:
    """The anchor name if ``node`` was written as an alias (``*name``), else None."""
    return getattr(node, "alias", None)


def is_null(node: Node) -> bool:
    """Whether a node is an empty value (nothing, ``~`` or ``null``), not ``!!null foo``."""
    return (
        isinstance(node, ScalarNode)
        and node.tag == NULL
        and _RESOLVER.resolve(ScalarNode, node.value, (True, False)) == NULL
    )


def check_collection_tag(node: Node) -> None:
    """Raise ``Refused`` if a mapping or list carries a tag (``!!set``, ``!!python/...``)."""
    expected = _COLLECTION_TAGS.get(type(node))
    if expected is not None and node.tag != expected:
        raise Refused(f"the tag {tag_name(node.tag)} is not allowed (only plain values)", node)


def tag_name(tag: str) -> str:
    """A tag as it is written in a file: ``!!int``, ``!foo``."""
    name = "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
    return name if len(name) <= SHOWN_CHARS else name[:SHOWN_CHARS] + "…"


def shown(value: object) -> str:
    """``repr(value)``, cut short enough for one line of an error message."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
