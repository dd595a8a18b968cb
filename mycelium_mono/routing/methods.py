"""Which code runs when a routed handler receives a message: one answer for both builds.

The generator asks :func:`find_method` before inlining. It walks the handler's MRO as the
resolver recorded it (:attr:`HandlerInfo.mro`): a class from a compiled module answers with its
live function; a class written in the routing module answers with its statement in that
module's text, read the same way whether the import hook sees the module before it runs or the
decorator builds the bus while it runs. Before this, the hook kept every class of the routing
module a call (it had no live class) while the run-time build inlined it, and an inherited
method from a compiled module was never found for a class the hook had only as source
(issue 11.2).
"""

from __future__ import annotations

import ast
import dataclasses

from mycelium_mono.routing.inline import (
    MethodSource,
    NotInlined,
    live_method_source,
    live_swapper,
    local_method_source,
    local_swapper,
)
from mycelium_mono.routing.resolve import HandlerInfo, LocalClass, nested_statements

__all__ = ["find_method"]


def find_method(handler: HandlerInfo, method: str) -> MethodSource | NotInlined:
    """The source of ``handler.<method>`` as an instance of exactly that class calls it."""
    if not handler.mro:
        return NotInlined(f"the bases of {handler.name} are not plain classes the import hook "
                          "can read before the module runs")
    for klass in handler.mro:
        if klass is not object and _defines(klass, "__getattribute__"):
            return NotInlined(f"{_name(klass)} defines __getattribute__: attribute access is "
                              "not what it looks like")
    tree = handler.source.tree if handler.source is not None else None
    module = handler.source.module if handler.source is not None else ""
    followed: list[str] = []
    for klass in handler.mro:
        if klass is object:
            continue
        swapper = (local_swapper(klass.node, method, tree, module, followed)
                   if isinstance(klass, LocalClass)
                   else live_swapper(klass, method, followed) if isinstance(klass, type) else None)
        if swapper is not None:
            # Called, the next message runs the new method; the inline guard only looks when
            # the bus is built, so inlined, the next emit pasted the old body again.
            return NotInlined(f"{swapper}: the next message may be handled by other code")
    found = _found(handler, method)
    if isinstance(found, MethodSource) and followed:
        found = dataclasses.replace(found, watched=tuple(sorted(set(followed))))
    return found


def _found(handler: HandlerInfo, method: str) -> MethodSource | NotInlined:
    for klass in handler.mro:
        if isinstance(klass, LocalClass):
            found = _local(handler, klass, method)
            if found is not None:
                return found
        elif method in vars(klass):
            return live_method_source(vars(klass)[method], method)
    return NotInlined(f"{handler.name}.{method} not found")


def _local(handler: HandlerInfo, klass: LocalClass, method: str
           ) -> MethodSource | NotInlined | None:
    """The method as written in the routing module's class statement (None: not in it)."""
    source = handler.source
    binding = _binding(klass.node, method)
    if binding is None:
        return None
    if source is None or not isinstance(binding, ast.FunctionDef):
        return NotInlined(f"{klass.node.name}.{method} is not a plain `def` in the class body")
    return local_method_source(binding, klass.node.name, source.module, source.filename,
                               source.text, source.defines, own_globals=source.shares_globals)


def _binding(node: ast.ClassDef, name: str) -> ast.stmt | None:
    """The last statement of the class body binding ``name`` (the one that wins).

    A ``def`` inside an ``if``/``try``/``with`` of the class body counts (as the statement
    holding it: which branch runs is not known here, so it is no plain ``def``). Read only at
    the top level, ``if FAST: def handle ... else: def handle ...`` was skipped and the MRO
    walk went on to a base's ``handle``: that body was inlined and noted as what the class
    runs, and the guard then kept the whole bus on its called path.
    """
    found: ast.stmt | None = None
    for stmt in node.body:
        if name in _bound_by(stmt) or _binds_nested(stmt, name):
            found = stmt
    return found


def _binds_nested(stmt: ast.stmt, name: str) -> bool:
    return any(name in _bound_by(child) for child in nested_statements(stmt))


def _bound_by(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return [stmt.name]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else (
        [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _defines(klass: object, name: str) -> bool:
    if isinstance(klass, LocalClass):
        return _binding(klass.node, name) is not None
    return name in vars(klass)


def _name(klass: object) -> str:
    return klass.node.name if isinstance(klass, LocalClass) else getattr(klass, "__name__", "?")
