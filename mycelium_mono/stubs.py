"""Type stubs for routing modules, so mypy and pyright see the generated buses.

The import hook replaces a ``@routing_config`` class by a generated one when the module is
imported; a type checker reads the source and sees only the routing table. The ``.pyi`` written
here says what the import produces: each bus's constructor (one parameter per handler class, in
first-appearance order), its ``emit_*`` methods with their message types, and ``emit`` for
their union.

A type checker that finds ``routing.pyi`` next to ``routing.py`` reads only the stub, so the
stub is a complete stub of the module: its imports, functions (signatures only), classes
(bodies stubbed), constants (types only) and ``__all__`` are carried over.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence

from mycelium_mono.routing.check import ResolvedRoute, ResolvedTable
from mycelium_mono.routing.parse import decorator_names, is_routing_decorator
from mycelium_mono.routing.resolve import StaticScope

__all__ = ["bus_stub", "module_stub", "stub_path", "write_stub"]

_ONE_LINE_BODY = re.compile(r":\n[ \t]+\.\.\.$", re.MULTILINE)
_TYPING = "_typing"
_MONOLITH = "_mycelium_monolith"
_HEADER = "# Written by `mycelium-mono stubs`: what the import hook generates. Do not edit;\n" \
          "# re-run the command after changing the routing module.\n"


def module_stub(tree: ast.Module, tables: Sequence[ResolvedTable], *,
                scope: StaticScope | None = None) -> str:
    """The ``.pyi`` text for a routing module (parsed source + its resolved tables).

    With the module's ``scope``, an import guard is stubbed as the branch the hook binds.
    """
    if scope is not None:
        tree = _ImportGuards(scope).visit(copy.deepcopy(tree))
    by_line = {table.lineno: table for table in tables}
    types, imports = _handler_types(tree, tables)
    names = decorator_names(tree)  # `routing_config as rc` included, as the hook reads it
    body: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef) and stmt.lineno in by_line and any(
            is_routing_decorator(d, names) for d in stmt.decorator_list
        ):
            body.append(bus_stub(by_line[stmt.lineno], types))
        else:
            body.extend(_stub_statement(stmt, top=True))
    # The private aliases cannot clash with the module's own names; added only when used.
    if _uses_name(body, _TYPING):
        body.insert(_import_position(body), _parse(f"import typing as {_TYPING}"))
    for imported, alias in sorted(imports.items(), reverse=True):
        body.insert(_import_position(body), _parse(f"import {imported} as {alias}"))
    if tables:
        body.insert(_import_position(body), _parse(f"import mycelium_mono.monolith as {_MONOLITH}"))
    module = ast.Module(body=body, type_ignores=[])
    text = ast.unparse(ast.fix_missing_locations(module))
    # Stub style: `def f(self) -> None: ...` on one line (ast.unparse puts `...` on its own).
    return _HEADER + _ONE_LINE_BODY.sub(": ...", text) + "\n"


def bus_stub(table: ResolvedTable, types: Mapping[str, str] | None = None) -> ast.ClassDef:
    """The stub of one generated bus class (``types``: a handler's annotation by its name as
    written, where that name is no class to a type checker; see :func:`_handler_types`)."""
    types = types or {}
    lines = [f"class {table.name}({_MONOLITH}.GeneratedBus):"]
    lines += [f"    {handler.attr}: {types.get(ref.text, ref.text)}"
              for handler, ref in table.handlers]
    params = "".join(f", {handler.attr}: {types.get(ref.text, ref.text)}"
                     for handler, ref in table.handlers)
    lines.append(f"    def __init__(self{params}, *, on_error: {_MONOLITH}.ErrorCallback | None "
                 f"= ..., background: {_MONOLITH}.BackgroundBacklog | None = ...) -> None: ...")
    for route in table.routes:
        lines += _emit_stubs(route)
    messages = " | ".join(route.ref.text for route in table.routes)
    if messages:
        # Narrower than GeneratedBus.emit(Any) on purpose (Any stays a compatible override): a
        # type checker rejects a message this bus does not route, as the generated emit would.
        lines.append(f"    def emit(self, msg: {messages}) -> None: ...")
    node = _parse("\n".join(lines))
    assert isinstance(node, ast.ClassDef)
    return node


def _handler_types(tree: ast.Module, tables: Sequence[ResolvedTable]
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """Annotations for the handlers named by something other than their class: a variable
    (``Fryer = GasFryer if os.environ.get("GAS") else ElectricFryer`` in the handler module).
    The stub wrote ``fryer: Fryer``, and mypy rejects a variable as a type ("Variable ... is
    not valid as a type"), so ``mypy --strict`` failed on correct user code. Such a handler is
    annotated with the class the hook resolved (whose name the bus's attribute already
    carries), imported under a private alias. A name bound by ``import ... as`` stays as
    written: that is a type alias to a type checker. Returns (annotation by name as written,
    private alias by module)."""
    renamed = {local.asname: local.name for node in tree.body if isinstance(node, ast.ImportFrom)
               for local in node.names if local.asname}
    types: dict[str, str] = {}
    imports: dict[str, str] = {}
    for table in tables:
        for handler, ref in table.handlers:
            live = handler.live
            written = renamed.get(ref.text, ref.text.rsplit(".", 1)[-1])
            if not isinstance(live, type) or written == live.__name__:
                continue
            module = sys.modules.get(live.__module__)
            found: object = module
            for part in live.__qualname__.split("."):
                found = getattr(found, part, None)
            if module is None or found is not live or live.__module__ == "__main__":
                continue  # no importable name for it: leave it as written
            alias = imports.setdefault(live.__module__,
                                       "_mycelium_" + live.__module__.replace(".", "_"))
            types[ref.text] = f"{alias}.{live.__qualname__}"
    return types, imports


def _emit_stubs(route: ResolvedRoute) -> list[str]:
    name, message = route.emit_name, route.ref.text
    lines = [f"    def {name}(self, msg: {message}) -> None: ..."]
    if route.split:
        lines.append(f"    def {name}_sync(self, msg: {message}) -> None: ...")
        lines.append(f"    async def {name}_async(self, msg: {message}) -> None: ...")
    return lines


class _ImportGuards(ast.NodeTransformer):
    """``try: from fast import X / except ImportError: from slow import X`` → the branch
    Python will run, decided by the hook's own reading (``StaticScope.import_guard_taken``).

    The stub used to keep the ``try`` body whatever happened: with ``fast`` missing, mypy
    read ``from fast import X`` ("Cannot find implementation or library stub") and typed the
    bus's service as a class that does not exist. Deciding needs the imports tried, which
    resolving the routing table (before any stub is written) has already done.
    """

    def __init__(self, scope: StaticScope) -> None:
        self.scope = scope

    def visit_Try(self, node: ast.Try) -> ast.AST | list[ast.stmt]:
        taken = self.scope.import_guard_taken(node)
        return self.generic_visit(node) if taken is None else taken


def _stub_statement(stmt: ast.stmt, *, top: bool) -> list[ast.stmt]:
    """What a statement of the module (or of a class body) becomes in the stub."""
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return [stmt]
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return [_stub_function(stmt)]
    if isinstance(stmt, ast.ClassDef):
        return [_stub_class(stmt)]
    if isinstance(stmt, ast.AnnAssign):
        return [_stub_ann_assign(stmt)]
    if isinstance(stmt, ast.Assign):
        return _stub_assign(stmt)
    if isinstance(stmt, ast.If):
        return [ast.If(stmt.test, _stub_body(stmt.body), _stub_many(stmt.orelse))]
    if isinstance(stmt, ast.Try):
        return _stub_many(stmt.body)  # the branch that runs when nothing fails
    if top and _is_docstring(stmt):
        return [stmt]
    return []  # executable statements have no place in a stub


def _stub_many(stmts: Iterable[ast.stmt]) -> list[ast.stmt]:
    return [out for stmt in stmts for out in _stub_statement(stmt, top=False)]


def _stub_body(stmts: Iterable[ast.stmt]) -> list[ast.stmt]:
    return _stub_many(stmts) or [ast.Expr(ast.Constant(...))]


def _stub_function(fn: ast.FunctionDef | ast.AsyncFunctionDef
                   ) -> ast.FunctionDef | ast.AsyncFunctionDef:
    args = fn.args
    stubbed = ast.arguments(
        posonlyargs=args.posonlyargs, args=args.args, vararg=args.vararg,
        kwonlyargs=args.kwonlyargs, kw_defaults=[None if d is None else ast.Constant(...)
                                                 for d in args.kw_defaults],
        kwarg=args.kwarg, defaults=[ast.Constant(...) for _ in args.defaults],
    )
    # A copy with three fields replaced, not a node built field by field: it keeps every field
    # this Python defines, such as 3.12's type_params (`def f[T](x: T)`), issue 13.
    stub = copy.copy(fn)
    stub.args, stub.body, stub.type_comment = stubbed, [ast.Expr(ast.Constant(...))], None
    return stub


def _stub_class(node: ast.ClassDef) -> ast.ClassDef:
    stubbed = _stub_many(node.body)
    body = [stmt for stmt in node.body if _is_docstring(stmt)][:1] + _instance_attributes(
        node, stubbed) + stubbed
    stub = copy.copy(node)  # as in _stub_function: keeps type_params and any newer field
    stub.body = body or [ast.Expr(ast.Constant(...))]
    return stub


def _instance_attributes(node: ast.ClassDef, stubbed: list[ast.stmt]) -> list[ast.stmt]:
    """``self.x = ...`` in the class's methods, declared as ``x: T`` (the annotation, or the
    literal's type, else Any): the stub drops the method bodies, and without these a checker
    reading it says the instance has no attribute ``x`` (a handler's ``self.lines``)."""
    declared = {name for stmt in stubbed for name in _declared_names(stmt)}
    annotated: dict[str, ast.expr] = {}  # `self.x: T = ...`: the written type beats a guess
    guessed: dict[str, ast.expr] = {}
    for fn in node.body:
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or not fn.args.args:
            continue
        if any(isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod")
               for d in fn.decorator_list):
            continue
        me = fn.args.args[0].arg
        for stmt in ast.walk(fn):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Attribute) and (
                    _is_attribute_of(stmt.target, me)):
                annotated.setdefault(stmt.target.attr, stmt.annotation)
            elif isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Attribute) and _is_attribute_of(target, me):
                        guessed.setdefault(target.attr, _literal_type(stmt.value))
                    for part in target.elts if isinstance(target, ast.Tuple | ast.List) else ():
                        if isinstance(part, ast.Attribute) and _is_attribute_of(part, me):
                            guessed.setdefault(part.attr, _parse_expr(f"{_TYPING}.Any"))
    found = {**guessed, **annotated}
    return [ast.AnnAssign(ast.Name(name, ast.Store()), found[name], None, 1)
            for name in dict.fromkeys([*guessed, *annotated]) if name not in declared]


def _is_attribute_of(target: ast.expr, name: str) -> bool:
    return isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and (
        target.value.id == name)


def _declared_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt.name]
    if isinstance(stmt, ast.AnnAssign | ast.Assign):
        targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) else stmt.targets
        return [t.id for t in targets if isinstance(t, ast.Name)]
    return []


def _stub_assign(stmt: ast.Assign) -> list[ast.stmt]:
    names = [t for t in stmt.targets if isinstance(t, ast.Name)]
    if len(names) != len(stmt.targets):
        return []  # tuple unpacking, attributes: nothing a checker can use
    value = stmt.value
    if any(t.id == "__all__" for t in names) or isinstance(value, ast.Name | ast.Attribute):
        return [stmt]  # __all__ decides what is exported; `X = Y` may be a type alias
    annotation = _literal_type(value)
    return [ast.AnnAssign(ast.Name(t.id, ast.Store()), annotation, None, 1) for t in names]


def _stub_ann_assign(stmt: ast.AnnAssign) -> ast.AnnAssign:
    if stmt.value is None:
        return stmt
    if _is_bare_final(stmt.annotation):
        # `X: Final = 10` takes its type from the value: a stub keeps a literal value (PEP 484
        # allows it there) and otherwise says what the value's type is, never `= ...`, which
        # would make X an EllipsisType.
        if _simple_literal(stmt.value):
            return stmt
        annotation: ast.expr = ast.Subscript(stmt.annotation, _literal_type(stmt.value),
                                             ast.Load())
        return ast.AnnAssign(stmt.target, annotation, ast.Constant(...), stmt.simple)
    return ast.AnnAssign(stmt.target, stmt.annotation, ast.Constant(...), stmt.simple)


def _is_bare_final(annotation: ast.expr) -> bool:
    return (isinstance(annotation, ast.Name) and annotation.id == "Final") or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Final")


def _simple_literal(value: ast.expr) -> bool:
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub | ast.UAdd):
        value = value.operand
    return isinstance(value, ast.Constant) and type(value.value) in _LITERAL_TYPES


_LITERAL_TYPES = (int, float, complex, str, bytes, bool)


def _literal_type(value: ast.expr) -> ast.expr:
    """The type of a literal value, containers of one element type included; else Any."""
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub | ast.UAdd):
        value = value.operand
    if isinstance(value, ast.Constant) and type(value.value) in _LITERAL_TYPES:
        return ast.Name(type(value.value).__name__, ast.Load())
    if isinstance(value, ast.List | ast.Set | ast.Tuple) and value.elts:
        item = _one_type([_literal_type(e) for e in value.elts])
        if item is not None:
            container = {ast.List: "list", ast.Set: "set", ast.Tuple: "tuple"}[type(value)]
            args = f"{item}, ..." if container == "tuple" else item
            return _parse_expr(f"{container}[{args}]")
    if isinstance(value, ast.Dict) and value.keys and all(k is not None for k in value.keys):
        keys = _one_type([_literal_type(k) for k in value.keys if k is not None])
        values = _one_type([_literal_type(v) for v in value.values])
        if keys is not None and values is not None:
            return _parse_expr(f"dict[{keys}, {values}]")
    return _parse_expr(f"{_TYPING}.Any")


def _one_type(types: list[ast.expr]) -> str | None:
    """The single element type of a literal container, or None when they differ or are Any."""
    names = {ast.unparse(t) for t in types}
    if len(names) != 1:
        return None
    (name,) = names
    return None if name.endswith(".Any") else name


def _uses_name(body: list[ast.stmt], name: str) -> bool:
    return any(isinstance(node, ast.Name) and node.id == name
               for stmt in body for node in ast.walk(stmt))


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(
        stmt.value.value, str)


def _import_position(body: list[ast.stmt]) -> int:
    position = 0
    for index, node in enumerate(body):
        is_doc = index == 0 and _is_docstring(node)
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if is_doc or is_future:
            position = index + 1
    return position


def _parse(source: str) -> ast.stmt:
    return ast.parse(source).body[0]


def _parse_expr(source: str) -> ast.expr:
    return ast.parse(source, mode="eval").body


def stub_path(filename: str, module_name: str, output_dir: str | None) -> str:
    """Next to the module (``routing.py`` → ``routing.pyi``), or mirrored under ``output_dir``."""
    if output_dir is None:
        return os.path.splitext(filename)[0] + ".pyi"
    parts = module_name.split(".")
    if os.path.basename(filename) == "__init__.py":
        parts.append("__init__")
    return os.path.join(output_dir, *parts[:-1], parts[-1] + ".pyi")


def write_stub(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a type checker never reads half a stub)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)
