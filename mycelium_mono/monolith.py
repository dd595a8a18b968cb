"""What a generated ``MonolithBus`` calls at run time.

Generated classes subclass :class:`GeneratedBus` and reach this module as
``_mycelium_monolith``. Nothing here runs on the fast path of an emit unless a handler
raised: the base class holds the cold paths (construction, failures, the generic ``emit``,
the background backlog, pickling).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from mycelium_mono.handlers import (
    BusDetachedError,
    EmitCycleError,
    HandlerOwnedError,
    MessageHandler,
    attach_emitter,
    detach_emitter,
    handled_messages,
    owner_description,
)
from mycelium_mono.messages import is_message_class

if TYPE_CHECKING:
    # Only for the type checker: a bus without background routes never loads asyncio machinery.
    from mycelium_mono.bus.hybrid import BackgroundBacklog as BackgroundBacklog

__all__ = ["BusDetachedError", "CallbackShape", "EmitCycleError", "ErrorCallback", "GeneratedBus",
           "check_error_callback", "failed", "replace_service", "wrong_service"]

ErrorCallback = Callable[[Exception, str, Any], None]
"""``on_error(exc, "risk_manager.handle", msg)``: called once per failed handler."""


@dataclass(frozen=True)
class CallbackShape:
    """How an ``on_error`` is called: the call as the user reads it, a definition that fits,
    and how many positional arguments it receives."""

    form: str
    definition: str
    arity: int


BUS_ON_ERROR = CallbackShape(
    "on_error(exc, where, msg)",
    "def on_error(exc: Exception, where: str, msg: object) -> None "
    "(where is 'risk_manager.handle')", 3)
"""What a generated bus calls its ``on_error`` with."""


def check_error_callback(callback: object, owner: str,
                         expected: CallbackShape = BUS_ON_ERROR) -> None:
    """Refuse, where the bus or backlog is built, an ``on_error`` it could not call.

    The call comes only when a handler fails, so a one-argument callback given to a bus (the
    backlog's own takes one) raised a bare ``TypeError: takes 1 positional argument but 3
    were given`` from inside the failing emit, losing the failure it was to report; an
    ``async def`` one was never awaited, so the failure vanished with a RuntimeWarning.
    """
    if callback is None:
        return
    form, definition = expected.form, expected.definition
    if not callable(callback):
        raise TypeError(f"{owner}: on_error must be a function, got {callback!r}\n"
                        f"help: pass a function called as {form}: {definition}")
    import inspect  # only when a callback is given: a plain bus never loads it

    name = getattr(callback, "__qualname__", repr(callback))
    if inspect.iscoroutinefunction(callback):
        raise TypeError(f"{owner}: on_error={name} is an async def, but it is called as "
                        f"{form} without an await, so it would never run\n"
                        f"help: make it a plain function: {definition}; to await something, "
                        "hand the failure to a task (loop.create_task(...)) from it")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    try:
        signature.bind(*([None] * expected.arity))
    except TypeError as exc:
        raise TypeError(f"{owner}: on_error={name}{signature} cannot be called as {form}: "
                        f"{exc}\nhelp: {definition}") from None


class GeneratedBus:
    """Base of every generated bus: the parts that are the same for all of them."""

    __slots__ = ("__weakref__", "_background", "_dispatch", "_on_error")

    __mycelium_services__: ClassVar[dict[str, type]] = {}
    __mycelium_routes__: ClassVar[dict[type, str]] = {}
    """Per routed message class, the name of the emit method ``emit(msg)`` calls."""
    __mycelium_calls__: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}
    """Per sync emit method, its ``(service attribute, method)`` pairs in routing order."""
    __mycelium_notes__: ClassVar[tuple[tuple[str, str, str, str, str], ...]] = ()
    """Per handler call ``(emit, service attribute, method, "call" | "inlined", reason)``: the
    decision the generator took for this class."""
    __mycelium_origin__: ClassVar[str] = "import hook"
    """``"import hook"`` if the module was rewritten at import, ``"runtime"`` if built by the
    decorator at run time (no hook installed): ``mycelium-mono doctor`` reports it."""

    _dispatch: dict[type, Callable[[Any], None]]
    _on_error: ErrorCallback | None
    _background: BackgroundBacklog | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only where the hook guessed a branch: elsewhere its reading is Python's, or the
        # cache hit has just looked every imported name up again (resolve.stale_resolution).
        if not cls.__dict__.get("__mycelium_check_calls__", False):
            return
        problem = _called_method_mismatch(cls)
        if problem is not None:
            raise TypeError(problem)

    def _setup(
        self,
        on_error: ErrorCallback | None,
        background: BackgroundBacklog | None,
        dispatch: dict[type, Callable[[Any], None]],
    ) -> None:
        check_error_callback(on_error, type(self).__name__)
        self._on_error = on_error
        self._background = background
        self._dispatch = dispatch
        attached: list[object] = []
        try:
            for name in self.__mycelium_services__:
                service = getattr(self, name)
                attach_emitter(service, self.emit)
                attached.append(service)
        except Exception:
            # The bus is not built: the services it took before the refused one stay free.
            for service in attached:
                detach_emitter(service, self)
            raise

    def __delattr__(self, name: str) -> None:
        """``del bus.<service>``: the service is freed and the inline guard runs again, as
        after ``bus.<service> = x``; each emit then fails at that handler's turn.

        Without it the inline flag stayed true and the inlined emit read the empty slot
        outside any handler's ``try``: a bare ``AttributeError`` left the emit, the handlers
        after it never ran and ``on_error`` never heard of it, where the calls record it as
        that handler's failure.
        """
        services = self.__mycelium_services__
        old = getattr(self, name, None) if name in services else None
        object.__delattr__(self, name)
        _release_unless_used(self, old)
        if name in services and getattr(type(self), "__mycelium_inlined__", None):
            # Here, not at the top: a bus that inlines nothing never loads the inliner.
            from mycelium_mono.routing.inline import recheck

            recheck(self)

    def detach(self) -> None:
        """Free this bus's services: their ``self.emit`` no longer reaches this bus, and each
        can be given to another bus or a ServiceRuntime (issue 11.4).

        The bus then refuses every emit with :class:`BusDetachedError`. Each service slot, and
        the backlog's, holds a :class:`_DetachedSlot` whose every attribute access raises, so
        the generated emit code is the same as before (no flag test per emit): a call reads
        ``self.<service>.handle`` and raises; inlined bodies are switched off through the
        inline flag and their all-calls twin runs instead. Calls already queued on the
        background backlog fail the same way when they run: drain before detaching.
        """
        if self._detached():
            return
        services = {name: getattr(self, name) for name in self.__mycelium_services__}
        for service in services.values():
            detach_emitter(service, self)
        slot = _DetachedSlot(f"{type(self).__name__} at 0x{id(self):x}", services)
        for name in services:
            object.__setattr__(self, name, slot)
        object.__setattr__(self, "_background", slot)
        if getattr(type(self), "__mycelium_inlined__", None):
            object.__setattr__(self, "_mycelium_inline_ok", False)

    def _detached(self) -> bool:
        return type(getattr(self, "_background", None)) is _DetachedSlot

    def emit(self, msg: Any) -> None:
        """Deliver ``msg`` to its routed handlers (one dict lookup, then the ``emit_*`` method)."""
        try:
            emit = self._dispatch[type(msg)]
        except KeyError:
            raise self._no_route(msg) from None
        emit(msg)

    @property
    def background(self) -> BackgroundBacklog:
        """The backlog that runs background handlers of ``route(...)`` entries on the loop."""
        if self._background is None:
            # Imported here so a bus without background routes never loads asyncio machinery.
            from mycelium_mono.bus.hybrid import default_backlog

            self._background = default_backlog()
        return self._background

    def _no_route(self, msg: Any) -> TypeError:
        routed = ", ".join(sorted(t.__name__ for t in self._dispatch)) or "nothing"
        given = type(msg).__name__
        # Issue 15: `add str = [...]` was suggested for emit("text"); only messages are routed.
        if isinstance(msg, type) and is_message_class(msg):
            # bus.emit(WardFull): "a type is not a message class" said the opposite of the slip
            given = f"the class {msg.__name__}"
            hint = f"emit an instance: {msg.__name__}(...)"
        elif is_message_class(type(msg)):
            hint = f"add `{given} = [...]` to the routing class"
        else:
            hint = f"emit a @message instance; {_article(given)} {given} is not a message class"
        return TypeError(
            f"{type(self).__name__} has no route for {given}\n"
            f"note: it routes {routed}\n"
            f"help: {hint}"
        )

    def _failed_at(self, emit: str, msg: Any, index: int, exc: Exception) -> None:
        """Handler ``index`` of ``emit`` raised ``exc``: call the ones after it, report all.

        Only failures come here, so the fast path of a generated emit carries no bookkeeping.
        The emit calls this after its ``except`` is over, so the handlers after the failed one
        run as they would called by hand: ``sys.exception()`` is None in them and nothing they
        raise is chained to ``exc``. They are called, never inlined: the inline guard
        guarantees that calling them means the same.
        """
        calls = self.__mycelium_calls__[emit]
        attr, method = calls[index]
        if isinstance(exc, BusDetachedError) and type(getattr(self, attr)) is _DetachedSlot:
            raise exc  # a refused emit, not a handler's failure: no on_error, no group
        if isinstance(exc, RecursionError) and (cycle := _emit_cycle(self, exc)) is not None:
            # Handlers emitting in a cycle: a programming error, not one handler's failure.
            # Raised as it is through every nested emit (no group per level, no on_error, no
            # later handler run at each of hundreds of levels); its traceback reset, or it
            # would print each of the ~1,000 frames of the recursion.
            raise cycle.with_traceback(None) from None
        errors = failed(None, exc, self, f"{attr}.{method}")
        for attr, method in calls[index + 1 :]:
            try:
                getattr(getattr(self, attr), method)(msg)
            except Exception as later:
                failed(errors, later, self, f"{attr}.{method}")
        self._raise_failures(emit, msg, errors)

    def _resume_calls(self, emit: str, msg: Any, index: int) -> None:
        """The inline guard turned false while ``emit`` ran its inlined path: an earlier
        handler replaced a service (``bus.fry = SeniorFry()``) or detached the bus. Handlers
        ``index`` on are called, as the all-calls twin calls them: pasting a body written for
        the routed class onto a subclass, a mock or a detached slot runs other code than the
        call would. Every handler before ``index`` has returned, none raised.
        """
        calls = self.__mycelium_calls__[emit]
        failure: tuple[int, Exception] | None = None
        for position in range(index, len(calls)):
            attr, method = calls[position]
            try:
                getattr(getattr(self, attr), method)(msg)
            except Exception as exc:
                failure = position, exc
                break
        if failure is not None:  # after the except, as the emit itself reaches _failed_at
            self._failed_at(emit, msg, *failure)

    def _raise_failures(self, method: str, msg: Any, errors: list[tuple[str, Exception]]
                        ) -> None:
        """Hand ``errors`` to ``on_error`` or raise them as one group.

        A background emit run by this bus's backlog hands its failures to the backlog too:
        it counts the call as failed and, with no ``on_error`` here, reports each handler's
        exception itself (to its own ``on_error``, or kept for ``drain()``) rather than
        receiving this group around them.
        """
        background = self._background
        taken = (background is not None and not self._detached()
                 and background.take_failures(getattr(self, method), msg,
                                              [exc for _, exc in errors],
                                              reported=self._on_error is not None))
        if self._on_error is not None:
            for where, exc in errors:
                self._on_error(exc, where, msg)
            return
        if taken:
            return
        names = ", ".join(where for where, _ in errors)
        group = ExceptionGroup(
            f"{type(self).__name__}.{method}: {len(errors)} handler(s) failed ({names})",
            [exc for _, exc in errors],
        )
        raise group


    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and ``copy.deepcopy``: a new bus around (copies of) the services, with the
        same ``on_error`` and a new, empty backlog with the same settings. The backlog itself
        belongs to an event loop; its settings used to be dropped, so the copy of a bus built
        with ``BackgroundBacklog(maxsize=3, policy="drop_oldest", on_error=cb)`` queued 10,000
        calls, blocked, and raised background failures from drain() instead of calling cb."""
        if self._detached():
            _DetachedSlot.refuse(self._background)
        services = tuple(getattr(self, name) for name in self.__mycelium_services__)
        backlog = self._background
        settings = None if backlog is None else (
            type(backlog), backlog.maxsize, backlog.policy, backlog.on_error)
        return (_rebuild, (type(self), services, self._on_error, settings))

    def __copy__(self) -> GeneratedBus:
        """``copy.copy(bus)``: a second bus around the same service instances, which only
        plain ``@handles`` classes may be. A ``MessageHandler`` belongs to one bus: the copy
        was refused with a ``HandlerOwnedError`` naming a bus at an address the caller never
        saw; now it says what to do instead."""
        if self._detached():
            _DetachedSlot.refuse(self._background)
        owned = [name for name in self.__mycelium_services__
                 if isinstance(getattr(self, name), MessageHandler)]
        if owned:
            name = type(self).__name__
            raise HandlerOwnedError(
                f"copy.copy() of a {name} would give its MessageHandler services "
                f"({', '.join(owned)}) to a second bus, and each belongs to one bus (its "
                "self.emit reaches only that one)\n"
                f"help: copy.deepcopy(bus) builds a {name} around copies of them; or build "
                f"{name}(...) with new instances")
        rebuild, args = self.__reduce__()
        built: GeneratedBus = rebuild(*args)
        return built

    def __repr__(self) -> str:
        if self._detached():
            return f"{type(self).__name__}(<detached>)"
        services = ", ".join(
            f"{name}={type(getattr(self, name)).__name__}(...)"
            for name in self.__mycelium_services__
        )
        return f"{type(self).__name__}({services})"


def _called_method_mismatch(cls: type[GeneratedBus]) -> str | None:
    """Why the generated calls are not the methods the live classes receive messages with.

    The hook reads the routing module before it runs: a name bound in both branches of an
    ``if`` is read as the last branch binds it, while Python may run the other one. The bus
    was then generated for another class than the one its module routes, and would call a
    method that class does not have (or a coroutine without awaiting it). Checked when the
    class is created, so the import fails instead of every emit.
    """
    services = cls.__mycelium_services__
    received: dict[str, dict[type, Any]] = {}  # once per class: one may serve ten messages
    for message, emit in cls.__mycelium_routes__.items():
        calls = cls.__mycelium_calls__.get(emit, cls.__mycelium_calls__.get(f"{emit}_sync", ()))
        for attr, method in calls:
            handler = services.get(attr)
            if handler is None:
                continue
            if attr not in received:
                received[attr] = handled_messages(handler)
            live = received[attr].get(message)
            if live is not None and live.method == method and not live.is_async:
                continue
            receives = ("does not receive it" if live is None else
                        f"receives it with {'async ' if live.is_async else ''}{live.method}")
            name = getattr(message, "__name__", repr(message))
            return (f"{cls.__qualname__}.{emit} was generated to call {attr}.{method} for "
                    f"{name}, but {handler.__module__}.{handler.__qualname__} {receives}: "
                    "the import hook read the routing module before it ran and found another "
                    "class under that name (one bound differently in the branches of an `if`?)"
                    f"\nhelp: bind {handler.__name__} once at the top level of the routing "
                    "module: choose the class in a handler module, which the hook imports, or "
                    "with try: ... except ImportError:, which it reads as Python runs it")
    return None


class _DetachedSlot:
    """What a detached bus holds instead of each service and of its backlog.

    Every attribute access, store or deletion raises :class:`BusDetachedError` naming who owns
    the handlers now (looked up when it is raised). One instance per detached bus.
    """

    __slots__ = ("_bus", "_services")

    def __init__(self, bus: str, services: dict[str, object]) -> None:
        object.__setattr__(self, "_bus", bus)
        object.__setattr__(self, "_services", services)

    def __getattribute__(self, name: str) -> Any:
        if name == "__class__":  # isinstance() asks for it: a slot is no service
            return _DetachedSlot
        _DetachedSlot.refuse(self)

    def __setattr__(self, name: str, value: object) -> None:
        _DetachedSlot.refuse(self)

    def __delattr__(self, name: str) -> None:
        _DetachedSlot.refuse(self)

    def __repr__(self) -> str:
        return f"<service of detached {object.__getattribute__(self, '_bus')}>"

    @staticmethod
    def refuse(slot: object) -> NoReturn:
        current = sys.exc_info()[1]
        if isinstance(current, BusDetachedError) and current.source is slot:
            # The same refused emit reaching a second slot (the background submit in the
            # `finally` of a hybrid emit): one error, not one chained to another.
            raise current
        raise BusDetachedError(_detached_message(slot), slot)


def _detached_message(slot: object) -> str:
    bus: str = object.__getattribute__(slot, "_bus")
    services: dict[str, object] = object.__getattribute__(slot, "_services")
    owners = {name: owner_description(service) for name, service in services.items()}
    if len(set(owners.values())) == 1:
        now = next(iter(owners.values()))
    else:
        now = ": " + ", ".join(f"{name} → {owner}" for name, owner in owners.items())
    name = bus.split(" at ")[0]
    return (f"{bus} was detached (bus.detach()) and delivers nothing; its handlers now belong "
            f"to{'' if now.startswith(':') else ' '}{now}\n"
            f"help: emit on the bus that owns them now, or build a new {name}(...) with them")


def replace_service(bus: GeneratedBus, name: str, value: object) -> None:
    """``bus.<name> = value`` (the generated ``__setattr__``): checked as ``__init__`` checks,
    then ``value`` is attached (it can emit; refused if another bus owns it) and the old
    service released. Nothing changes if a check refuses."""
    old = getattr(bus, name, None)  # None: `del bus.<name>` emptied the slot
    if type(old) is _DetachedSlot:
        _DetachedSlot.refuse(old)
    expected = bus.__mycelium_services__[name]
    if not isinstance(value, expected):
        raise wrong_service(bus, name, expected, value)
    attach_emitter(value, bus.emit)
    object.__setattr__(bus, name, value)
    _release_unless_used(bus, old)


def _release_unless_used(bus: GeneratedBus, old: object) -> None:
    """Release ``old``, a service that left a slot of ``bus`` (None: the slot was empty).
    One instance may fill two slots of a bus: it is released only when it fills none."""
    if old is not None and all(getattr(bus, n, None) is not old
                               for n in bus.__mycelium_services__):
        detach_emitter(old, bus)


def _rebuild(cls: type[GeneratedBus], services: tuple[Any, ...], on_error: Any,
             backlog: tuple[Any, int, str, Any] | None = None) -> GeneratedBus:
    """The bus ``__reduce__`` describes (a pickle made before ``backlog`` was recorded gets
    the default backlog, as it always did)."""
    background = None
    if backlog is not None:
        kind, maxsize, policy, callback = backlog
        background = kind(maxsize=maxsize, policy=policy, on_error=callback)
    return cls(*services, on_error=on_error, background=background)  # type: ignore[call-arg]


def _emit_cycle(bus: GeneratedBus, exc: RecursionError) -> EmitCycleError | None:
    """The :class:`EmitCycleError` for a ``RecursionError`` raised while ``bus``'s emits
    nested in a cycle (one already built by an inner emit passes through as it is); None for a
    handler's own deep recursion, which is its failure like any other.

    The stack says it: from the outermost emit (the frames above this call) down to where the
    recursion limit struck (the traceback), the emit methods of ``bus`` and the handler each
    one called. The first emit that comes round again closes the cycle.
    """
    if isinstance(exc, EmitCycleError):
        return exc
    frames: list[FrameType] = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    seen = {id(f) for f in frames}
    tb = exc.__traceback__
    while tb is not None:
        if id(tb.tb_frame) not in seen:
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    # Every bus's emits count, not only ``bus``'s: a plain handler serving two buses that
    # emits on the other one (``other_bus.emit(...)``) closes a cycle through both, and the
    # note used to skip the other bus's part (``emit_a → relay.on_a → emit_a``, a handler
    # that never emits A).
    services: dict[int, dict[int, str]] = {}
    # (id of the bus an emit belongs to, that bus's class name, text); a handler: (None, "", text)
    steps: list[tuple[int | None, str, str]] = []
    emits: list[tuple[int, tuple[int, str], str]] = []  # (index in steps, key, bus class)
    receivers: dict[int, str] | None = None  # the services of the emit just above
    calls: tuple[tuple[str, str], ...] = ()  # the sync handlers of the emit just above
    for frame in frames:
        name = frame.f_code.co_name
        owner = frame.f_locals.get("self") if name.startswith("emit") else None
        if name == "emit" and isinstance(owner, GeneratedBus):
            continue  # the generic emit(msg) an inlined `self.emit(...)` goes through
        if isinstance(owner, GeneratedBus):
            if receivers is not None and len(calls) == 1:
                # An emit right inside an emit: the handler's body was inlined into the
                # outer one, so it has no frame of its own. With one handler on that route
                # it can only be that one (the note used to skip it on inlined buses).
                steps.append((None, "", f"{calls[0][0]}.{calls[0][1]}"))
            calls = owner.__mycelium_calls__.get(name, ())
            msg = frame.f_locals.get("msg")
            emits.append((len(steps), (id(owner), name), type(owner).__name__))
            steps.append((id(owner), type(owner).__name__, f"{name}({type(msg).__name__})"))
            if id(owner) not in services:
                services[id(owner)] = {id(getattr(owner, attr, None)): attr
                                       for attr in owner.__mycelium_services__}
            receivers = services[id(owner)]
        elif receivers is not None:
            attr = receivers.get(id(frame.f_locals.get("self")))
            receivers = None
            if attr is not None:
                steps.append((None, "", f"{attr}.{name}"))
    first: dict[tuple[int, str], int] = {}  # key → position in emits
    for position, (index, key, _) in enumerate(emits):
        if key in first:
            # The bus the cycle starts from is named by none of its emits, the others by
            # each of theirs: not ``bus``, which is whichever bus's emit the recursion
            # limit struck in (so the note changed with the stack's depth).
            home = key[0]
            cycle = tuple(text if bus_id in (None, home) else f"{bus_name}.{text}"
                          for bus_id, bus_name, text in steps[emits[first[key]][0]:index + 1])
            buses = list(dict.fromkeys(kind for _, _, kind in emits[first[key]:position]))
            break
        first[key] = position
    else:
        return None
    depth = len(emits)
    return EmitCycleError(
        f"{' and '.join(buses)}: {'its' if len(buses) == 1 else 'their'} handlers emit each "
        "other's messages in a cycle that did "
        f"not end: {depth} emits deep when Python's recursion limit "
        f"({sys.getrecursionlimit()}) stopped it\n"
        f"note: the cycle: {' → '.join(cycle)}\n"
        "help: the monolith calls depth first, so every emit in the cycle waits for the next; "
        "make one of these handlers emit only while the cycle should go on (a condition that "
        "ends it, e.g. a hop count in the message), or route the message that closes the "
        "cycle to a handler that does not emit back", cycle)


def failed(
    errors: list[tuple[str, Exception]] | None, exc: Exception, bus: GeneratedBus, where: str
) -> list[tuple[str, Exception]]:
    """Record that handler ``where`` raised ``exc``; the emit goes on with the next handler.

    A first "failure" that is the detached bus refusing the call is re-raised as it is: no
    handler ran. The sync path checks that in ``_failed_at``; a background call queued
    before ``bus.detach()`` comes here from its ``emit_*_async``, and used to be reported as
    ``where``'s failure (to ``on_error``, or in a group with a "raised ... by" note).
    """
    if errors is None and isinstance(exc, BusDetachedError) and exc.source is bus._background:
        raise exc  # the detached bus's slot refused the access, as every later one would
    note_once(exc, f"raised in {type(bus).__name__} by {where}")
    if errors is None:
        return [(where, exc)]
    errors.append((where, exc))
    return errors


def note_once(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` unless ``exc`` carries that note already: a handler raising one
    module-level exception object (``raise BAY_FULL``) on every message gained one more note
    per failed emit, without end, where the call it stands for adds none."""
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def wrong_service(bus: GeneratedBus, name: str, expected: type, got: object) -> TypeError:
    """The error for ``MonolithBus(risk_manager=<not a RiskManager>)``."""
    head = (f"{type(bus).__name__}() argument {name!r} must be "
            f"{_article(expected.__qualname__)} {expected.__qualname__} instance, ")
    given = type(got)
    if given.__qualname__ == expected.__qualname__:
        # Same name, other class object: "must be a Planner instance, got Planner" told
        # nothing. It comes from importlib.reload() of the handler module (the bus still
        # names the class it was built from) or from one file imported under two names.
        if given.__module__ != expected.__module__:
            return TypeError(
                f"{head}got {given.__module__}.{given.__qualname__}, a class of the same name "
                f"from another module\nhelp: pass a {expected.__module__}.{expected.__qualname__}; "
                "if both are one file, it was imported under two names (a sys.path entry "
                "inside a package gives its modules a second one)")
        return TypeError(
            f"{head}got another class object named {given.__module__}.{given.__qualname__}: "
            f"{expected.__module__} was reloaded (or re-run) after {type(bus).__name__} was "
            f"built\nhelp: importlib.reload({type(bus).__module__}) too, so the bus routes to "
            "the new classes, or build the services from the classes it was built with")
    return TypeError(f"{head}got {given.__qualname__}\nhelp: pass {name}={expected.__name__}(...)")


def _article(word: str) -> str:
    """"an AuditLog", "a Ledger" (issue 15: "must be a AuditLog instance")."""
    return "an" if word[:1].lower() in "aeiou" else "a"
