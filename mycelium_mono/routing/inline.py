"""Handler bodies → inlined statements (issue 7), and the guards that keep them honest.

:func:`inline_method` turns ``RiskManager.handle`` into statements the generated emit method
runs in place of ``self.risk_manager.handle(msg)``, or says why it will not (the reason lands
in ``CallNote.reason``, which ``show`` and ``doctor`` print). The rewrite keeps the method's
meaning:

- ``self`` becomes the emit's local ``h1`` (``h1 = self.risk_manager``), the message parameter
  becomes ``msg``. A method that assigns to either gets a private copy instead.
- Every local (and every comprehension variable) is renamed ``h1_<name>``: two handlers'
  ``total`` cannot collide, nor can they touch ``msg``, ``errors`` or ``exc``.
- Names the method reads from its module are read **through the module**:
  ``_mycelium_m_bandit__services__risk.usd_e6``. The lookup happens on every run, exactly as
  the method's own ``LOAD_GLOBAL`` does, so a module that rebinds ``usd_e6`` later (or a test
  that monkeypatches it) is seen by the inlined code too. Builtins are read through
  ``builtins`` for the same reason; a builtin the handler module shadows *after* the bus was
  generated is the one case the inlined code does not follow (and its mirror: a global the
  module deletes after the build, ``del handlers.max``, is an AttributeError inlined where
  the call falls back to the builtin).
- Private names are mangled with the defining class's name, as the compiler did in the class.
- ``return`` becomes ``break`` out of a one-iteration ``while True:`` (``while True`` has no
  test; measured at about 1.5 ns per handler, and only bodies with an early return get it); a
  ``return`` inside a loop of the handler sets ``returned_h1`` and breaks each enclosing loop
  in turn. A ``try``/``raise`` of a private exception would cost nothing until it runs, then
  far more than a ``break``.

Everything the rewrite cannot prove keeps the call: closures and ``super()``, generators,
``global``/``nonlocal``, a ``break``/``continue`` in a ``finally`` block, frame and namespace
introspection (``warn()`` included: it attributes the warning to its caller's module; and a
caught exception's traceback, ``traceback.format_exc()``, ``e.__traceback__``: its frame is the
emit's), nested functions, imports in the body, decorators, defaults or extra parameters, a
class with its own ``__getattribute__``, a name the module does not define, a class whose
methods swap the instance's ``__class__`` or handler method (:func:`live_swapper`:
``self.handle =``, ``setattr`` with a computed name or looked up by name or under an alias, a
write into ``self.__dict__``/``vars(self)``; in the methods, its metaclass's, a method its class
decorator installs, and the functions and classes of the same top-level package they name as
globals, star-imported ones included), a ``type X = ...`` statement, a
handler module whose own module class answers attribute reads. A swap through code that check
does not read (a method of an object reached through an attribute, ``self.rota.assign(self)``; a
function of another package) is like patching after the build: not seen.

At run time the bus takes the inlined path only while every inlined service passes
:func:`guard_failures`: its exact type is the routed class (not a subclass, not a mock), which
has no ``__getattribute__`` of its own (a class decorator may have installed one the routing
module's text does not show), the method on the class is still the one that was inlined, the
instance has not replaced the method in its ``__dict__`` (with another instance's bound method
either), and the handler module still binds the globals the body reads through it and none of
those it reads as builtins (a cached bus may have been generated in a process where an optional
import failed), and reads through it as its own global lookups would. The guard runs when the
bus is built and whenever a service attribute of the bus is reassigned — one flag test per emit
instead of one type test per handler (3 handlers: 0.58 vs 0.74 of hand-written calls on the
2-core box), and the same flag again before each inlined body after the first: a handler may
replace a later service or detach the bus while the emit runs, and the rest is then called.
Patching a method on a live handler *after* its bus was built is not seen; build the bus after
patching.
"""

from __future__ import annotations

import ast
import builtins
import copy
import dis
import functools
import importlib
import inspect
import linecache
import re
import sys
import types
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mycelium_mono.monolith import note_once

__all__ = [
    "BUILTINS_ALIAS",
    "SUPPORT_ALIAS",
    "InlinedBody",
    "MethodSource",
    "NotInlined",
    "code_crc",
    "code_crc_of",
    "guard",
    "guard_failures",
    "inline_method",
    "inline_source",
    "live_method_source",
    "local_method_source",
    "located",
    "module_alias",
    "recheck",
    "unrename_caught",
]

BUILTINS_ALIAS = "_mycelium_builtins"
SUPPORT_ALIAS = "_mycelium_inline"
"""The module-level name under which generated code imports this module."""

# Names whose mere mention means the body looks at its own frame or namespace, which
# inlining changes.
_INTROSPECTION = frozenset({"locals", "vars", "globals", "dir", "eval", "exec", "super",
                            "__class__", "breakpoint"})
# Functions that read frames, by attribute (`sys._getframe`) or as bare names (`from sys
# import _getframe`); `stack` only as an attribute (`inspect.stack`): it is a common local.
_FRAME_FUNCTIONS = frozenset({"_getframe", "currentframe", "stack", "getframeinfo",
                              "extract_stack", "format_stack", "print_stack", "walk_stack",
                              "getouterframes",
                              # A caught exception's traceback holds the frames it passed
                              # through: inlined, `traceback.format_exc()` in a handler's
                              # `except` named the routing module's `emit_a` and line where the
                              # call names the handler's `handle` (tests/test_stranger8_inliner8).
                              "format_exc", "print_exc", "format_exception", "print_exception",
                              "extract_tb", "format_tb", "print_tb", "walk_tb",
                              "TracebackException", "getinnerframes"})
# Attributes only a frame or traceback object has: never read as bare names.
_FRAME_OBJECT_ATTRS = frozenset({"f_back", "f_locals", "f_globals", "f_code", "f_lineno",
                                 "__traceback__", "tb_frame", "tb_lineno", "tb_next"})
_FRAME_ATTRS = _FRAME_FUNCTIONS | _FRAME_OBJECT_ATTRS
_FRAME_NAMES = _FRAME_FUNCTIONS - {"stack"}


@dataclass(frozen=True)
class InlinedBody:
    """A method body rewritten to run inside an emit method."""

    statements: tuple[ast.stmt, ...]
    modules: tuple[str, ...]
    """Modules the statements read globals from (the generated module imports them)."""
    qualname: str
    filename: str
    firstlineno: int
    """``co_firstlineno`` of the inlined method: the run-time guard compares it."""
    code_crc: int
    """:func:`code_crc` of the inlined method's code: so does the guard."""
    module: str = ""
    """The module whose globals the body reads (through it, or as builtins)."""
    read_as_builtins: tuple[str, ...] = ()
    """Globals read from ``builtins`` because the module did not bind them when the body was
    rewritten; the guard checks it still does not (``try: from rich import print``)."""
    read_from_module: tuple[str, ...] = ()
    """Globals read through the module because it bound them then; the guard checks it still
    does (the call would fall back to a builtin, or raise NameError, where the read through
    the module raises AttributeError)."""
    watched: tuple[str, ...] = ()
    """Files of the functions the swap check read besides the class's own (``rotate(self)``
    from a module of the package): the hook's cached bus depends on them too."""

    @property
    def origin(self) -> str:
        return f"{self.filename}:{self.firstlineno}"

    @property
    def marker(self) -> str:
        """The string statement opening the inlined block: ``show`` output names the source."""
        return f"inlined {self.qualname} from {self.origin}"


@dataclass(frozen=True)
class NotInlined:
    """Why a handler keeps its call."""

    reason: str


@dataclass(frozen=True)
class MethodSource:
    """What the inliner reads about one method: its code object, its source node, and how a
    name is looked up in its module.

    From a live function in a compiled module (:func:`live_method_source`), or, for a method
    written in the routing module itself, from that module's text before it runs
    (:func:`local_method_source`): the hook sees such a class before it exists, so both
    builds read it that way and decide alike (issue 11.2).
    """

    code: types.CodeType
    node: ast.FunctionDef
    module: str
    defines: Callable[[str], bool]
    """Whether the method's module binds a global of that name."""
    own_globals: bool = False
    """The emit method runs in the method's own module globals (a method written in the
    routing module): its global names stay plain names, looked up exactly as it looks them
    up, falling back to builtins when the module has not bound them."""
    watched: tuple[str, ...] = ()
    """Files the swap check read besides the class's own (see :attr:`InlinedBody.watched`)."""


def code_crc(code: types.CodeType) -> int:
    """A digest of what a code object runs that is the same in every process (``hash`` of bytes
    is salted per process, and the generated class is cached across processes)."""
    consts = tuple(_stable_repr(c) for c in code.co_consts)
    text = repr((consts, code.co_names, code.co_varnames)).encode()
    return zlib.crc32(text, zlib.crc32(code.co_code))


def _stable_repr(const: object) -> object:
    if isinstance(const, types.CodeType):
        return code_crc(const)
    if isinstance(const, frozenset):  # `x in {"a", "b"}`: its order follows salted hashes
        return sorted(repr(item) for item in const)
    return repr(const)


def module_alias(module: str) -> str:
    """The module-level name under which generated code reads ``module``'s globals.

    One name per module: ``_`` is spelled ``_u`` and ``.`` ``__``, so ``er.night__shift`` and
    ``er__night.shift`` (or ``app._impl`` and ``app_.impl``) get two names. Spelling ``.`` as
    ``__`` alone gave them one, and the second import bound it: one handler's body read the
    other module's globals."""
    return "_mycelium_m_" + module.replace("_", "_u").replace(".", "__")


def inline_method(cls: type, method: str, *, instance: str, message: str
                  ) -> InlinedBody | NotInlined:
    """Rewrite ``cls.<method>(instance, message)``'s body for the emit method, or say why not.

    ``instance`` is the emit's local holding the handler, ``message`` the emit's message
    parameter; the handler's own locals are renamed ``<instance>_<name>``.
    """
    if getattr(cls, "__getattribute__", None) is not object.__getattribute__:
        return NotInlined(f"{cls.__name__} defines __getattribute__: attribute access "
                          "is not what it looks like")
    try:
        raw = inspect.getattr_static(cls, method)
    except AttributeError:
        return NotInlined(f"{cls.__name__}.{method} not found")
    found = live_method_source(raw, method)
    if isinstance(found, NotInlined):
        return found
    return inline_source(found, instance=instance, message=message)


def inline_source(source: MethodSource, *, instance: str, message: str
                  ) -> InlinedBody | NotInlined:
    """Rewrite the method ``source`` describes for the emit method, or say why not."""
    problem = _unsupported(source.node)
    if problem is not None:
        return NotInlined(problem)
    return _Rewriter(source, instance, message).run()


# -- finding the function and its source ------------------------------------------------------


def live_method_source(raw: object, method: str) -> MethodSource | NotInlined:
    """The class attribute ``raw`` (``method`` of a compiled module's class) as a source."""
    if not isinstance(raw, types.FunctionType):
        return NotInlined(f"{method} is a {type(raw).__name__}, not a plain function")
    wrapped = getattr(raw, "__wrapped__", None)
    if wrapped is not None:
        return NotInlined("decorated: the class holds a wrapper (__wrapped__), not the "
                          "function written in the class")
    problem = _code_problem(raw.__code__)
    if problem is not None:
        return NotInlined(problem)
    module = sys.modules.get(raw.__module__)
    if module is None or raw.__globals__ is not vars(module):
        return NotInlined(f"its globals are not those of a loaded module ({raw.__module__})")
    source = _source_node(raw)
    if source is None:
        return NotInlined("source not available")
    node, text = source
    if not _source_is_running_code(raw, text):
        return NotInlined("its file differs from the loaded code (edited since it was imported?)")
    return MethodSource(raw.__code__, node, raw.__module__, raw.__globals__.__contains__)


def local_method_source(node: ast.FunctionDef, class_name: str, module: str, filename: str,
                        text: str, defines: Callable[[str], bool], *, own_globals: bool = False
                        ) -> MethodSource | NotInlined:
    """``class_name.<node>`` written in the routing module ``module`` (file text ``text``).

    Its code object is the one compiling that text gives, which is the code the module will
    run: the rewrite leaves every statement but the routing classes as it was written.
    """
    compiled = _compile_file(filename, text)
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    qualname = f"{class_name}.{node.name}"
    code = next((c for c in _nested_code(compiled) if c.co_qualname == qualname
                 and c.co_firstlineno == first), None) if compiled else None
    if code is None:
        return NotInlined("source not available")
    problem = _code_problem(code)
    if problem is not None:
        return NotInlined(problem)
    # A copy: the rewrite renames in place, and `node` is part of the module being compiled.
    return MethodSource(code, copy.deepcopy(node), module, defines, own_globals)


def _code_problem(code: types.CodeType) -> str | None:
    if code.co_freevars:
        names = ", ".join(code.co_freevars)
        return f"uses {'super()/__class__' if '__class__' in names else f'closure over {names}'}"
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        return "generator or coroutine"
    return None


def _source_node(fn: types.FunctionType) -> tuple[ast.FunctionDef, str] | None:
    filename = fn.__code__.co_filename
    # linecache keeps a file's old text until asked to look again: an edited handler must
    # not be inlined from the version a traceback happened to cache earlier.
    linecache.checkcache(filename)
    text = "".join(linecache.getlines(filename, fn.__globals__))
    if not text:
        return None
    try:
        tree = ast.parse(text, filename)
    except SyntaxError:
        return None
    first = fn.__code__.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == fn.__name__:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if start == first:
                return node, text
    return None


def _source_is_running_code(fn: types.FunctionType, text: str) -> bool:
    """The text we are about to inline is the code that runs: compiled again, the file holds a
    code object equal to ``fn``'s (a module edited after its import does not). The whole file
    is compiled because the module around a method changes its bytecode (3.11 uses LOAD_ATTR,
    not LOAD_METHOD, on names bound by an import)."""
    compiled = _compile_file(fn.__code__.co_filename, text)
    if compiled is None:
        return False
    first = fn.__code__.co_firstlineno
    return any(code.co_name == fn.__name__ and code.co_firstlineno == first
               and code == fn.__code__ for code in _nested_code(compiled))


@functools.lru_cache(maxsize=16)
def _compile_file(filename: str, text: str) -> types.CodeType | None:
    try:
        return compile(text, filename, "exec", dont_inherit=True)
    except SyntaxError:
        return None


def _nested_code(code: types.CodeType) -> Iterator[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from _nested_code(const)


# -- what cannot be inlined -------------------------------------------------------------------


def _unsupported(node: ast.FunctionDef) -> str | None:
    decorators = [d for d in node.decorator_list if not _is_handles(d)]
    if decorators:
        return f"decorated with @{ast.unparse(decorators[0])}"
    args = node.args
    if (args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg or args.defaults
            or len(args.args) != 2):
        return "its parameters are not exactly (self, message)"
    for child in _walk_body(node):
        problem = _unsupported_node(child)
        if problem is not None:
            return problem
    return _swaps_own_behaviour(node)


_BEHAVIOUR_ATTRS = frozenset({"__class__", "__dict__", "handle"})


def _swaps_own_behaviour(node: ast.FunctionDef) -> str | None:
    """A body that sets ``self.__class__``, its own method or ``__dict__`` (the state pattern:
    ``self.__class__ = BusyNurse``, ``self.handle = self.busy``) changes which code the next
    message runs. Called, the next emit runs the new method; the guard that would see it runs
    only when the bus is built, so inlined, the next emit pasted the old body again."""
    names = _BEHAVIOUR_ATTRS | {node.name}
    for child in _walk_body(node):
        if isinstance(child, ast.Attribute) and child.attr == "__dict__":
            return "sets .__dict__: the next message may be handled by other code"
        swapped = _swapped_by(child, names)
        if swapped is None:
            continue
        if swapped == COMPUTED and isinstance(child, ast.Call):
            return (f"sets an attribute named at run time through {_called_name(child)}(): "
                    "it may be its method or class, and the next message handled by other "
                    "code")
        if isinstance(child, ast.Call):
            return (f"sets its method or class through {_called_name(child)}(): the next "
                    "message may be handled by other code")
        return f"sets .{swapped}: the next message may be handled by other code"
    return None


_SETATTRS = frozenset({"setattr", "delattr", "__setattr__", "__delattr__"})


COMPUTED = "<computed>"
"""What :func:`_swapped_by` answers for ``setattr(self, name, ...)``: a name only known when it
runs may be ``handle`` or ``__class__`` (``setattr(self, "han" + "dle", ...)`` got past a
check by name)."""


def _swapped_by(node: ast.AST, names: frozenset[str]) -> str | None:
    """The attribute of ``names`` that ``node`` sets or deletes (``x.handle = ...``, ``del
    x.handle``, ``setattr(x, "handle", ...)``), :data:`COMPUTED` for a ``setattr`` whose name
    is not a string literal, None if neither."""
    if isinstance(node, ast.Attribute):
        stored = node.attr in names and isinstance(node.ctx, ast.Store | ast.Del)
        return node.attr if stored else None
    if not (isinstance(node, ast.Call) and _called_name(node) in _SETATTRS):
        return None
    name = _setattr_name(node)
    if name is None:
        return COMPUTED
    return name if name in names else None


def _setattr_name(call: ast.Call) -> str | None:
    """The literal attribute name of a ``setattr``-like call, None if it is computed.
    ``setattr(obj, NAME, v)`` and ``object.__setattr__(obj, NAME, v)`` name it second; a bound
    ``obj.__setattr__(NAME, v)`` (one argument fewer) names it first."""
    args = call.args
    if any(isinstance(arg, ast.Starred) for arg in args) or call.keywords:
        return None
    bound = 1 if _called_name(call) == "__delattr__" else 2
    first = isinstance(call.func, ast.Attribute) and len(args) == bound
    arg = args[0 if first else 1] if len(args) > (0 if first else 1) else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def local_swapper(node: ast.ClassDef, method: str, module: ast.Module | None = None,
                  module_name: str = "", followed: list[str] | None = None, *,
                  depth: int = 0) -> str | None:
    """The method of the class statement ``node`` that swaps the instance's class or its
    ``method`` (``def go_busy(self): self.__class__ = Busy``), if any: the handler's own body
    may do it through such a helper, and the next message is then handled by other code.
    So may a function of the routing module ``module_name`` (its tree ``module``) that a
    method names (``rotate(self)``: :func:`_local_functions`), one it imports from its own
    top-level package (read live, as :func:`live_swapper` reads it), or an alias of setattr
    it binds (``SET = setattr``)."""
    names = _BEHAVIOUR_ATTRS | {method}
    aliases, imported = _module_bindings(module, module_name)
    for keyword in node.keywords:
        meta = keyword.value
        if keyword.arg != "metaclass" or not isinstance(meta, ast.Name) or depth > 8:
            continue  # (a cycle of metaclass names in the text would fail when it runs)
        # `type(self).rotate()` on a metaclass of the user's own (live_swapper's reason).
        local = [s for s in (module.body if module else ()) if isinstance(s, ast.ClassDef)
                 and s.name == meta.id]
        found = (local_swapper(local[-1], method, module, module_name, followed,
                               depth=depth + 1) if local
                 else _imported_swaps(imported[meta.id], names, module_name, followed)
                 if meta.id in imported else None)
        if found is not None:
            return f"its metaclass {meta.id}: {found}"
    found = _decorator_swaps(node, names, module, module_name, imported, followed)
    if found is not None:
        return found
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            swapped = _node_swaps(stmt, names)
            if swapped is not None and not (swapped in _EXEMPT_SWAPS
                                            and stmt.name in _NAMES_FROM_CALLER):
                return f"{node.name}.{stmt.name} {_sets(swapped)}"
            functions = _local_functions(stmt, module)
            for as_method, function in functions:
                swapped = _node_swaps(function, names)
                if swapped is not None and not (swapped in _EXEMPT_SWAPS
                                                and as_method in _NAMES_FROM_CALLER):
                    return (f"{node.name}.{stmt.name} calls {function.name}(), which "
                            f"{_sets(swapped)}")
            read = {n.id for part in (stmt, *(f for _, f in functions)) for n in ast.walk(part)
                    if isinstance(n, ast.Name)}
            for name in sorted(read & aliases):
                return f"{node.name}.{stmt.name} calls setattr as {name}: {_sets(COMPUTED)}"
            for name in sorted(read & imported.keys()):
                swapped = _imported_swaps(imported[name], names, module_name, followed)
                if swapped is not None:
                    return f"{node.name}.{stmt.name} calls {name}(), which {swapped}"
    return None


def _decorator_swaps(node: ast.ClassDef, names: frozenset[str], module: ast.Module | None,
                     module_name: str, imported: dict[str, tuple[str, str]],
                     followed: list[str] | None) -> str | None:
    """What a class decorator of the class statement ``node`` sets, if a swap: a function of
    the routing module or one it imports from its own package. It runs when the class is
    made, as ``__init_subclass__`` does (what it sets then, the guard sees), but a method it
    installs runs with the handler: ``cls.go_on_break = go_on_break``, whose body sets
    ``self.handle``. A handler module's class is read after its decorators ran (the installed
    method is among its functions); the routing module's text shows only the decorator's
    name, and the nurse sent on break by it kept her inlined body."""
    used = {n.id for d in node.decorator_list for n in ast.walk(d) if isinstance(n, ast.Name)}
    if not used:
        return None
    for stmt in module.body if module is not None else ():
        if not (isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name in used):
            continue
        functions = [stmt, *(f for _, f in _local_functions(stmt, module))]
        functions += [n for f in functions for n in ast.walk(f)
                      if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n is not f]
        for function in functions:
            swapped = _node_swaps(function, names)
            if swapped is not None and not (swapped in _EXEMPT_SWAPS
                                            and (function is stmt
                                                 or function.name in _NAMES_FROM_CALLER)):
                return f"its decorator {stmt.name} {_sets(swapped)}"
    for name in sorted(used & imported.keys()):
        swapped = _imported_swaps(imported[name], names, module_name, followed,
                                  as_method="__init_subclass__")
        if swapped is not None:
            return f"its decorator {name} {swapped}"
    return None


def _module_bindings(module: ast.Module | None, module_name: str
                     ) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """The routing module's top-level aliases of setattr/delattr, and the names it imports
    from modules of its own top-level package (name: (module, attribute))."""
    aliases: set[str] = set()
    imported: dict[str, tuple[str, str]] = {}
    if module is None:
        return aliases, imported
    package = module_name.partition(".")[0]
    for stmt in module.body:
        if isinstance(stmt, ast.Assign) and (
                (isinstance(stmt.value, ast.Name) and stmt.value.id in _SETATTRS)
                or (isinstance(stmt.value, ast.Attribute) and stmt.value.attr in _SETATTRS)):
            aliases.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = module_name.rsplit(".", stmt.level)[0]
                source = f"{base}.{stmt.module}" if stmt.module else base
            else:
                source = stmt.module or ""
            for alias in stmt.names:
                if source == "builtins" and alias.name in _SETATTRS:
                    aliases.add(alias.asname or alias.name)
                elif source.partition(".")[0] == package and alias.name == "*":
                    # `from app.handlers import *`: the names it binds, as Python binds them.
                    # Skipped, a `rotate(self)` or a class decorator imported so was never
                    # read, and the nurse it sent on break kept her inlined body.
                    imported.update((name, (source, name)) for name in _star_names(source))
                elif source.partition(".")[0] == package:
                    imported[alias.asname or alias.name] = (source, alias.name)
    return aliases, imported


def _star_names(module_name: str) -> list[str]:
    """The names ``from module_name import *`` binds (read live, as :func:`_imported_swaps`
    reads them: both builds import it before the routing module's code runs)."""
    try:
        module = importlib.import_module(module_name)
    except Exception:  # the routing module's own import will report it
        return []
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    return [name for name in names if isinstance(name, str)]


def _imported_swaps(where: tuple[str, str], names: frozenset[str], module_name: str,
                    followed: list[str] | None, *, as_method: str = "") -> str | None:
    """What the function or class a routing module imports from its own package sets (read
    live: both builds import that module before the routing module's code runs). A function
    is read as the method ``as_method`` (a class decorator runs as ``__init_subclass__``)."""
    try:
        value = getattr(importlib.import_module(where[0]), where[1])
    except Exception:  # the routing module's own import will report it
        return None
    package = module_name.partition(".")[0]
    if isinstance(value, type):
        # Only the class's functions written in the package, as `_live_functions` follows
        # them for a handler module's class. A `@message` class's generated `__new__` sets
        # `self.__class__` on the record it builds (`__module__` None): read as a swap, every
        # routing-module handler that built or matched a message of its package
        # (`self.emit(Place(...))`) kept its call, where the same class in a handler module
        # was inlined.
        candidates = [(attr, fn) for attr, fn in _functions_of(value)
                      if str(fn.__module__).partition(".")[0] == package]
    elif (isinstance(value, types.FunctionType)
            and str(value.__module__).partition(".")[0] == package):
        # (Not a function the package only re-exports: `handles`, bound in a handler module
        # by `from mycelium_mono import handles`, came with `from app.handlers import *`.)
        candidates = [(as_method, value)]
    else:
        return None
    for as_method, fn in candidates:
        for _, other in [(as_method, fn), *_live_functions(fn, package)]:
            if not isinstance(other, types.FunctionType):
                return _sets(COMPUTED)
            if followed is not None:
                followed.append(other.__code__.co_filename)
            for each in (other.__code__, *_nested_code(other.__code__)):
                swapped = _code_swaps(each, names)
                if swapped is not None and not (swapped in _EXEMPT_SWAPS
                                                and as_method in _NAMES_FROM_CALLER):
                    return _sets(swapped)
    return None


def _node_swaps(function: ast.FunctionDef | ast.AsyncFunctionDef, names: frozenset[str]
                ) -> str | None:
    nodes = [n for part in function.body for n in ast.walk(part)]
    for child in nodes:
        swapped = _swapped_by(child, names)
        if swapped is not None:
            return swapped
        if _folded_str(child) in _SETATTRS:
            # `getattr(builtins, "setattr")(self, "handle", f)`: setattr looked up by name.
            return COMPUTED
    reads_dict = any((isinstance(n, ast.Attribute) and n.attr == "__dict__")
                     or (isinstance(n, ast.Name) and n.id == "vars") for n in nodes)
    writes = any((isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store | ast.Del))
                 or (isinstance(n, ast.Attribute) and n.attr in _DICT_WRITERS)
                 for n in nodes)
    return DICT_WRITE if reads_dict and writes else None


def _folded_str(node: ast.AST) -> str | None:
    """A string constant, or a `+` of them (`"set" + "attr"`, folded by the compiler)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _folded_str(node.left), _folded_str(node.right)
        return left + right if left is not None and right is not None else None
    return None


def _local_functions(function: ast.FunctionDef | ast.AsyncFunctionDef,
                     module: ast.Module | None
                     ) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """The module-level functions of ``module`` that ``function`` names, the methods of its
    classes it names (with their names: ``Rota.assign(self)``), and those they name in
    turn."""
    if module is None:
        return []
    defined: dict[str, list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]] = {}
    for stmt in module.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            defined[stmt.name] = [("", stmt)]
        elif isinstance(stmt, ast.ClassDef):
            defined[stmt.name] = [(f.name, f) for f in stmt.body
                                  if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    found: dict[str, list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]] = {}
    pending = [function]
    while pending and len(found) < _MAX_FOLLOWED:
        for n in (n for part in pending.pop().body for n in ast.walk(part)):
            if isinstance(n, ast.Name) and n.id in defined and n.id not in found:
                found[n.id] = defined[n.id]
                pending.extend(f for _, f in defined[n.id])
    return [each for functions in found.values() for each in functions]


_MAX_FOLLOWED = 64
"""How many functions a swap check follows from one class (a bound on the work, not a proof:
past it the rest are not read)."""

DICT_WRITE = "<__dict__>"
"""What the swap checks answer for a method that writes into the instance's ``__dict__``
(``self.__dict__["handle"] = f``, ``vars(self).update(handle=f)``): the key may be its
method."""

_DICT_WRITERS = frozenset({"update", "setdefault", "__setitem__", "__delitem__", "pop",
                           "popitem", "clear", "__ior__"})

_NAMES_FROM_CALLER = frozenset({"__init__", "__new__", "__init_subclass__", "__setattr__",
                                "__delattr__", "__setstate__"})
"""Methods whose computed ``setattr`` names (and ``__dict__`` writes) are not the handler's
doing while it runs: ``__init__``, ``__new__`` and ``__setstate__`` ran before the bus
checked the service (the guard sees what they set; a metaclass's, and ``__init_subclass__``,
when the class was made), and a ``__setattr__``/``__delattr__`` passes on the
name of an assignment the body's own check already read (``self.handle = ...`` is refused
there, ``self.count = ...`` is not a swap; ``self.__dict__[name] = value`` is its usual
body)."""

_EXEMPT_SWAPS = frozenset({COMPUTED, DICT_WRITE, "__dict__"})


def _sets(swapped: str) -> str:
    if swapped == COMPUTED:
        return "sets an attribute named at run time"
    if swapped == DICT_WRITE:
        return "writes into __dict__"
    return f"sets .{swapped}"


def live_swapper(klass: type, method: str, followed: list[str] | None = None) -> str | None:
    """:func:`local_swapper` for a class of a compiled module, read from its bytecode.

    Functions its methods read as globals are read too (``rotate(self)``, defined in the
    handler module or imported from the same top-level package), and the functions of classes
    they read so (``Rota.assign(self)``): a state change through them is the same state
    change. Functions of other packages, and methods of objects reached through attributes
    (``self.rota.assign(self)``), are not followed. The files of the functions followed are
    appended to ``followed``: the hook's cache must be invalidated when they change."""
    names = _BEHAVIOUR_ATTRS | {method}
    package = klass.__module__.partition(".")[0]
    for meta in inspect.getmro(type(klass)):
        # `type(self).rotate()` with `def rotate(cls): cls.handle = ...` on a metaclass of the
        # user's own (type, ABCMeta and this library's are not the handler's doing).
        top = meta.__module__.partition(".")[0]
        if top not in sys.stdlib_module_names and top not in _NOT_FOLLOWED:
            found = live_swapper(meta, method, followed)
            if found is not None:
                return f"its metaclass: {found}"
    # The standard library's and this library's classes (Generic, MessageHandler) are read
    # themselves, not followed: their helpers are not the handler's state changes.
    follow = package not in sys.stdlib_module_names and package not in _NOT_FOLLOWED
    for attr, fn in _functions_of(klass):
        for each in (fn.__code__, *_nested_code(fn.__code__)):
            swapped = _code_swaps(each, names)
            if swapped in _EXEMPT_SWAPS and attr in _NAMES_FROM_CALLER:
                continue
            if swapped is not None:
                return f"{klass.__qualname__}.{attr} {_sets(swapped)}"
        for as_method, other in _live_functions(fn, package) if follow else ():
            if not isinstance(other, types.FunctionType):
                return (f"{klass.__qualname__}.{attr} calls {other!r} under another name: it "
                        "sets an attribute named at run time")
            if followed is not None:
                followed.append(other.__code__.co_filename)
            for each in (other.__code__, *_nested_code(other.__code__)):
                swapped = _code_swaps(each, names)
                if swapped in _EXEMPT_SWAPS and as_method in _NAMES_FROM_CALLER:
                    continue  # `Limits()`: a frozen dataclass's own __init__/__setattr__
                if swapped is not None:
                    return (f"{klass.__qualname__}.{attr} calls {other.__qualname__}(), "
                            f"which {_sets(swapped)}")
    return None


def _functions_of(klass: type) -> Iterator[tuple[str, types.FunctionType]]:
    for attr, value in vars(klass).items():
        raw = getattr(value, "__func__", value)  # staticmethod, classmethod
        functions = ([raw.fget, raw.fset, raw.fdel] if isinstance(raw, property) else [raw])
        for fn in functions:
            if isinstance(fn, types.FunctionType):
                yield attr, fn


_NOT_FOLLOWED = frozenset({"builtins", "mycelium_mono"})
_SETATTR_OBJECTS = (setattr, delattr, object.__setattr__, object.__delattr__)


def _live_functions(fn: types.FunctionType, package: str) -> list[tuple[str, object]]:
    """The plain functions of ``package`` that ``fn`` reads as globals (directly, or as
    functions of a class of ``package`` it reads, with their attribute names), and those they
    read in turn; a global bound to ``setattr`` or ``delattr`` (``SET = setattr``) is
    answered as that builtin."""
    found: dict[int, tuple[str, types.FunctionType]] = {}
    pending = [fn]
    while pending and len(found) < _MAX_FOLLOWED:
        current = pending.pop()
        namespace = current.__globals__
        for each in (current.__code__, *_nested_code(current.__code__)):
            for name in each.co_names:
                value = namespace.get(name)
                if any(value is alias for alias in _SETATTR_OBJECTS):
                    return [("", value)]
                candidates: list[tuple[str, types.FunctionType]] = []
                if isinstance(value, type):
                    if str(value.__module__).partition(".")[0] == package:
                        candidates = list(_functions_of(value))
                elif isinstance(value, types.FunctionType):
                    candidates = [("", value)]
                for as_method, other in candidates:
                    if (id(other) not in found
                            and str(other.__module__).partition(".")[0] == package):
                        found[id(other)] = (as_method, other)
                        pending.append(other)
    return list(found.values())


def _code_swaps(code: types.CodeType, names: frozenset[str]) -> str | None:
    if not names.isdisjoint(code.co_names):  # else no attribute of those names to look at
        for instruction in dis.get_instructions(code):
            if (instruction.opname in ("STORE_ATTR", "DELETE_ATTR")
                    and instruction.argval in names):
                return str(instruction.argval)
    strings = {c for c in code.co_consts if isinstance(c, str)}
    if not _SETATTRS.isdisjoint(code.co_names):
        consts = sorted(strings & names)
        if consts:
            return consts[0]
    if not _SETATTRS.isdisjoint(strings):
        # `getattr(builtins, "setattr")(self, "handle", f)`: setattr looked up by name.
        return COMPUTED
    if ("__dict__" in code.co_names or "vars" in code.co_names) and (
            not _DICT_WRITERS.isdisjoint(code.co_names)
            or any(i.opname in ("STORE_SUBSCR", "DELETE_SUBSCR")
                   for i in dis.get_instructions(code))):
        return DICT_WRITE
    if _SETATTRS.isdisjoint(code.co_names):
        return None
    instructions = list(dis.get_instructions(code))
    for index, instruction in enumerate(instructions):
        if (instruction.argval in _SETATTRS and instruction.opname in _CALLEE_LOADS
                and _code_setattr_name(instructions, index) is None):
            return COMPUTED
    return None


_CALLEE_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_FAST",
                           "LOAD_ATTR", "LOAD_METHOD"})
_ARGUMENT_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_GLOBAL",
                             "LOAD_NAME", "LOAD_CONST", "LOAD_SMALL_INT", "LOAD_FAST_BORROW"})
_CALL_ENDS = frozenset({"PRECALL", "CALL"})


def _code_setattr_name(instructions: list[dis.Instruction], callee: int) -> str | None:
    """:func:`_setattr_name` read from bytecode: the call's arguments must each be one plain
    load up to its ``CALL``, or the name counts as computed (None)."""
    values: list[dis.Instruction | None] = []
    for instruction in instructions[callee + 1:]:
        if instruction.opname in _CALL_ENDS:
            break
        if instruction.opname == "LOAD_FAST_LOAD_FAST":  # 3.13: two locals in one
            values += [None, None]
        elif instruction.opname in _ARGUMENT_LOADS:
            values.append(instruction)
        else:
            return None
    else:
        return None
    bound = 1 if instructions[callee].argval == "__delattr__" else 2
    first = instructions[callee].opname in ("LOAD_ATTR", "LOAD_METHOD") and len(values) == bound
    position = 0 if first else 1
    if position >= len(values):
        return None
    arg = values[position]
    if arg is not None and arg.opname == "LOAD_CONST" and isinstance(arg.argval, str):
        return arg.argval
    return None


def _is_handles(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == "handles") or (
        isinstance(target, ast.Attribute) and target.attr == "handles")


def _walk_body(node: ast.FunctionDef) -> Iterator[ast.AST]:
    for stmt in node.body:
        yield from ast.walk(stmt)


def _unsupported_node(node: ast.AST) -> str | None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
        return "defines a nested function, lambda or class"
    if isinstance(node, ast.Global | ast.Nonlocal):
        return "uses global/nonlocal"
    if _TYPE_ALIAS is not None and isinstance(node, _TYPE_ALIAS):
        # `type Bed = ...` (3.12+): the alias is named from its target, and its value (with
        # its own `[T]`) is a lazily evaluated scope of its own. Renamed, `Bed.__name__` was
        # "h1_Bed", and a `T` of `type Queue[T]` was read as the module's global `T`.
        return "defines a type alias (`type X = ...`: a scope of its own)"
    if isinstance(node, ast.Yield | ast.YieldFrom | ast.Await):
        return "yields or awaits"
    if isinstance(node, ast.Import | ast.ImportFrom):
        return "imports inside its body"
    if isinstance(node, ast.Name) and node.id in _INTROSPECTION:
        return f"uses {node.id}"
    if isinstance(node, ast.Attribute) and node.attr in _FRAME_ATTRS:
        return f"inspects frames (.{node.attr})"
    if isinstance(node, ast.Name) and node.id in _FRAME_NAMES:
        # `from sys import _getframe`: inlined, `_getframe().f_code.co_name` was the emit's.
        return f"inspects frames ({node.id})"
    if (isinstance(node, ast.Attribute) and node.attr == "warn") or (
            isinstance(node, ast.Name) and node.id == "warn"):
        # warnings.warn reads its caller's frame: inlined, the warning is the routing
        # module's (its `module=` filters, its registry), and a filter that turns the
        # handler module's warnings into errors no longer fires.
        return "calls warn(): the warning would be attributed to the routing module"
    if isinstance(node, ast.Try | ast.TryStar) and _leaves_loop(node.finalbody):
        # A `break`/`continue` in a `finally` cancels a `return` of its `try`; inlined, that
        # return has already set its flag and the code after the loop would be skipped.
        return "break/continue in a finally block"
    return None


_TYPE_ALIAS: type[ast.AST] | None = getattr(ast, "TypeAlias", None)


def _leaves_loop(body: list[ast.stmt]) -> bool:
    """``body`` holds a ``break`` or ``continue`` of a loop around it (not one of its own)."""
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Break | ast.Continue):
            return True
        if isinstance(node, ast.For | ast.AsyncFor | ast.While):
            pending.extend(node.orelse)  # a loop's `else` belongs to the loop around it
            continue
        if not isinstance(node, ast.expr):
            pending.extend(ast.iter_child_nodes(node))
    return False


# -- the rewrite ------------------------------------------------------------------------------


class _Rewriter:
    def __init__(self, source: MethodSource, instance: str, message: str) -> None:
        self.source = source
        self.code = source.code
        self.node = source.node
        self.instance = instance
        self.message = message
        self.mangle_class = _defining_class(source.code.co_qualname)
        self.modules: set[str] = set()
        self.read_as_builtins: set[str] = set()
        self.read_from_module: set[str] = set()
        self.generators_used_up = False

    def run(self) -> InlinedBody | NotInlined:
        body = [s for s in self.node.body if not _is_docstring(s)] or [ast.Pass()]
        params = [_mangle(a.arg, self.mangle_class) for a in self.node.args.args]
        scope = _FunctionScope.of(body, params, self.mangle_class)
        expected = set(self.code.co_varnames) | set(self.code.co_cellvars)
        if scope.locals | _inlined_comprehension_names(body, self.mangle_class) != expected:
            return NotInlined("could not prove which names are local "
                              f"({sorted(scope.locals ^ expected)})")
        renames = self._renames(params, scope)
        # Read before the rewrite renames the body in place (`sum` becomes a builtins read).
        self.generators_used_up = self._generators_used_up(renames)
        prologue = self._prologue(params, scope, renames)
        try:
            renamed = [_Renamer(self, renames).visit(stmt) for stmt in body]
        except _Unprovable as exc:
            return NotInlined(str(exc))
        private = _private_name(renamed)
        if private is not None:
            return NotInlined(f"uses the private name `{private}` unmangled (written outside a "
                              "class body): inside the bus class the compiler would mangle it")
        for stmt in renamed:
            _unrename_in_handlers(stmt)
        # Not `h1_returned`: every `h1_<name>` is some local's new name.
        differ = _module_reads_differ(sys.modules.get(self.source.module),
                                      tuple(self.read_from_module))
        if differ is not None:
            return NotInlined(differ)
        returns = _Returns(f"returned_{self.instance}", f"returning_{self.instance}")
        rewritten = returns.rewrite(renamed)
        statements = [*prologue, *rewritten,
                      *self._release(body, renames, returns.value if returns.value_used else None)]
        return InlinedBody(tuple(statements), tuple(sorted(self.modules)),
                           self.code.co_qualname, self.code.co_filename,
                           self.code.co_firstlineno, code_crc(self.code), self.source.module,
                           tuple(sorted(self.read_as_builtins)),
                           tuple(sorted(self.read_from_module)), self.source.watched)

    def _generators_used_up(self, renames: dict[str, str]) -> bool:
        """Every generator expression of the body (if any) is an argument of a builtin that
        keeps no reference to it once it returns (``sum``, ``any``, ``sorted``...), read as
        the builtin (the guard checks the module still does not shadow it)."""
        nodes = [n for stmt in self.node.body for n in ast.walk(stmt)]
        consumed = {id(arg) for n in nodes if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Name) and n.func.id in _CONSUMERS
                    and n.func.id not in renames and not self.source.defines(n.func.id)
                    for arg in n.args}
        return all(id(n) in consumed for n in nodes if isinstance(n, ast.GeneratorExp))

    def _renames(self, params: list[str], scope: _FunctionScope) -> dict[str, str]:
        renames = {name: f"{self.instance}_{name}" for name in scope.locals}
        self_name, message_name = params
        # Parameters the body never rebinds are read straight from the emit's own locals.
        if self_name not in scope.stored:
            renames[self_name] = self.instance
        if message_name not in scope.stored:
            renames[message_name] = self.message
        return renames

    def _prologue(self, params: list[str], scope: _FunctionScope, renames: dict[str, str]
                  ) -> list[ast.stmt]:
        copies: list[ast.stmt] = []
        for param, source in zip(params, (self.instance, self.message), strict=True):
            if param in scope.stored:
                copies.append(ast.Assign([ast.Name(renames[param], ast.Store())],
                                         ast.Name(source, ast.Load())))
        return copies

    def _release(self, body: Sequence[ast.stmt], renames: dict[str, str],
                 returned: str | None) -> list[ast.stmt]:
        """``h1_ticket = h1_copies = None`` once the body is done (fallen off its end or left
        by a rewritten ``return``): a called handler's locals die with its frame when it
        returns, before the next handler runs, and a ``__del__``, a ``weakref`` callback or a
        ``WeakSet`` of open tickets sees that. Inlined, they lived on in the emit's frame
        until the emit returned. Released in the frame's order (``co_varnames``, then cells).
        A cell a generator expression may still read (it can outlive the body) is left
        alone: emptying it would change what the generator sees. One used up where it is made
        (``sum(t.n * k for k in ks)``) is gone when the body is done: left alone, the
        ``Ticket`` its cell held was freed after the next handlers, where a call frees it
        before them. Not done when the body
        raises: the traceback keeps a called handler's frame alive too. A returned value
        (``returned``) goes last: a call's caller drops it after the frame is gone, and a
        ``with`` block's ``__exit__`` runs while it is still held."""
        code = self.code
        names = [*code.co_varnames, *(n for n in code.co_cellvars if n not in code.co_varnames)]
        if not self.generators_used_up:
            names = [n for n in names if n not in code.co_cellvars]
        targets = [renames[n] for n in names
                   if n in renames and renames[n] not in (self.instance, self.message)]
        if returned is not None:
            targets.append(returned)
        if not targets:
            return []
        return [ast.Assign([ast.Name(t, ast.Store()) for t in targets], ast.Constant(None))]

    def global_ref(self, name: str) -> ast.expr:
        """``name`` as the handler's module sees it, read live through that module."""
        if self.source.own_globals and self._plain_global(name) and (
                self.source.defines(name) or _is_builtin(name)):
            # The routing module's own method: its global is the emit's global. Read through
            # the module, a name the module binds only on one branch (`if FAST: def round`)
            # raised AttributeError where the method itself falls back to the builtin.
            return ast.Name(name, ast.Load())
        if self.source.defines(name):
            module = self.source.module
            self.modules.add(module)
            self.read_from_module.add(name)
            return ast.Attribute(ast.Name(module_alias(module), ast.Load()), name, ast.Load())
        if _is_builtin(name):
            self.read_as_builtins.add(name)
            return ast.Attribute(ast.Name(BUILTINS_ALIAS, ast.Load()), name, ast.Load())
        raise _Unprovable(f"`{name}` is not defined in {self.source.module}")


    def _plain_global(self, name: str) -> bool:
        """``name`` read as a plain name in the emit method means the same global: it is
        none of the emit's own locals (``self``, ``msg``, ``exc``, ``failure``, ``h1``,
        ``h1_total``, ``returned_h1``, ``returning_h1``) and no private name the bus class
        would mangle."""
        if name in _EMIT_LOCALS or _EMIT_LOCAL.match(name):
            return False
        return not (name.startswith("__") and not name.endswith("__"))


_EMIT_LOCALS = frozenset({"self", "msg", "exc", "failure"})
_CONSUMERS = frozenset({"sum", "any", "all", "min", "max", "sorted", "list", "tuple", "set",
                        "frozenset", "dict"})
"""Builtins that keep no reference to an iterable argument once they return."""
_EMIT_LOCAL = re.compile(r"(returned_|returning_)?h\d+(_|$)")


def _is_builtin(name: str) -> bool:
    """A global lookup falls back to the builtins *namespace*: ``__dict__``, ``__repr__`` and
    the other attributes every module object has are not in it. ``hasattr(builtins, ...)``
    said they were, and an inlined ``__dict__`` read the builtins' dict where the call
    raised ``NameError``."""
    return name in vars(builtins)


class _Unprovable(Exception):
    pass


def _defining_class(qualname: str) -> str | None:
    parts = qualname.split(".")
    if len(parts) < 2 or parts[-2] == "<locals>":
        return None
    return parts[-2]


def _mangle(name: str, cls: str | None) -> str:
    """Private-name mangling as the compiler applies it inside ``class cls``."""
    if cls is None or not name.startswith("__") or name.endswith("__"):
        return name
    stripped = cls.lstrip("_")
    return f"_{stripped}{name}" if stripped else name


def _private_name(statements: Sequence[ast.stmt]) -> str | None:
    """A ``__name`` the rewritten statements still spell that way, if any.

    The emit methods are compiled inside the bus's class statement, where the compiler mangles
    every ``__name`` (an attribute, a keyword argument, a global read through the module
    alias) with the bus class's name. A method written in a class was mangled with its own
    class's name already (``_Station__n``); one written as a module-level function
    (``handle = record``) or in a class named only with underscores was not, and inlined
    ``self.__n`` became ``self._Bus__n``: another attribute than the call sets.
    """
    for stmt in statements:
        for node in ast.walk(stmt):
            for name in (getattr(node, "id", None), getattr(node, "attr", None),
                         getattr(node, "arg", None), getattr(node, "name", None),
                         getattr(node, "rest", None)):
                if (isinstance(name, str) and name.startswith("__")
                        and not name.endswith("__")):
                    return name
    return None


def _unrename_in_handlers(stmt: ast.stmt) -> None:
    """Open every ``except`` block of the body with ``_mycelium_inline.unrename_caught()``.

    An ``UnboundLocalError`` the handler catches itself names the local as the rewrite renamed
    it (``'h1_u'``); a called handler's ``str(e)`` says ``'u'``. :func:`located` mends the
    ones that leave the body; this mends the ones caught inside it, at the cost of one call
    on the exception path only.
    """
    for node in ast.walk(stmt):
        if isinstance(node, ast.Try | ast.TryStar):  # `except*`: the group's own leaves
            for handler in node.handlers:
                call = ast.Expr(ast.Call(ast.Attribute(ast.Name(SUPPORT_ALIAS, ast.Load()),
                                                       "unrename_caught", ast.Load()), [], []))
                handler.body.insert(0, ast.copy_location(call, handler.body[0]))


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(
        stmt.value.value, str)


@dataclass
class _FunctionScope:
    """Names bound in the function's own scope (comprehensions have their own)."""

    locals: set[str]
    stored: set[str]
    """Bound by the body (not only as parameters)."""

    @classmethod
    def of(cls, body: Sequence[ast.stmt], params: list[str], mangle: str | None
           ) -> _FunctionScope:
        stored: set[str] = set()
        for stmt in body:
            _collect_bindings(stmt, stored, mangle, in_comprehension=False)
        return cls(stored | set(params), stored)


def _inlined_comprehension_names(body: Sequence[ast.stmt], mangle: str | None) -> set[str]:
    """Names the compiler lists in the function's ``co_varnames`` for its comprehensions.

    Since 3.12 (PEP 709) list, set and dict comprehensions are inlined into the function: their
    targets appear among its locals although they stay invisible outside the comprehension.
    Generator expressions (and comprehensions inside them, but for their first iterable, which
    the enclosing function evaluates) keep their own code object. Without this, 3.12+ proved
    no handler with a comprehension local and kept every one a call (issue 11.3).
    """
    if sys.version_info < (3, 12):
        return set()
    names: set[str] = set()
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.GeneratorExp):
            # Its first iterable runs in the enclosing function (a comprehension there is
            # inlined into it); the rest belongs to the generator's own code object.
            pending.append(node.generators[0].iter)
            continue
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp):
            names.update(_mangle(n.id, mangle) for gen in node.generators
                         for n in ast.walk(gen.target) if isinstance(n, ast.Name))
        pending.extend(ast.iter_child_nodes(node))
    return names


def _collect_bindings(node: ast.AST, stored: set[str], mangle: str | None, *,
                      in_comprehension: bool) -> None:
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
        for child in ast.iter_child_nodes(node):
            _collect_bindings(child, stored, mangle, in_comprehension=True)
        return
    if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
        stored.add(_mangle(node.target.id, mangle))  # a walrus binds in the function scope
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
        if not in_comprehension:
            stored.add(_mangle(node.id, mangle))
    elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
        stored.add(_mangle(node.name, mangle))
    elif isinstance(node, ast.MatchMapping) and node.rest:
        stored.add(_mangle(node.rest, mangle))
    for child in ast.iter_child_nodes(node):
        _collect_bindings(child, stored, mangle, in_comprehension=in_comprehension)


class _Renamer(ast.NodeTransformer):
    """Locals → ``h1_<name>``, globals → ``module.name``, private names mangled."""

    def __init__(self, rewriter: _Rewriter, renames: dict[str, str]) -> None:
        self.rewriter = rewriter
        self.renames = renames
        self.comprehension_scopes: list[set[str]] = []

    def _visit_comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp
                             | ast.GeneratorExp) -> ast.expr:
        # The first iterable is evaluated in the enclosing scope; everything else in the
        # comprehension's own scope, where its targets are local.
        first = node.generators[0]
        first.iter = self.visit(first.iter)
        targets = {_mangle(n.id, self.rewriter.mangle_class) for gen in node.generators
                   for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
        self.comprehension_scopes.append(targets)
        try:
            for index, gen in enumerate(node.generators):
                gen.target = self.visit(gen.target)
                if index:
                    gen.iter = self.visit(gen.iter)
                gen.ifs = [self.visit(test) for test in gen.ifs]
            for field in ("elt", "key", "value"):
                if hasattr(node, field):
                    setattr(node, field, self.visit(getattr(node, field)))
        finally:
            self.comprehension_scopes.pop()
        return node

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def visit_Name(self, node: ast.Name) -> ast.expr:
        name = _mangle(node.id, self.rewriter.mangle_class)
        if name == "__debug__":
            return node
        if any(name in scope for scope in self.comprehension_scopes):
            return ast.copy_location(ast.Name(f"{self.rewriter.instance}_{name}", node.ctx),
                                     node)
        if name in self.renames:
            return ast.copy_location(ast.Name(self.renames[name], node.ctx), node)
        if not isinstance(node.ctx, ast.Load):
            raise _Unprovable(f"binds `{name}` outside its own scope")
        return ast.copy_location(self.rewriter.global_ref(name), node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        self.generic_visit(node)
        node.attr = _mangle(node.attr, self.rewriter.mangle_class)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.keyword:
        self.generic_visit(node)
        if node.arg is not None:
            node.arg = _mangle(node.arg, self.rewriter.mangle_class)
        return node

    def _rename_identifier(self, name: str | None) -> str | None:
        if name is None:
            return None
        return self.renames[_mangle(name, self.rewriter.mangle_class)]

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        self.generic_visit(node)
        node.name = self._rename_identifier(node.name)
        return node

    def visit_MatchAs(self, node: ast.MatchAs) -> ast.MatchAs:
        self.generic_visit(node)
        node.name = self._rename_identifier(node.name)
        return node

    def visit_MatchStar(self, node: ast.MatchStar) -> ast.MatchStar:
        node.name = self._rename_identifier(node.name)
        return node

    def visit_MatchMapping(self, node: ast.MatchMapping) -> ast.MatchMapping:
        self.generic_visit(node)
        node.rest = self._rename_identifier(node.rest)
        return node


class _Returns:
    """``return`` → ``break`` out of a one-iteration ``while True:`` wrapper.

    A ``return`` inside one of the handler's own loops sets a flag and breaks; after each
    loop that contains one, ``if flag: break`` carries it outwards. A lone trailing
    ``return`` needs no wrapper at all.
    """

    def __init__(self, flag: str, value: str) -> None:
        self.flag = flag
        self.flag_used = False
        self.value = value
        self.value_used = False

    def rewrite(self, body: list[ast.stmt]) -> list[ast.stmt]:
        returns = [n for s in body for n in ast.walk(s) if isinstance(n, ast.Return)]
        if not returns:
            return body
        last = body[-1]
        if len(returns) == 1 and isinstance(last, ast.Return):
            return [*body[:-1], *self._evaluate(last)]
        inner = self._block(body, depth=0)
        wrapped: list[ast.stmt] = [ast.While(ast.Constant(True), [*inner, ast.Break()], [])]
        if self.flag_used:
            wrapped.insert(0, _assign(self.flag, False))
        return wrapped

    def _evaluate(self, node: ast.Return) -> list[ast.stmt]:
        """The returned expression still runs for its side effects; the value is kept in
        ``returning_h1`` until the body is done, as a returning frame holds it: dropped at
        once, a ``return Ticket()`` inside ``with`` was freed before ``__exit__`` ran."""
        if node.value is None or isinstance(node.value, ast.Constant):
            return []
        self.value_used = True
        return [ast.Assign([ast.Name(self.value, ast.Store())], node.value)]

    def _block(self, body: list[ast.stmt], depth: int) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            out.extend(self._stmt(stmt, depth))
        return out

    def _stmt(self, stmt: ast.stmt, depth: int) -> list[ast.stmt]:
        if isinstance(stmt, ast.Return):
            if depth == 0:
                return [*self._evaluate(stmt), ast.Break()]
            self.flag_used = True
            return [*self._evaluate(stmt), _assign(self.flag, True), ast.Break()]
        if isinstance(stmt, ast.For | ast.AsyncFor | ast.While):
            used_before = self.flag_used
            self.flag_used = False
            stmt.body = self._block(stmt.body, depth + 1)
            inner_used = self.flag_used
            self.flag_used = used_before or inner_used
            stmt.orelse = self._block(stmt.orelse, depth)
            if inner_used:
                return [stmt, ast.If(ast.Name(self.flag, ast.Load()), [ast.Break()], [])]
            return [stmt]
        for field in ("body", "orelse", "finalbody"):
            block = getattr(stmt, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(stmt, field, self._block(block, depth))
        for handler in getattr(stmt, "handlers", ()):
            handler.body = self._block(handler.body, depth)
        for case in getattr(stmt, "cases", ()):
            case.body = self._block(case.body, depth)
        return [stmt]


def _assign(name: str, value: bool) -> ast.stmt:
    return ast.Assign([ast.Name(name, ast.Store())], ast.Constant(value))


# -- run time: what generated buses call ------------------------------------------------------


def guard_failures(bus: Any) -> list[str]:
    """Why ``bus`` cannot take its inlined path right now (empty: it can)."""
    problems = []
    cls = type(bus)
    for attr, method, filename, firstlineno, crc, *names in getattr(
            cls, "__mycelium_inlined__", ()):
        routed = cls.__mycelium_services__[attr]
        service = getattr(bus, attr, None)
        if type(service) is not routed:
            problems.append(f"{attr} is a {type(service).__qualname__}, not exactly "
                            f"{routed.__qualname__}: its methods are called")
            continue
        if getattr(routed, "__getattribute__", None) is not object.__getattribute__:
            # The generator refuses a class that defines one, but a class of the routing
            # module is read from its text: a class decorator or a base's __init_subclass__
            # can install one the text does not show, and a call looks `handle` up through it.
            problems.append(f"{routed.__qualname__} has its own __getattribute__: "
                            "its methods are called")
            continue
        fn = inspect.getattr_static(routed, method, None)
        code = getattr(fn, "__code__", None)
        if (not isinstance(fn, types.FunctionType) or code is None
                or (code.co_filename, code.co_firstlineno, code_crc(code))
                != (filename, firstlineno, crc)):
            problems.append(f"{routed.__qualname__}.{method} was replaced after the bus "
                            "was generated")
            continue
        # Not `method in service.__dict__`: on 3.11 touching __dict__ materialises it and every
        # later `self.n` on that instance misses the fast path (63 -> 103 ns per access,
        # measured). The bound method tells the same without looking.
        # And bound to this very service: `self.handle = colleague.handle` keeps the function
        # but calls it on the colleague, where the inlined body ran it on the service itself.
        bound = getattr(service, method, None)
        if (getattr(bound, "__func__", None) is not fn
                or getattr(bound, "__self__", None) is not service):
            problems.append(f"{attr}.{method} is replaced on the instance")
            continue
        assert isinstance(fn, types.FunctionType)  # checked above
        rebound = (_globals_rebound(names[0], names[1], names[2], fn.__globals__,
                                    _generated_namespace(cls)) if names else None)
        if rebound is not None:
            problems.append(f"{routed.__qualname__}.{method}: {rebound}")
    return problems


def _generated_namespace(cls: type) -> dict[str, Any] | None:
    """The globals of the generated bus code, where its module aliases are bound: those of
    the ``__init__`` of the class that was generated (a subclass may define its own)."""
    for klass in cls.__mro__:
        if "__mycelium_inlined__" in vars(klass):
            return getattr(vars(klass).get("__init__"), "__globals__", None)
    return None


def _globals_rebound(module: str, as_builtins: tuple[str, ...], from_module: tuple[str, ...],
                     method_globals: dict[str, Any],
                     generated: dict[str, Any] | None) -> str | None:
    """Why the module's globals are not what the inlined body was written for (None: they
    are). The bus may come from the hook's cache, written in a process where the handler
    module bound other names: an optional import that now succeeds (``try: from rich import
    print``) shadows a builtin the inlined code would still call.

    The names are looked up where the *method* reads them (``method_globals``), and the module
    the inlined code reads through must be that very namespace: after the handler module is
    imported again, ``sys.modules`` holds a new module while the routed class (and the bus's
    alias) may hold the old one, and the new module's names told nothing about the old."""
    namespace = method_globals
    loaded = (generated or {}).get(module_alias(module))  # bound only if names are read
    if from_module and getattr(loaded, "__dict__", None) is not namespace:
        return (f"the inlined body reads {module} through another module object than the "
                "method's own globals (was it imported again?): its method is called")
    shadowing = [name for name in as_builtins if name in namespace]
    if shadowing:
        return (f"{module} now binds {shadowing[0]!r}, which the inlined body reads as the "
                "builtin: its method is called")
    missing = [name for name in from_module if name not in namespace]
    if missing:
        return (f"{module} no longer binds {missing[0]!r}, which the inlined body reads "
                "from it: its method is called")
    differ = _module_reads_differ(loaded, from_module)
    if differ is not None:
        return f"{differ}: its method is called"
    return None


def _module_reads_differ(loaded: object, names: tuple[str, ...]) -> str | None:
    """Why reading ``names`` as attributes of the module ``loaded`` may not give what the
    method's own global lookups give (None: it gives the same). A global lookup reads the
    module's dict; an attribute read goes through the module's class, which a module may have
    swapped for its own (``sys.modules[__name__].__class__ = Lazy``): its ``__getattribute__``
    or a property named like a global answered the inlined read instead of the dict."""
    cls = type(loaded)
    if loaded is None or cls is types.ModuleType or not names:
        return None
    if getattr(cls, "__getattribute__", None) is not types.ModuleType.__getattribute__:
        return (f"module {getattr(loaded, '__name__', '?')} is a {cls.__qualname__} with its "
                "own __getattribute__: a read through the module is not its global lookup")
    own = [klass for klass in cls.__mro__ if klass not in types.ModuleType.__mro__]
    for name in names:
        for klass in own:
            attr = vars(klass).get(name)
            if attr is not None and (hasattr(type(attr), "__set__")
                                     or hasattr(type(attr), "__delete__")):
                return (f"module {getattr(loaded, '__name__', '?')}'s class "
                        f"{cls.__qualname__} defines {name!r} (a descriptor): a read through "
                        "the module is not its global lookup")
    return None


def guard(bus: Any) -> bool:
    """True when every inlined service is exactly the routed, unpatched class."""
    return not guard_failures(bus)


def recheck(bus: Any) -> None:
    """Recompute the bus's inline flag (a service attribute was just set)."""
    object.__setattr__(bus, "_mycelium_inline_ok", guard(bus))


def code_crc_of(code: types.CodeType) -> int:
    """A digest of the opcodes alone: the instruction indexes ``located`` relies on.

    Not of their arguments: the copy ``generate._locate_origins`` reads the runs from gives
    each inlined statement its own end line, so two equal comprehensions there are two code
    constants, while the real method (every inlined node at the routing line) holds one, and
    every later ``LOAD_CONST`` argument differs. The whole-bytecode digest then never matched
    and the note named the method's first line, not the line that raised. Any difference in
    the instructions themselves (an ``EXTENDED_ARG`` included) still changes this digest.
    """
    return zlib.crc32(code.co_code[::2])


def located(exc: Exception,
            origin: tuple[str, str, int, int, tuple[tuple[int, int, int], ...]]) -> Exception:
    """Note on ``exc`` where in the handler's own file the inlined statement that raised is.

    The traceback's frame shows the routing table's line (the code object belongs to the
    routing module); the note names the handler's file, line and source text. ``origin`` is
    ``(file, qualname, first line, bytecode digest, runs)``, the runs mapping instruction
    indexes of the emit method to handler lines (see ``generate._locate_origins``).
    """
    filename, qualname, firstlineno, digest, runs = origin
    _unrename(exc)
    line = _raising_line(exc, digest, runs) or firstlineno
    text = linecache.getline(filename, line).strip()
    note_once(exc, f"inlined {qualname} raised at {filename}:{line}: {text}\n"
                   "(build the bus with inline=False to see the handler's own frame)")
    return exc


def unrename_caught() -> None:
    """Called first in each ``except`` block of an inlined body: the exception being handled,
    if the inlined statements raised it as an ``UnboundLocalError``, names the handler's own
    local (see :func:`_unrename`)."""
    exc = sys.exception()
    if isinstance(exc, BaseExceptionGroup):
        # An `except*` block: the leaves the inlined statements raised themselves are those
        # whose traceback starts in this emit's frame (a group from a nested emit holds
        # leaves that emit has mended already).
        frame = sys._getframe(1)
        pending: list[BaseException] = [exc]
        while pending:
            leaf = pending.pop()
            if isinstance(leaf, BaseExceptionGroup):
                pending.extend(leaf.exceptions)
            elif (isinstance(leaf, Exception) and leaf.__traceback__ is not None
                    and leaf.__traceback__.tb_frame is frame):
                _unrename(leaf)
    elif isinstance(exc, Exception):
        _unrename(exc)


_RENAMED_LOCAL = re.compile(r"'h\d+_(\w+)'")
_RENAMED_FREE = re.compile(r"cannot access free variable '(h\d+_\w+)'")


def _unrename(exc: Exception) -> None:
    """An UnboundLocalError raised by the inlined statements themselves names the local as
    the handler wrote it (``due``), not as the rewrite renamed it (``h1_due``). One raised in
    a callee (``tb_next``: a frame below the emit's) is that callee's and is left alone."""
    tb = exc.__traceback__
    if tb is None or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return
    if type(exc) is UnboundLocalError and tb.tb_next is None:
        exc.args = (_RENAMED_LOCAL.sub(r"'\1'", exc.args[0], count=1),)
    elif type(exc) is NameError and tb.tb_next is not None:
        # "cannot access free variable 'h1_log'": a comprehension or generator expression of
        # the body (its own frame, one below) read a local of the body that is unbound. Only
        # when the name is a cell of the emit that the raising frame reads as a free variable.
        last = tb.tb_next
        while last.tb_next is not None:
            last = last.tb_next
        found = _RENAMED_FREE.match(exc.args[0])
        if (found and found[1] in tb.tb_frame.f_code.co_cellvars
                and found[1] in last.tb_frame.f_code.co_freevars):
            exc.args = (_RENAMED_LOCAL.sub(r"'\1'", exc.args[0], count=1),)


def _raising_line(exc: Exception, digest: int, runs: tuple[tuple[int, int, int], ...]
                  ) -> int | None:
    """The handler line of the instruction that raised, if the emit's bytecode is the one the
    runs were read from (code compiled from the generated *text* is not: its lines differ)."""
    tb = exc.__traceback__
    if tb is None:
        return None
    code = tb.tb_frame.f_code
    if code.co_filename.startswith("<") or code_crc_of(code) != digest:
        return None
    index = tb.tb_lasti // 2
    return next((line for first, end, line in runs if first <= index < end), None)
