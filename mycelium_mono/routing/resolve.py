"""Stage 2: what the names in a routing table mean.

Two scopes answer "what is ``RiskManager``?":

- :class:`StaticScope` (the import hook) reads the routing module's top-level statements
  *before the module runs*. Imported names are resolved by importing the module they come
  from (the routing module would import it a moment later anyway) and looking at the live
  class; classes defined in the routing module itself are read from their AST. Every file it
  looks at is recorded: it becomes part of the cache key.
- :class:`LiveScope` (``@routing_config`` without the hook) looks names up in the module's
  namespace at the moment the decorator runs.

Both produce the same :class:`MessageInfo` / :class:`HandlerInfo`, so the same code is
generated either way.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import functools
import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mycelium_mono.handlers import (
    MessageHandler,
    defines_handle,
    generic_parameter,
    handled_messages,
    handles,
)
from mycelium_mono.messages import is_message_class, snake_case
from mycelium_mono.routing.errors import import_failure_note
from mycelium_mono.routing.parse import dotted_name

__all__ = [
    "HandlerInfo",
    "LiveScope",
    "LocalClass",
    "MessageInfo",
    "MethodInfo",
    "Resolution",
    "RoutingSource",
    "Scope",
    "StaticScope",
    "Unresolved",
    "nested_statements",
    "stale_resolution",
]


@dataclass(frozen=True)
class MessageInfo:
    """A message class a route names."""

    key: str
    """``module.QualName``: identity across the live and the static view."""
    name: str
    type_id: int | None


@dataclass(frozen=True)
class MethodInfo:
    method: str
    is_async: bool


@dataclass(frozen=True)
class RoutingSource:
    """The routing module's own text: where a method of a class defined in it is read from.

    The hook rewrites the module before it runs, so such a method exists only as source; the
    run-time build reads it from the same source, and the two builds agree (issue 11.2).
    """

    module: str
    filename: str
    text: str
    tree: ast.Module = field(compare=False, hash=False, repr=False)
    shares_globals: bool = True
    """The generated bus runs in this module's own globals (the hook's rewrite, and the
    run-time build of a module-level routing class; not one in a function, built in a
    copy of them): a method written here can then read its globals as it does itself."""

    def class_node(self, name: str) -> ast.ClassDef | None:
        """The top-level ``class name`` statement (the last one, as the module leaves it)."""
        found = [n for n in self.tree.body if isinstance(n, ast.ClassDef) and n.name == name]
        return found[-1] if found else None

    @functools.cached_property
    def _globals(self) -> StaticScope:
        return StaticScope(self.tree, self.module, self.filename, before_line=sys.maxsize,
                           text=self.text)

    def defines(self, name: str) -> bool:
        """Whether the module binds the global ``name`` (by the time a handler runs)."""
        scope = self._globals
        if name in scope.bindings:
            return True
        return any(not isinstance(scope._import(_Import(m, name)), Unresolved)
                   for m in scope.star_modules)


@dataclass(frozen=True)
class HandlerInfo:
    """A handler class: which method receives which message (by message key)."""

    key: str
    name: str
    methods: tuple[tuple[str, str, MethodInfo], ...]
    """``(message key, message name, method)`` for every message type the class receives."""
    live: type | None = field(default=None, compare=False, hash=False, repr=False)
    mro: tuple[Any, ...] = field(default=(), compare=False, hash=False, repr=False)
    """The method resolution order, each class live (a ``type``) or, when it is written in the
    routing module, a :class:`LocalClass`; empty when it cannot be known before run time."""
    source: RoutingSource | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def attr(self) -> str:
        """The constructor keyword and attribute name: ``RiskManager`` → ``risk_manager``."""
        return snake_case(self.name)

    def method_for(self, message_key: str) -> MethodInfo | None:
        return next((m for key, _, m in self.methods if key == message_key), None)

    def handled_names(self) -> list[str]:
        return [name for _, name, _ in self.methods]


@dataclass(frozen=True)
class LocalClass:
    """A class defined in the routing module itself, seen before the module runs."""

    node: ast.ClassDef


@dataclass(frozen=True)
class Unresolved:
    reason: str
    help: str
    code: str = "E0002"
    unknown_name: bool = False
    """Nothing in the module binds the name (as opposed to an import or attribute failing)."""
    note: str | None = None


Symbol = Any  # a live object, a LocalClass or an Unresolved


def message_key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Scope:
    """Resolves dotted names and describes what they name."""

    module_name: str

    def resolve(self, text: str) -> Symbol:
        raise NotImplementedError

    def message_info(self, symbol: Symbol) -> MessageInfo | None:
        if isinstance(symbol, LocalClass):
            return None
        if is_message_class(symbol):
            return MessageInfo(message_key(symbol), symbol.__name__, symbol.TYPE_ID)
        return None

    source: RoutingSource | None = None

    def handler_info(self, symbol: Symbol) -> HandlerInfo | None:
        if isinstance(symbol, type):
            return live_handler_info(symbol, self.source)
        return None


def live_handler_info(cls: type, source: RoutingSource | None = None) -> HandlerInfo:
    methods = tuple(
        (message_key(msg), msg.__name__, MethodInfo(m.method, m.is_async))
        for msg, m in handled_messages(cls).items()
    )
    mro = tuple(_as_written(klass, source) for klass in cls.__mro__)
    return HandlerInfo(message_key(cls), cls.__name__, methods, live=cls, mro=mro,
                       source=source)


def _as_written(klass: type, source: RoutingSource | None) -> Any:
    """A class of the routing module as the hook sees it (its statement), others as they are."""
    if source is None or klass.__module__ != source.module or "." in klass.__qualname__:
        return klass
    node = source.class_node(klass.__name__)
    return klass if node is None else LocalClass(node)


def _getattr_chain(obj: Any, parts: list[str], text: str) -> Symbol:
    for part in parts:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            submodule = _import_submodule(obj, part)
            if submodule is None:
                return Unresolved(f"`{text}` does not exist: no attribute {part!r}",
                                  "check the spelling, and that the class is defined there")
            obj = submodule
    return obj


def _import_submodule(obj: Any, part: str) -> Any:
    if not isinstance(obj, type(sys)):
        return None
    try:
        return importlib.import_module(f"{obj.__name__}.{part}")
    except ImportError:
        return None


class LiveScope(Scope):
    """Names as the running module sees them (the no-hook path)."""

    def __init__(self, namespace: Mapping[str, Any], module_name: str,
                 source: RoutingSource | None = None) -> None:
        self.namespace = namespace
        self.module_name = module_name
        self.source = source

    def resolve(self, text: str) -> Symbol:
        head, *rest = text.split(".")
        if head in self.namespace:
            obj = self.namespace[head]
        elif hasattr(builtins, head):
            obj = getattr(builtins, head)
        else:
            modules = {getattr(v, "__module__", None) for v in self.namespace.values()
                       if isinstance(v, type)}
            return Unresolved(f"unknown name `{head}`",
                              _did_you_mean(head, self.namespace)
                              + (_imported_from(head, {m for m in modules if m})
                                 or f"import {head} or define it before the routing class"),
                              unknown_name=True)
        return _getattr_chain(obj, rest, text)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """``did you mean `BedAllocator`? `` for the typo ``BedAlocator`` (else nothing): "import
    BedAlocator (or define it)" alone sent a new user after a class that does not exist."""
    close = difflib.get_close_matches(name, [k for k in known if not k.startswith("__")], n=1,
                                      cutoff=0.8)
    return f"did you mean `{close[0]}`? else " if close else ""


def _imported_from(name: str, modules: Iterable[str]) -> str:
    """``add `Pager` to `from ward.services import ...` `` when a module the routing module
    already imports from defines ``name`` (the class was left out of that import); else
    nothing. Only modules already imported are read: an unknown name imports nothing."""
    for module in sorted(modules):
        found = sys.modules.get(module)
        if found is not None and isinstance(getattr(found, name, None), type):
            return (f"add {name} to `from {module} import ...` above the routing class "
                    f"({module} defines it)")
    return ""


@dataclass(frozen=True)
class _Import:
    module: str
    attr: str | None  # None: the binding is the module itself


@dataclass(frozen=True)
class Resolution:
    """One name the rewrite looked up by importing (``from module import attr``, then the
    attributes ``rest``), and :func:`_describe` of what it found.

    A file digest cannot see that a name means another class now: a handler module that picks
    ``try: from fast import X / except ImportError: from slow import X``, a class chosen by an
    environment variable, a module found elsewhere on ``sys.path``. The cache keeps these and
    the hook looks each one up again before using a cached bus (the routing module is about
    to import the same modules anyway).
    """

    module: str
    attr: str | None
    rest: tuple[str, ...]
    found: str


def stale_resolution(resolutions: Iterable[Resolution]) -> Resolution | None:
    """The first recorded lookup whose answer differs now (None: every name means the same)."""
    for res in resolutions:
        try:
            found = _describe(_lookup(_Import(res.module, res.attr), res.rest))
        except Exception:
            # A module that now raises on import: the rewrite reports it as E0012, with the
            # file and line, exactly as a first import would.
            return res
        if found != res.found:
            return res
    return None


def _lookup(binding: _Import, rest: tuple[str, ...]) -> Symbol:
    """``binding`` imported and its attributes ``rest`` read, as :class:`StaticScope` does."""
    try:
        module = importlib.import_module(binding.module)
    except ImportError as exc:
        return Unresolved(f"cannot import {binding.module!r}: {exc}",
                          _close_module(binding.module, exc)
                          + "check the module name and that its package is importable",
                          code="E0012", note=import_failure_note(exc))
    obj: Any = module
    if binding.attr is not None:
        if hasattr(module, binding.attr):
            obj = getattr(module, binding.attr)
        else:
            obj = _import_submodule(module, binding.attr)
            if obj is None:
                return Unresolved(
                    f"cannot import name {binding.attr!r} from {binding.module!r}",
                    f"check that {binding.module} defines {binding.attr}", code="E0012")
    if not rest:
        return obj
    text = ".".join([binding.attr or binding.module, *rest])
    return _getattr_chain(obj, list(rest), text)


def _close_module(name: str, exc: ImportError) -> str:
    """``did you mean `ward.services`? `` when the routing module itself names a module that
    does not exist (``from ward.service import ...``) and its package has one spelled close to
    it; else nothing. A module that exists but fails inside (its own import of a missing
    module) is not a typo here: the note shows the line that failed."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if not missing or not (name == missing or name.startswith(f"{missing}.")):
        return ""
    import pkgutil

    parent, _, leaf = missing.rpartition(".")  # `wrd.services`: the typo is `wrd`
    try:
        path = getattr(importlib.import_module(parent), "__path__", None) if parent else None
        siblings = [info.name for info in pkgutil.iter_modules(path)]
    except Exception:  # the parent fails too: the message says so already
        return ""
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.8)
    if not close:
        return ""
    fixed = f"{parent + '.' if parent else ''}{close[0]}{name[len(missing):]}"
    return f"did you mean `{fixed}`? else "


def _describe(symbol: Symbol) -> str:
    """What the rewrite took from a looked-up name: for a class, where it is defined, its MRO,
    the methods receiving each message (name and async-ness) and a message's layout; else the
    kind of object (a module by its file)."""
    if isinstance(symbol, Unresolved):
        return "unresolved"
    if isinstance(symbol, type(sys)):
        return f"module {symbol.__name__} {getattr(symbol, '__file__', None)}"
    if not isinstance(symbol, type):
        return f"a {type(symbol).__module__}.{type(symbol).__qualname__}"
    mro = [message_key(k) for k in symbol.__mro__]
    if is_message_class(symbol):  # routed, never a handler: its layout is what counts
        return repr((message_key(symbol), mro, getattr(symbol, "FINGERPRINT", None)))
    try:
        methods = sorted((message_key(m), h.method, h.is_async)
                         for m, h in handled_messages(symbol).items())
    except Exception as exc:  # a class whose members fail to introspect: compare the failure
        methods = [("!", type(exc).__name__, False)]
    return repr((message_key(symbol), mro, methods))


class StaticScope(Scope):
    """Names as the routing module *will* see them, read from its AST before it runs."""

    def __init__(self, tree: ast.Module, module_name: str, filename: str, before_line: int,
                 text: str | None = None):
        self.module_name = module_name
        self.source = RoutingSource(module_name, filename,
                                    current_text(filename) if text is None else text, tree)
        self.package = _package_of(module_name, filename)
        self.bindings: dict[str, object] = {}
        self.star_modules: list[str] = []
        self.imported_files: dict[str, str] = {}
        self.resolutions: dict[tuple[str, str | None, tuple[str, ...]], Resolution] = {}
        """Every name looked up by importing, and what it meant (see :class:`Resolution`)."""
        self.guessed_a_branch = False
        """Whether a binding came from an ``if``/``try`` whose branch is guessed (the last
        binding wins), not known: the generated class then checks, when it is created, that
        the classes Python bound receive their messages with the methods it calls."""
        for stmt in tree.body:
            if stmt.lineno >= before_line:
                break
            self._bind(stmt)

    # -- the symbol table -------------------------------------------------------------------

    def _bind(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    self.bindings[alias.asname] = _Import(alias.name, None)
                else:
                    top = alias.name.partition(".")[0]
                    self.bindings[top] = _Import(top, None)
        elif isinstance(stmt, ast.ImportFrom):
            module = self._absolute(stmt.module or "", stmt.level)
            for alias in stmt.names:
                if alias.name == "*":
                    self.star_modules.append(module)
                else:
                    self.bindings[alias.asname or alias.name] = _Import(module, alias.name)
        elif isinstance(stmt, ast.ClassDef):
            self.bindings[stmt.name] = LocalClass(stmt)
        elif isinstance(stmt, ast.Try) and (taken := self.import_guard_taken(stmt)) is not None:
            for child in taken:
                self._bind(child)
        elif isinstance(stmt, ast.If | ast.Try | ast.With):
            # `try: from fast import X / except ImportError: from slow import X`: the last
            # binding wins, as it would for the branch that usually runs last.
            self.guessed_a_branch |= not isinstance(stmt, ast.With)  # a with-body just runs
            for child in _child_statements(stmt):
                self._bind(child)
        else:
            for name in _bound_names(stmt):
                self.bindings[name] = stmt

    def import_guard_taken(self, stmt: ast.Try) -> list[ast.stmt] | None:
        """The statements Python will run for ``try: <imports> except ImportError: ...``.

        The hook imports what the ``try`` imports (the module would a moment later) and binds
        the branch that will run, as Python does: ``except ImportError: Handler = None`` after
        a working import used to be read as "computed at run time" (E0002, issue 15.7). None
        when the ``try`` does more than import, or does not catch ImportError. ``stubs``
        asks the same question, so a stub types the branch the hook binds.
        """
        if not (stmt.body and all(isinstance(s, ast.Import | ast.ImportFrom) for s in stmt.body)
                and any(_catches_import_error(h) for h in stmt.handlers)):
            return None
        if all(self._would_import(s) for s in stmt.body):
            return [*stmt.body, *stmt.orelse, *stmt.finalbody]
        handler = next(h for h in stmt.handlers if _catches_import_error(h))
        return [*handler.body, *stmt.finalbody]

    def _would_import(self, stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Import):
            return all(not isinstance(self._import(_Import(a.name, None)), Unresolved)
                       for a in stmt.names)
        assert isinstance(stmt, ast.ImportFrom)
        module = self._absolute(stmt.module or "", stmt.level)
        return all(not isinstance(self._import(_Import(module, None if a.name == "*" else a.name)),
                                  Unresolved) for a in stmt.names)

    def _absolute(self, module: str, level: int) -> str:
        if level == 0:
            return module
        try:
            return importlib.util.resolve_name("." * level + module, self.package)
        except (ImportError, ValueError):
            return module

    # -- resolution -------------------------------------------------------------------------

    def resolve(self, text: str) -> Symbol:
        head, *rest = text.split(".")
        binding = self.bindings.get(head)
        if isinstance(binding, LocalClass):
            if rest:
                return Unresolved(f"`{text}` is an attribute of a class, not a class",
                                  "name the handler class itself")
            return binding
        if isinstance(binding, _Import):
            obj = self._import(binding)
            if isinstance(obj, Unresolved) or not rest:
                return obj
            return self._remember(binding, tuple(rest), _getattr_chain(obj, rest, text))
        if binding is not None:
            return Unresolved(
                f"`{head}` is computed when the module runs, so it cannot be routed",
                "import the class, or define it with a class statement at the top level",
            )
        return self._resolve_unbound(head, rest, text)

    def _resolve_unbound(self, head: str, rest: list[str], text: str) -> Symbol:
        for module in self.star_modules:
            star = _Import(module, head)
            obj = self._import(star)
            if not isinstance(obj, Unresolved):
                return self._remember(star, tuple(rest), _getattr_chain(obj, rest, text))
        if hasattr(builtins, head):
            return _getattr_chain(getattr(builtins, head), rest, text)
        modules = {b.module for b in self.bindings.values()
                   if isinstance(b, _Import) and b.attr is not None}
        return Unresolved(f"unknown name `{head}`",
                          _did_you_mean(head, self.bindings)
                          + (_imported_from(head, modules)
                             or f"import {head} (or define it) above the routing class"),
                          unknown_name=True)

    def _import(self, binding: _Import) -> Symbol:
        obj = self._remember(binding, (), _lookup(binding, ()))
        module = sys.modules.get(binding.module)
        if module is not None:  # imported (the name may still be missing from it)
            self._record(module)
        if isinstance(obj, type(sys)):
            self._record(obj)
        return obj

    def _remember(self, binding: _Import, rest: tuple[str, ...], symbol: Symbol) -> Symbol:
        key = (binding.module, binding.attr, rest)
        if key not in self.resolutions:
            self.resolutions[key] = Resolution(binding.module, binding.attr, rest,
                                               _describe(symbol))
        return symbol

    def _record(self, module: Any) -> None:
        path = getattr(module, "__file__", None)
        if path and module.__name__ not in self.imported_files:
            self.imported_files[module.__name__] = path

    def record_class(self, cls: type) -> None:
        """Remember the files defining ``cls`` and its bases: the rewrite depends on them."""
        for klass in cls.__mro__:
            top = klass.__module__.partition(".")[0]
            # The standard library and this library are covered by the interpreter and
            # library versions in the cache key; hashing them would only slow the check.
            if top in sys.stdlib_module_names or top in ("builtins", "mycelium_mono"):
                continue
            module = sys.modules.get(klass.__module__)
            if module is not None:
                self._record(module)

    # -- classes defined in the routing module --------------------------------------------------

    def message_info(self, symbol: Symbol) -> MessageInfo | None:
        if isinstance(symbol, LocalClass):
            if not any(_decorator_named(d, "message") for d in symbol.node.decorator_list):
                return None
            return MessageInfo(self._local_key(symbol), symbol.node.name,
                               _literal_type_id(symbol.node))
        if isinstance(symbol, type):
            self.record_class(symbol)
        return super().message_info(symbol)

    def handler_info(self, symbol: Symbol) -> HandlerInfo | None:
        if isinstance(symbol, LocalClass):
            methods = self._local_methods(symbol.node, set())
            return HandlerInfo(self._local_key(symbol), symbol.node.name,
                               tuple((k, n, m) for k, (n, m) in methods.items()),
                               mro=tuple(self._static_mro(symbol, ()) or ()), source=self.source)
        if isinstance(symbol, type):
            self.record_class(symbol)
        return super().handler_info(symbol)

    def _static_mro(self, local: LocalClass, inside: tuple[str, ...]) -> list[Any] | None:
        """The MRO the class statement will produce (C3, as ``type`` computes it), or None when
        a base is not a plain class the hook can see."""
        if local.node.name in inside:
            return None  # `class A(A)`: refers to an earlier binding; leave it to run time
        bases: list[Any] = []
        for expr in local.node.bases:
            symbol = self._resolve_expr(expr.value if isinstance(expr, ast.Subscript) else expr)
            if not isinstance(symbol, type | LocalClass):
                return None
            bases.append(symbol)
        lineages: list[list[Any]] = []
        for base in bases:
            lineage = (list(base.__mro__) if isinstance(base, type)
                       else self._static_mro(base, (*inside, local.node.name)))
            if lineage is None:
                return None
            lineages.append(lineage)
        merged = _c3_merge([*lineages, bases]) if bases else [object]
        return None if merged is None else [local, *merged]

    def _local_key(self, symbol: LocalClass) -> str:
        return f"{self.module_name}.{symbol.node.name}"

    def _local_methods(
        self, node: ast.ClassDef, seen: set[str]
    ) -> dict[str, tuple[str, MethodInfo]]:
        """message key → (message name, method), bases first so the class's own win."""
        seen.add(node.name)
        found: dict[str, tuple[str, MethodInfo]] = {}
        generic: MessageInfo | None = None
        # The last base first: the first one is nearer in the MRO, so its marks win.
        for base in reversed(node.bases):
            base_generic, inherited = self._base_methods(base, seen)
            generic = base_generic or generic
            found.update(inherited)
        functions = [s for s in node.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)]
        own = {fn.name: fn for fn in functions}
        own_handle = self._own_handle(node)
        # An override hides the marks of the method it replaces, as `handled_messages` sees it
        # (the class's own, unmarked `on_a` is what `getattr` finds).
        found = {key: (name, m) for key, (name, m) in found.items()
                 if m.method not in own and not (m.method == "handle" and own_handle)}
        if generic is not None:
            base_handle = next((m for b in node.bases
                                if (m := self._base_handle(b, {node.name})) is not None), None)
            self._generic_handle(found, generic, own_handle, inherited=base_handle)
        for fn in functions:
            for info in self._handles_targets(fn):
                found[info.key] = (info.name,
                                   MethodInfo(fn.name, isinstance(fn, ast.AsyncFunctionDef)))
        return found

    def _own_handle(self, node: ast.ClassDef) -> MethodInfo | None:
        """The ``handle`` the class statement itself binds, if any: a ``def`` at the top of its
        body, or any other binding (``handle = Base.handle``, ``handle = record``, a ``def`` in
        an ``if``/``try`` of the body). The hook cannot tell what those bind before the module
        runs; it reads them as a sync ``handle`` and the generated class checks that against
        the live class when it is created (``guessed_a_branch``). Only top-level ``def``s
        counted before, so the hook refused with E0001 ("handles: nothing") a routing module
        that the run-time build, and Python, run fine."""
        last: ast.stmt | None = None
        for stmt in node.body:
            if "handle" in _bound_names(stmt) or any(
                    "handle" in _bound_names(c) for c in nested_statements(stmt)):
                last = stmt
        if isinstance(last, ast.FunctionDef | ast.AsyncFunctionDef):
            return MethodInfo("handle", isinstance(last, ast.AsyncFunctionDef))
        if last is None:
            return None
        self.guessed_a_branch = True
        nested = [c for c in nested_statements(last) if "handle" in _bound_names(c)]
        return MethodInfo("handle", bool(nested) and isinstance(nested[-1], ast.AsyncFunctionDef))

    @staticmethod
    def _generic_handle(found: dict[str, tuple[str, MethodInfo]], generic: MessageInfo,
                        own: MethodInfo | None, *,
                        inherited: MethodInfo | None) -> None:
        """``handle`` receives the generic message unless a ``@handles`` mark anywhere in the
        MRO claims it: marks win over the generic ``handle``, as in ``handled_messages``. The
        property test found the hook letting a routing-module class's own ``handle`` beat a
        base's ``@handles`` mark for the same message, while the run-time build kept the mark.
        """
        current = found.get(generic.key)
        if current is not None and current[1].method != "handle":
            return  # a mark claims it
        if own is not None:
            found[generic.key] = (generic.name, own)
        elif current is None and inherited is not None:
            # Inherited: a base's `handle` hidden by a mark that this class's override removed.
            found[generic.key] = (generic.name, inherited)

    def _base_handle(self, base: ast.expr, seen: set[str]) -> MethodInfo | None:
        """The ``handle`` that ``base`` or a class above it defines, nearest first; None when
        there is only MessageHandler's placeholder (as in ``handled_messages``). A base the hook
        cannot see counts as a sync ``handle``: run time has the final word on it."""
        if isinstance(base, ast.Subscript):
            if self._resolve_expr(base.value) is MessageHandler:
                return None
            base = base.value  # `Relay[Swap]`: Relay's handle
        symbol = self._resolve_expr(base)
        if isinstance(symbol, LocalClass):
            if symbol.node.name in seen:
                return MethodInfo("handle", False)  # `class A(A)`: an earlier binding
            for statement in symbol.node.body:
                if "handle" in _bound_names(statement):
                    return MethodInfo("handle", isinstance(statement, ast.AsyncFunctionDef))
            for outer in symbol.node.bases:
                found = self._base_handle(outer, {*seen, symbol.node.name})
                if found is not None:
                    return found
            return None
        if isinstance(symbol, type):
            if symbol is MessageHandler or not defines_handle(symbol):
                return None
            return MethodInfo("handle", inspect.iscoroutinefunction(symbol.handle))  # type: ignore[attr-defined]
        return MethodInfo("handle", False)

    def _base_methods(
        self, base: ast.expr, seen: set[str]
    ) -> tuple[MessageInfo | None, dict[str, tuple[str, MethodInfo]]]:
        args: list[ast.expr] = []
        if isinstance(base, ast.Subscript):
            origin = self._resolve_expr(base.value)
            if origin is MessageHandler:
                return self._message_of_expr(base.slice), {}
            # `Relay[Swap]`: the class `Relay`, its type variables bound to the arguments.
            args, base = _subscript_args(base), base.value
        symbol = self._resolve_expr(base)
        if isinstance(symbol, LocalClass) and symbol.node.name not in seen:
            generic = self._local_generic(symbol.node, {*seen},
                                          self._bind_parameters(symbol.node, args))
            return generic, self._local_methods(symbol.node, seen)
        if isinstance(symbol, type):
            info = self.handler_info(symbol)
            if info is not None:
                generic = self._live_generic(symbol, args, {})
                return generic, {k: (n, m) for k, n, m in info.methods}
        return None, {}

    def _bind_parameters(self, node: ast.ClassDef, args: list[ast.expr],
              bound: dict[str, MessageInfo | None] | None = None
              ) -> dict[str, MessageInfo | None]:
        """``class Relay(MessageHandler[T])`` subscripted ``Relay[Swap]``: ``{"T": Swap}``."""
        return {name: self._bound_message(arg, bound or {})
                for name, arg in zip(self._local_parameters(node), args, strict=False)}

    def _local_parameters(self, node: ast.ClassDef) -> list[str]:
        """The type parameters of a routing-module class, in typing's order: those of a
        ``Generic[...]`` base, else every type variable its bases mention, first seen first (a
        name that is no class counts: ``T = TypeVar("T")`` is not visible before the run)."""
        names: list[str] = []
        for base in node.bases:
            if isinstance(base, ast.Subscript):
                found = [a.id for a in _subscript_args(base) if isinstance(a, ast.Name)
                         and not isinstance(self._resolve_expr(a), type | LocalClass)]
                if self._resolve_expr(base.value) is typing.Generic:
                    return found
                names += [n for n in found if n not in names]
        return names

    def _bound_message(self, expr: ast.expr, bound: dict[str, MessageInfo | None]
                       ) -> MessageInfo | None:
        if isinstance(expr, ast.Name) and expr.id in bound:
            return bound[expr.id]
        return self._message_of_expr(expr)

    def _live_generic(self, cls: type, args: list[ast.expr],
                      bound: dict[str, MessageInfo | None]) -> MessageInfo | None:
        """The message of the compiled class ``cls`` subscripted with ``args`` (none: bare)."""
        found = generic_parameter(cls)
        if isinstance(found, type):
            return self.message_info(found)
        params = list(getattr(cls, "__parameters__", ()))
        if isinstance(found, typing.TypeVar) and found in params:
            index = params.index(found)
            if index < len(args):
                return self._bound_message(args[index], bound)
        return None

    def _local_generic(self, node: ast.ClassDef, seen: set[str],
                       bound: dict[str, MessageInfo | None] | None = None
                       ) -> MessageInfo | None:
        """The ``M`` of the nearest ``MessageHandler[M]`` among the class's bases, at any depth
        (a routing-module class two levels below a handler-module root included); ``bound``
        holds what the class's own type variables stand for (``class Tap(Relay[Swap])``)."""
        seen.add(node.name)
        bound = bound or {}
        for base in node.bases:
            args: list[ast.expr] = []
            if isinstance(base, ast.Subscript):
                if self._resolve_expr(base.value) is MessageHandler:
                    found = self._bound_message(base.slice, bound)
                    if found is not None:
                        return found
                    continue
                args, base = _subscript_args(base), base.value
            symbol = self._resolve_expr(base)
            if isinstance(symbol, LocalClass) and symbol.node.name not in seen:
                found = self._local_generic(symbol.node, seen,
                                            self._bind_parameters(symbol.node, args, bound))
            elif isinstance(symbol, type):
                found = self._live_generic(symbol, args, bound)
            else:
                found = None
            if found is not None:
                return found
        return None

    def _handles_targets(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[MessageInfo]:
        targets = []
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and dec.args and self._is_handles(dec.func):
                info = self._message_of_expr(dec.args[0])
                if info is not None:
                    targets.append(info)
        return targets

    def _is_handles(self, func: ast.expr) -> bool:
        """``handles`` by name, or by what the name is (``from mycelium_mono import handles as
        on`` marks methods at run time too)."""
        return _decorator_named(func, "handles") or self._resolve_expr(func) is handles

    def _message_of_expr(self, node: ast.expr) -> MessageInfo | None:
        symbol = self._resolve_expr(node)
        return None if isinstance(symbol, Unresolved) else self.message_info(symbol)

    def _resolve_expr(self, node: ast.expr) -> Symbol:
        text = dotted_name(node)
        return Unresolved("not a name", "") if text is None else self.resolve(text)


def _subscript_args(node: ast.Subscript) -> list[ast.expr]:
    return list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]


_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(dotted_name(t) in _IMPORT_ERRORS for t in types)


def _c3_merge(sequences: list[list[Any]]) -> list[Any] | None:
    """C3 linearisation of the bases' MROs; None where Python would refuse the class too."""
    pending = [list(seq) for seq in sequences if seq]
    merged: list[Any] = []
    while pending:
        for seq in pending:
            head = seq[0]
            if not any(head in other[1:] for other in pending):
                break
        else:
            return None
        merged.append(head)
        pending = [[c for c in seq if c != head] for seq in pending]
        pending = [seq for seq in pending if seq]
    return merged


def current_text(filename: str) -> str:
    """The file's text as it is on disk now."""
    import linecache

    # linecache keeps a file's text until asked to look again: a routing module edited and
    # reloaded was built from its old table (the module runs the new one right now).
    linecache.checkcache(filename)
    return "".join(linecache.getlines(filename))


def _package_of(module_name: str, filename: str) -> str:
    if filename.endswith("__init__.py"):
        return module_name
    return module_name.rpartition(".")[0]


def _decorator_named(node: ast.expr, name: str) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == name) or (
        isinstance(target, ast.Attribute) and target.attr == name
    )


def _literal_type_id(node: ast.ClassDef) -> int | None:
    for dec in node.decorator_list:
        if isinstance(dec, ast.Call) and _decorator_named(dec, "message"):
            for kw in dec.keywords:
                if kw.arg == "type_id" and isinstance(kw.value, ast.Constant):
                    value = kw.value.value
                    return value if isinstance(value, int) else None
    return None


def _child_statements(stmt: ast.If | ast.Try | ast.With) -> list[ast.stmt]:
    children = list(stmt.body)
    if isinstance(stmt, ast.If | ast.Try):
        children += stmt.orelse
    if isinstance(stmt, ast.Try):
        for handler in stmt.handlers:
            children += handler.body
        children += stmt.finalbody
    return children


def nested_statements(stmt: ast.stmt) -> list[ast.stmt]:
    """Every statement inside the ``if``/``try``/``with`` blocks of ``stmt``, at any depth."""
    if not isinstance(stmt, ast.If | ast.Try | ast.With):
        return []
    out: list[ast.stmt] = []
    for child in _child_statements(stmt):
        out += [child, *nested_statements(child)]
    return out


def _bound_names(stmt: ast.stmt) -> list[str]:
    """Names a top-level statement other than import/class binds (assignments, defs, ...)."""
    names: list[str] = []
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return [stmt.name]
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        targets = [stmt.target]
    for target in targets:
        names.extend(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names
