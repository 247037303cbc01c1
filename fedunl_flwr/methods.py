"""The registry of unlearning methods: every strategy module registers itself here.

A method is one small class in a module of a method package (``strategies/``; its base
is ``strategies.unlearning.UnlearningMethod``), decorated with :func:`register_method`:
its run-config name, the request scopes it handles, one line of documentation, its table
label and the run-config keys it owns (:class:`Option`: default, validation, one line of
documentation). The registry holds one instance of it; the Flower strategies it runs
are separate classes. The core looks methods up by name only; the packages are imported
on the first lookup, so the core never imports a method module itself.

Flower only accepts ``--run-config`` keys listed in ``pyproject.toml``, and the README
documents every method and key: ``scripts/method_tables.py --write`` regenerates both
from this registry, and a test fails while they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ClassVar, Protocol, cast

#: Packages whose modules register methods (imported on the first lookup).
METHOD_PACKAGES = ("strategies",)
#: The run-config ``strategy`` that trains and evaluates only (no unlearning method).
TRAIN_ONLY = "fedavg"


@dataclass(frozen=True)
class Option:
    """A run-config key owned by a method.

    Parameters
    ----------
    key : str
        Kebab-case run-config key; a new method prefixes it with its name (the keys of
        the methods that predate the registry, ``rho``, ``zero-units``, ..., do not).
    default : bool | int | float | str
        Default value (its type is the key's type).
    doc : str
        One line for the key table (docs/method-options.md).
    check : Callable[[Any], bool] | None
        Validation of a value; ``rule`` says what it demands.
    rule : str
        The error message's demand, e.g. ``"must be >= 1"``.
    """

    key: str
    default: bool | int | float | str
    doc: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""

    def validate(self, value: Any) -> None:
        """Raise ``ValueError`` naming the key when ``value`` breaks the rule."""
        if self.check is not None and not self.check(value):
            raise ValueError(f"{self.key} {self.rule}, got {value!r}")


class RegisteredMethod(Protocol):
    """A method class once :func:`register_method` has set its ``name`` and ``scopes``."""

    name: ClassVar[str]
    scopes: ClassVar[tuple[str, ...]]


@dataclass(frozen=True)
class Method:
    """A registered unlearning method."""

    name: str
    implementation: RegisteredMethod
    scopes: tuple[str, ...]
    doc: str
    options: tuple[Option, ...] = ()
    label: str = ""
    order: int = 100

    @property
    def row_label(self) -> str:
        """The method's name in the tables (the paper's, e.g. ``NoT``; else its name)."""
        return self.label or self.name


_METHODS: dict[str, Method] = {}
_discovered = False


def register_method(name: str, *, doc: str,
                    scopes: tuple[str, ...] = ("client", "class", "samples"),
                    options: tuple[Option, ...] = (), label: str = "",
                    order: int = 100) -> Callable[[type], type]:
    """Class decorator: register ``cls`` as method ``name`` (sets ``cls.name``, ``cls.scopes``);
    ``label`` is its row or column name in the tables (default: ``name``), ``order`` its
    place there (ascending; ties by label)."""
    def register(cls: type) -> type:
        known = _METHODS.get(name)
        known_class = type(known.implementation) if known is not None else None
        if known_class is not None and known_class.__qualname__ != cls.__qualname__:
            raise ValueError(f"method {name!r} is registered twice: {known_class.__qualname__} "
                             f"and {cls.__qualname__}")
        owners = {o.key: m for m in _METHODS.values() if m.name != name for o in m.options}
        for option in options:
            if option.key in owners and _option(owners[option.key], option.key) != option:
                raise ValueError(f"option {option.key!r} of {name!r} differs from "
                                 f"{owners[option.key].name!r}'s")
        registered = cast("type[RegisteredMethod]", cls)  # it is one from the next line on
        registered.name, registered.scopes = name, scopes
        _METHODS[name] = Method(name, registered(), scopes, doc, options, label, order)
        return cls

    return register


def _option(method: Method, key: str) -> Option:
    return next(o for o in method.options if o.key == key)


def _discover() -> None:
    global _discovered
    if not _discovered:
        for package in METHOD_PACKAGES:
            import_module(package)
        _discovered = True


def all_methods() -> dict[str, Method]:
    """Every registered method by name, in registration order."""
    _discover()
    return dict(_METHODS)


def get_method(name: str) -> Method:
    """The method registered as ``name`` (``ValueError`` listing the names otherwise)."""
    methods = all_methods()
    if name not in methods:
        raise ValueError(f"unknown strategy {name!r}; choose one of "
                         f"{sorted([TRAIN_ONLY, *methods])}")
    return methods[name]


def all_options() -> dict[str, Option]:
    """Every method-owned run-config key (a key shared by methods appears once)."""
    return {o.key: o for m in all_methods().values() for o in m.options}


def method_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Method ``name``'s own keys, from ``values`` (kebab-case) or their defaults."""
    if name == TRAIN_ONLY:
        return {}
    return {o.key: values.get(o.key, o.default) for o in get_method(name).options}


# --- generated documentation (scripts/method_tables.py) -----------------------------
SCOPE_ORDER = ("client", "class", "samples")


def _toml_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def method_table() -> str:
    """The README's table of ``strategy`` values (Markdown)."""
    rows = ["| `strategy` | scope | what it does |", "|---|---|---|",
            f"| `{TRAIN_ONLY}` | - | train (or load) and evaluate the original model only |"]
    for name, method in sorted(all_methods().items()):
        scopes = ", ".join(s for s in SCOPE_ORDER if s in method.scopes)
        rows.append(f"| `{name}` | {scopes} | {method.doc} |")
    return "\n".join(rows)


def option_table() -> str:
    """docs/method-options.md's table of method-owned run-config keys (Markdown)."""
    rows = ["| key | default | method | meaning |", "|---|---|---|---|"]
    for key, option in sorted(all_options().items()):
        owners = ", ".join(f"`{m.name}`" for m in all_methods().values()
                           if any(o.key == key for o in m.options))
        default = _toml_value(option.default).strip('"')
        rows.append(f"| `{key}` | `{default}` | {owners} | {option.doc} |")
    if len(rows) == 2:
        rows.append("| - | - | - | (no method owns a key yet) |")
    return "\n".join(rows)


def pyproject_block() -> str:
    """The method-owned keys' lines of ``[tool.flwr.app.config]`` (Flower accepts only
    ``--run-config`` keys listed there)."""
    return "\n".join(f"{key} = {_toml_value(option.default)}"
                     for key, option in sorted(all_options().items()))


#: (file, begin marker, end marker, renderer) of every generated block.
GENERATED_BLOCKS = (
    ("README.md", "<!-- methods:begin -->", "<!-- methods:end -->", method_table),
    ("docs/method-options.md", "<!-- method-options:begin -->", "<!-- method-options:end -->",
     option_table),
    ("pyproject.toml", "# method-options:begin", "# method-options:end", pyproject_block),
)


def render_generated(text: str, begin: str, end: str, content: str) -> str:
    """``text`` with the lines between the ``begin`` and ``end`` marker lines replaced."""
    head, found, rest = text.partition(begin + "\n")
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"markers {begin!r} ... {end!r} not found")
    body = content + "\n" if content else ""
    return f"{head}{begin}\n{body}{end}{tail}"
