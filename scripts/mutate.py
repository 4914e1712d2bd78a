#!/usr/bin/env python3
"""A small AST mutation tester for the protocol cores and the connection layer.

Each mutant changes one operator or constant of a target module (a comparison,
an arithmetic or boolean operator, a number, ``True``/``False``, a ``not``,
an augmented assignment) and runs that module's unit tests against it. Named
settings (module constants, limits objects' and parameters' defaults) and
decorators are not mutated: their values are choices or declarations, their
uses are logic. A
mutant the tests do not fail "survives": either the tests miss a behaviour,
or the change is equivalent (the README lists the known equivalents).

Mutants are made in a copy of the tree (``appliance/``, ``tests/``) in a
temporary directory, so the working tree is never touched and other work can
go on. Slow: not part of the suite.

    .venv/bin/python scripts/mutate.py                 # every target
    .venv/bin/python scripts/mutate.py --target pacer  # one
    .venv/bin/python scripts/mutate.py --list          # the mutants, not run
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: target name -> (module file, the unit tests that pin it down)
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "streaming": ("appliance/protocol/streaming.py", ("tests/protocol/test_streaming.py",)),
    "agent": ("appliance/protocol/agent.py", ("tests/protocol/test_agent.py",)),
    "pacer": ("appliance/protocol/pacer.py", ("tests/protocol/test_pacer.py",)),
    "retry": ("appliance/protocol/retry.py", ("tests/protocol/test_retry.py",)),
    "messages": ("appliance/protocol/messages.py", ("tests/protocol/test_messages.py",)),
    "policy": ("appliance/protocol/policy.py", ("tests/protocol/test_policy.py",)),
    "tokens": ("appliance/connection/tokens.py", ("tests/connection/test_tokens.py",)),
}

#: Per-mutant test timeout: a mutant that makes a loop run forever is killed.
TEST_TIMEOUT_SECONDS = 60.0

_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
}


@dataclass(frozen=True)
class Mutant:
    target: str
    index: int  # the n-th mutable node in walk order
    line: int
    description: str


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """Constants that are docstrings (mutating them changes nothing)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _annotation_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
            args = node.args
            for arg in [*args.args, *args.kwonlyargs, *args.posonlyargs, args.vararg, args.kwarg]:
                if arg is not None:
                    annotations.append(arg.annotation)
        for ann in annotations:
            if ann is not None:
                ids.update(id(n) for n in ast.walk(ann))
    return ids


def _mutations(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(description, replacement node) for each way to mutate ``node``."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        swap = _COMPARE_SWAPS.get(type(node.ops[0]))
        if swap is not None:
            new = copy.deepcopy(node)
            new.ops = [swap()]
            yield f"{type(node.ops[0]).__name__} -> {swap.__name__}", new
    elif isinstance(node, ast.BinOp):
        swap_op = _BINOP_SWAPS.get(type(node.op))
        if swap_op is not None:
            new = copy.deepcopy(node)
            new.op = swap_op()
            yield f"{type(node.op).__name__} -> {swap_op.__name__}", new
    elif isinstance(node, ast.AugAssign):
        swap_op = _BINOP_SWAPS.get(type(node.op))
        if swap_op is not None:
            new = copy.deepcopy(node)
            new.op = swap_op()
            yield f"{type(node.op).__name__}= -> {swap_op.__name__}=", new
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield f"{type(node.op).__name__} -> {type(new.op).__name__}", new
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not x -> x", copy.deepcopy(node.operand)
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield f"{value} -> {not value}", ast.Constant(not value)
        elif isinstance(value, int | float):
            yield f"{value!r} -> {value + 1!r}", ast.Constant(value + 1)
            if value != 0:
                yield f"{value!r} -> 0", ast.Constant(type(value)(0))


class _Mutator(ast.NodeTransformer):
    """Replaces the ``wanted``-th mutation found in walk order."""

    def __init__(self, skip: set[int], wanted: int | None) -> None:
        self.skip = skip
        self.wanted = wanted
        self.count = 0
        self.found: list[tuple[int, str]] = []  # (line, description)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        replaced = None
        if id(node) not in self.skip:
            for description, new in _mutations(node):
                if self.count == self.wanted:
                    replaced = ast.copy_location(new, node)
                self.found.append((getattr(node, "lineno", 0), description))
                self.count += 1
        if replaced is not None:
            return replaced
        return super().generic_visit(node)


def _setting_nodes(tree: ast.Module) -> set[int]:
    """Named settings: module constants and class-level defaults (limits objects).

    Their values are choices made in one place, not logic; a test that pinned
    each number would only restate it. Their uses are mutated like any code.
    """
    ids: set[int] = set()
    bodies: list[list[ast.stmt]] = [tree.body]
    bodies += [node.body for node in tree.body if isinstance(node, ast.ClassDef)]
    for body in bodies:
        for stmt in body:
            if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
                ids.update(id(n) for n in ast.walk(stmt.value))
    return ids


def _default_nodes(tree: ast.AST) -> set[int]:
    """Parameters' default values: settings too, written where they are taken."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    ids.update(id(n) for n in ast.walk(default))
    return ids


def _decorator_nodes(tree: ast.AST) -> set[int]:
    """Decorators (``@dataclass(frozen=True)``) declare a shape, they hold no logic."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                ids.update(id(n) for n in ast.walk(decorator))
    return ids


def _skip_ids(tree: ast.Module) -> set[int]:
    return (
        _docstring_nodes(tree)
        | _annotation_nodes(tree)
        | _setting_nodes(tree)
        | _default_nodes(tree)
        | _decorator_nodes(tree)
    )


def list_mutants(target: str, source: str | None = None) -> list[Mutant]:
    """The mutants of ``target`` (of ``source``, its text as copied, when given)."""
    tree = ast.parse(source if source is not None else (ROOT / TARGETS[target][0]).read_text())
    mutator = _Mutator(_skip_ids(tree), wanted=None)
    mutator.visit(tree)
    return [Mutant(target, i, line, d) for i, (line, d) in enumerate(mutator.found)]


def mutated_source(source: str, index: int) -> str:
    tree = ast.parse(source)
    mutator = _Mutator(_skip_ids(tree), wanted=index)
    new_tree = ast.fix_missing_locations(mutator.visit(tree))
    return ast.unparse(new_tree)


def _copy_tree() -> Path:
    """A scratch copy of what the unit tests import (run from it, it shadows the install)."""
    scratch = Path(tempfile.mkdtemp(prefix="appliance-mutants-"))
    for name in ("appliance", "tests"):
        shutil.copytree(ROOT / name, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, scratch / name)
    return scratch


def _run_tests(tree: Path, tests: tuple[str, ...]) -> bool:
    """True if the tests pass in ``tree`` (the mutant survives)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        result = subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, timeout=TEST_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def run_target(target: str, tree: Path, out: list[dict[str, object]]) -> tuple[int, int]:
    rel, tests = TARGETS[target]
    path = tree / rel
    original = path.read_text()
    if not _run_tests(tree, tests):
        raise SystemExit(f"{target}: the tests fail without any mutant; fix them first")
    # Mutate the copy taken at the start: edits to the working tree during a run change nothing.
    mutants = list_mutants(target, original)
    killed = 0
    try:
        for mutant in mutants:
            path.write_text(mutated_source(original, mutant.index))
            survived = _run_tests(tree, tests)
            killed += not survived
            if survived:
                out.append({"target": target, "line": mutant.line, "mutation": mutant.description})
                print(f"  survived {rel}:{mutant.line}: {mutant.description}", flush=True)
    finally:
        path.write_text(original)
    return killed, len(mutants)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--survivors", type=Path, help="write the survivors as JSON here")
    args = parser.parse_args()
    targets = args.target or list(TARGETS)
    if args.list:
        for target in targets:
            for m in list_mutants(target):
                print(f"{TARGETS[target][0]}:{m.line}: {m.description}")
        return
    survivors: list[dict[str, object]] = []
    summary = []
    tree = _copy_tree()
    try:
        for target in targets:
            started = time.monotonic()
            copied = (tree / TARGETS[target][0]).read_text()
            print(f"{target}: {len(list_mutants(target, copied))} mutants", flush=True)
            killed, total = run_target(target, tree, survivors)
            score = killed / total if total else 1.0
            summary.append((target, killed, total, score, time.monotonic() - started))
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    print()
    for target, killed, total, score, seconds in summary:
        print(f"{target:10s} killed {killed}/{total} ({score:.0%}) in {seconds:.0f} s")
    if args.survivors:
        args.survivors.write_text(json.dumps(survivors, indent=1))


if __name__ == "__main__":
    main()
