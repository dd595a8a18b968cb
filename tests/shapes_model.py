"""Class structures for the differential property test of issue 11, as data and as source.

A :class:`Shape` is a handful of handler classes (in the handler module or in the routing
module itself; inheriting from earlier ones, with a mixin, a ``MessageHandler[X]`` root or
``@handles`` methods, overriding or inheriting each method), a routing table over the three
messages ``A``, ``B``, ``C``, and the messages to emit. :func:`modules` writes it as the
package the four builds import; :func:`shape_to_json`/:func:`shape_from_json` keep shrunk
failures in ``tests/corpus/class_shapes.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from hypothesis import strategies as st

MESSAGES = ("A", "B", "C")
ACTIONS = ("count", "raise", "emit", "helper", "early_return")


@dataclass(frozen=True)
class MethodSpec:
    name: str  # "handle" or "on_a" / "on_b" / "on_c"
    action: str


@dataclass(frozen=True)
class ClassSpec:
    name: str
    in_routing: bool
    base: int | None  # index of an earlier class
    mixin: bool
    generic: str | None  # "A" / "B" / "C" for a MessageHandler[X] root
    methods: tuple[MethodSpec, ...]


@dataclass(frozen=True)
class Shape:
    classes: tuple[ClassSpec, ...]
    routes: tuple[tuple[str, tuple[int, ...]], ...]  # message -> class indexes, in order
    emits: tuple[tuple[str, int], ...]


def generic_of(shape: Shape, index: int) -> str | None:
    spec = shape.classes[index]
    if spec.base is not None:
        return generic_of(shape, spec.base)
    return spec.generic


def own_and_inherited(shape: Shape, index: int) -> dict[str, str]:
    """method name -> name of the class whose body defines it (nearest first)."""
    spec = shape.classes[index]
    found = {} if spec.base is None else own_and_inherited(shape, spec.base)
    found.update({m.name: spec.name for m in spec.methods})
    return found


def handled(shape: Shape, index: int) -> dict[str, str]:
    """message -> method name, as the class will receive it (``@handles`` wins over the
    generic ``handle``, as in ``handled_messages``)."""
    methods = own_and_inherited(shape, index)
    result = {name[3:].upper(): name for name in methods if name.startswith("on_")}
    generic = generic_of(shape, index)
    if generic is not None and "handle" in methods:
        result.setdefault(generic, "handle")
    return result


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    count = draw(st.integers(2, 5))
    classes: list[ClassSpec] = []
    for index in range(count):
        in_routing = draw(st.booleans())
        # Handler-module classes may only build on handler-module classes.
        allowed = [i for i, c in enumerate(classes) if in_routing or not c.in_routing]
        base = draw(st.none() | st.sampled_from(allowed)) if allowed else None
        generic = draw(st.none() | st.sampled_from(MESSAGES)) if base is None else None
        lineage = generic if base is None else _generic(classes, base)
        names = (["handle"] if lineage else []) + ["on_a", "on_b", "on_c"]
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=2))
        if generic is not None and "handle" not in chosen:
            chosen.insert(0, "handle")  # a MessageHandler[X] root defines the handle it promises
        methods = tuple(MethodSpec(n, draw(st.sampled_from(ACTIONS))) for n in chosen)
        classes.append(ClassSpec(f"H{index}", in_routing, base, draw(st.booleans()), generic,
                                 methods))
    draft = Shape(tuple(classes), (), ())
    routes = []
    for message in MESSAGES:  # every message routed (maybe to nobody): emits always land
        receivers = [i for i in range(count) if message in handled(draft, i)]
        picked = draw(st.permutations(receivers)) if receivers else []
        routes.append((message, tuple(picked[:draw(st.integers(0, len(picked)))])))
    emits = draw(st.lists(st.tuples(st.sampled_from(MESSAGES), st.integers(0, 7)),
                          min_size=1, max_size=6))
    return Shape(tuple(classes), tuple(routes), tuple(emits))


def _generic(classes: list[ClassSpec], index: int) -> str | None:
    spec = classes[index]
    return spec.generic if spec.base is None else _generic(classes, spec.base)


# -- as source --------------------------------------------------------------------------------

DOWNSTREAM = {"A": "B", "B": "C"}


def _body(spec: ClassSpec, method: MethodSpec, message: str | None) -> list[str]:
    tag = f"{spec.name}.{method.name}"
    log = f"LOG.append(({tag!r}, type(self).__name__, type(msg).__name__, msg.value))"
    action = method.action
    if action == "raise":
        return [log, "if msg.value % 3 == 0:",
                f"    raise ValueError(f'{tag} refuses {{msg.value}}')"]
    if action == "emit" and message in DOWNSTREAM:
        return [log, "if msg.value > 0:", f"    self.emit({DOWNSTREAM[message]}(msg.value - 1))"]
    if action == "helper":
        return [log, "self.bump(msg.value)"]
    if action == "early_return":
        return ["if msg.value % 2:", "    return", log]
    return [log, "self.n += msg.value"]


def _class_source(shape: Shape, index: int) -> str:
    spec = shape.classes[index]
    bases = [shape.classes[spec.base].name if spec.base is not None else "Base"]
    if spec.mixin:
        bases.append("Mixin")
    if spec.generic is not None:
        bases.append(f"MessageHandler[{spec.generic}]")
    lines = [f"class {spec.name}({', '.join(bases)}):"]
    generic = generic_of(shape, index)
    for method in spec.methods:
        message = generic if method.name == "handle" else method.name[3:].upper()
        if method.name != "handle":
            lines.append(f"    @handles({message})")
        lines.append(f"    def {method.name}(self, msg):")
        lines += [f"        {line}" for line in _body(spec, method, message)]
    if not spec.methods:
        lines.append("    pass")
    return "\n".join(lines) + "\n"


HANDLERS_HEAD = """
from mycelium_mono import MessageHandler, handles
from shapes_app.messages import A, B, C

LOG = []


class Base(MessageHandler):
    def __init__(self):
        self.n = 0

    def bump(self, value):
        self.n += value


class Mixin:
    def bump(self, value):
        LOG.append(("Mixin.bump", type(self).__name__, value))
        self.n += 2 * value

"""

ROUTING_HEAD = """
from mycelium_mono import MessageHandler, handles, routing_config
from shapes_app.messages import A, B, C
from shapes_app.handlers import LOG, Base, Mixin
"""


def modules(shape: Shape) -> dict[str, str]:
    """The handler and routing module texts (``INLINE`` is filled in per build)."""
    handler_classes = [i for i, c in enumerate(shape.classes) if not c.in_routing]
    handlers = HANDLERS_HEAD + "\n\n".join(_class_source(shape, i) for i in handler_classes)
    imported = ", ".join(shape.classes[i].name for i in handler_classes)
    routing = ROUTING_HEAD + (f"from shapes_app.handlers import {imported}\n" if imported else "")
    routing += "\n\n" + "\n\n".join(_class_source(shape, i) for i, c in
                                    enumerate(shape.classes) if c.in_routing)
    table = "\n".join(f"    {message} = [{', '.join(shape.classes[i].name for i in picked)}]"
                      for message, picked in shape.routes)
    routing += f"\n\n@routing_config(inline=INLINE)\nclass Bus:\n{table}\n"
    return {"handlers": handlers, "routing": routing}


def shape_to_json(shape: Shape) -> str:
    return json.dumps(asdict(shape))


def shape_from_json(data: dict[str, object]) -> Shape:
    classes = tuple(
        ClassSpec(c["name"], c["in_routing"], c["base"], c["mixin"], c["generic"],
                  tuple(MethodSpec(**m) for m in c["methods"]))
        for c in data["classes"]  # type: ignore[attr-defined]
    )
    routes = tuple((m, tuple(p)) for m, p in data["routes"])  # type: ignore[attr-defined]
    emits = tuple((m, v) for m, v in data["emits"])  # type: ignore[attr-defined]
    return Shape(classes, routes, emits)
