"""Plugin loading and the registry of components the plugins offer.

Plugins are found through the ``tapir`` entry-point group, built-ins
included. Two environment variables steer loading:

``TAPIR_PLUGINS``
    Comma-separated plugin names; only these load. Empty string: none.
``TAPIR_TRACE_HOOKS``
    Any non-empty value prints every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from tapir import DISTRIBUTION, hookspecs
from tapir.errors import TapirError

ROLES = (
    "backends",
    "models",
    "teachers",
    "judges",
    "classifiers",
    "rewriters",
    "trainers",
    "evaluators",
    "encoders",
    "stages",
)


def _imported(ref: str) -> Any:
    """The object a ``module:attr.path`` reference names (entry-point syntax)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None  # set when the plugin could not be imported


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (for a dotted
    name, find_spec imports the parents, and raises if a parent is missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Component:
    """One named thing a plugin registered: a backend, judge, evaluator, ..."""

    role: str
    name: str
    plugin: str
    factory: Callable[..., Any] | str
    description: str = ""
    requires: tuple[str, ...] = ()
    extra: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # What the factory offers beyond its role's protocol (tapir.roles.CAPABILITIES)
    # and the flags it declares (tapir.roles.FLAGS), read once at registration.
    capabilities: frozenset[str] = frozenset()
    flags: dict[str, bool] = field(default_factory=dict)
    # Where the capabilities live when not on the factory: an object or a
    # "module[:attr]" the plugin names with register(..., capabilities=...),
    # so checking them imports a small module, not the component; NONE: the
    # plugin says the component offers none (capabilities=()).
    provider: Any = None

    @property
    def missing(self) -> list[str]:
        return [m for m in self.requires if not _importable(m)]

    @property
    def available(self) -> bool:
        return not self.missing

    @property
    def reason(self) -> str | None:
        missing = self.missing
        if not missing:
            return None
        hint = f"pip install '{DISTRIBUTION}[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
        return f"needs {', '.join(missing)} ({hint})"

    def load(self, *, even_unavailable: bool = False) -> Callable[..., Any]:
        """The factory. ``even_unavailable``: import it although a required
        module is missing (to read its declared options; plugins import heavy
        modules inside functions, so this works for the built-ins)."""
        if not self.available and not even_unavailable:
            raise TapirError(f"{self.role[:-1]} '{self.name}' is unavailable: {self.reason}")
        return _imported(self.factory) if isinstance(self.factory, str) else self.factory

    def capability(self, name: str) -> Callable[..., Any]:
        """The factory's capability ``name`` (checked at registration; see
        tapir.roles.CAPABILITIES), to call with what the caller knows."""
        if name not in self.capabilities:
            raise TapirError(f"{self.role[:-1]} '{self.name}' ({self.plugin}) does not offer {name}")
        return getattr(self._capability_source(), name)

    def _capability_source(self) -> Any:
        if self.provider is None:
            return self.load(even_unavailable=True)
        if self.provider is NONE:
            return None
        return _imported(self.provider) if isinstance(self.provider, str) else self.provider

    def options_model(self):
        """The component's declared :class:`tapir.options.Options` model."""
        from tapir.options import options_model

        return options_model(self.load(even_unavailable=True))

    def check_options(self, options: dict[str, Any] | None, where: str) -> list[str]:
        """Every problem with ``options`` for this component (empty: fine)."""
        from tapir.options import option_problems

        return option_problems(self.options_model(), options, where)

    def create(self, *args, options: dict[str, Any] | None = None, where: str | None = None):
        """Build the component: ``options`` are validated against its declared
        ``Options`` model (one :class:`ConfigError` listing every problem),
        then the factory is called as ``factory(*args, validated_options)``.

        ``args`` is what the role passes first: the backend for teachers,
        judges, classifiers and rewriters, the model name for backends,
        nothing for trainers and evaluators."""
        from tapir.options import validate

        factory = self.load()
        where = where or f"{self.role[:-1]} '{self.name}' options"
        return factory(*args, validate(self.options_model(), options, where))


class _NoCapabilities:
    def __repr__(self) -> str:
        return "NONE"


# A component's provider when the plugin registered it with capabilities=():
# it offers no capability.
NONE = _NoCapabilities()


def _offered(comp: Component, declared_flags: dict[str, Any] | None = None
             ) -> tuple[frozenset[str], dict[str, bool]]:
    """The capabilities and flags ``comp`` offers (tapir.roles CAPABILITIES
    and FLAGS for its role). This is the one place that looks at a factory's
    attributes; the core reads the result from the registry.

    What the plugin declared in its register(...) call is not looked for on
    the factory: ``flags={...}`` are its flags, ``capabilities="module[:attr]"``
    names where its capabilities are (only that small module is imported),
    ``capabilities=()`` says it has none. The factory is imported only for
    what was not declared (the shape check of a third-party component that
    declares nothing). A capability or flag of the wrong shape raises
    :class:`TapirError` naming the plugin. A factory or provider that cannot
    be imported offers nothing (using it reports the import error)."""
    import inspect

    from tapir.roles import CAPABILITIES, FLAGS

    wanted, flag_names = CAPABILITIES.get(comp.role, {}), FLAGS.get(comp.role, ())
    what = f"plugin '{comp.plugin}' registered {comp.role[:-1]} '{comp.name}'"
    flags: dict[str, bool] = {}
    if declared_flags is not None:
        for name, value in declared_flags.items():
            if name not in flag_names:
                known = ", ".join(flag_names) or "none"
                raise TapirError(f"{what} with an unknown flag '{name}' (flags of {comp.role}: {known}; "
                                 f"tapir.roles.FLAGS); fix the plugin")
            flags[name] = _flag(what, name, value, "a flag declared True or False")
    if comp.provider is not None and comp.provider is not NONE and not wanted:
        raise TapirError(f"{what} with capabilities, but {comp.role} have none (tapir.roles.CAPABILITIES); "
                         f"fix the plugin")
    look_for_flags = declared_flags is None and bool(flag_names)
    if not (wanted and comp.provider is not NONE) and not look_for_flags:
        return frozenset(), flags
    try:
        source = comp._capability_source() if wanted else None
        factory = comp.load(even_unavailable=True) if look_for_flags else None
    except Exception:  # noqa: BLE001 - reported when the component is used
        return frozenset(), flags
    offered = set()
    for name, (protocol, params) in wanted.items() if source is not None else ():
        if not hasattr(source, name):
            continue
        method = getattr(source, name)
        shape = f"{name}({', '.join(params)})"
        try:
            ok = callable(method) and inspect.signature(method).bind(*params) is not None
        except (TypeError, ValueError):
            ok = False
        if inspect.isclass(source) and inspect.isfunction(inspect.getattr_static(source, name)):
            ok = False  # a plain method wants an instance: capabilities are asked of the class
        if not ok:
            raise TapirError(f"{what} with a capability of the wrong shape: {name} must be a classmethod or "
                             f"staticmethod called as {shape} (tapir.roles.{protocol.__name__}); fix the plugin")
        offered.add(name)
    for name in flag_names if look_for_flags else ():
        if hasattr(factory, name):
            flags[name] = _flag(what, name, getattr(factory, name), "a class attribute True or False")
    return frozenset(offered), flags


def _flag(what: str, name: str, value: Any, shape: str) -> bool:
    if not isinstance(value, bool):
        raise TapirError(f"{what} whose '{name}' is {type(value).__name__} {value!r}: it must be {shape} "
                         f"(tapir.roles); fix the plugin")
    return value


class Registry:
    """All components, by role and name, gathered from the register_* hooks."""

    def __init__(self, pm: pluggy.PluginManager):
        self.by_role: dict[str, dict[str, Component]] = {role: {} for role in ROLES}
        # plugin name -> what went wrong in its register_* hooks; it keeps
        # what it registered before the error, and the others load normally.
        self.errors: dict[str, str] = {}
        # (role, name, replaced plugin, winning plugin): a later registration
        # of the same name wins (an in-process plugin can override a built-in).
        self.overridden: list[tuple[str, str, str, str]] = []
        plugins = pm.get_plugins()
        for role in ROLES:
            hook_name = f"register_{role}"
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                # Call each plugin through pluggy (so tracing sees it), one at a
                # time, so every component knows which plugin registered it.
                others = [p for p in plugins if p is not impl.plugin]
                caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
                plugin_name = pm.get_name(impl.plugin) or "?"
                try:
                    caller(register=self._register_fn(role, plugin_name))
                except Exception as exc:  # a broken plugin must not break tapir
                    self.errors.setdefault(plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}")

    def _register_fn(self, role: str, plugin_name: str):
        def register(name, factory=None, *, description="", requires=(), extra=None, capabilities=None, flags=None,
                     **options):
            if role == "models":
                # register(model_id, backend=..., model=..., description=..., options=...)
                comp = Component(role, name, plugin_name, factory or "", description,
                                 tuple(requires), extra, options)
            else:
                if factory is None:
                    raise TapirError(f"plugin {plugin_name} registered {role[:-1]} '{name}' without a factory")
                comp = Component(role, name, plugin_name, factory, description,
                                 tuple(requires), extra, options,
                                 provider=NONE if isinstance(capabilities, (tuple, list)) and not capabilities
                                 else capabilities)
            try:
                comp.capabilities, comp.flags = _offered(comp, flags)
            except TapirError as exc:  # refused: the plugin's other components still register
                problem = f"register_{role}: {exc}"
                previous_error = self.errors.get(plugin_name)
                self.errors[plugin_name] = f"{previous_error}; {problem}" if previous_error else problem
                return
            previous = self.by_role[role].get(name)
            if previous is not None and previous.plugin != plugin_name:
                self.overridden.append((role, name, previous.plugin, plugin_name))
            self.by_role[role][name] = comp

        return register

    def get(self, role: str, name: str) -> Component:
        table = self.by_role[role]
        if name not in table:
            allowed = ", ".join(sorted(table)) or "none installed"
            raise TapirError(f"unknown {role[:-1]} '{name}'. Available: {allowed}")
        return table[name]

    def names(self, role: str) -> list[str]:
        return sorted(self.by_role[role])


class TapirPluginManager(pluggy.PluginManager):
    def __init__(self):
        super().__init__("tapir")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self)
        return self._registry

    def invalidate(self) -> None:
        self._registry = None

    def register(self, plugin, name=None):  # type: ignore[override]
        result = super().register(plugin, name)
        self.invalidate()
        return result

    def unregister(self, plugin=None, name=None):  # type: ignore[override]
        result = super().unregister(plugin, name)
        self.invalidate()
        return result


def _allowed_plugins() -> set[str] | None:
    value = os.environ.get("TAPIR_PLUGINS")
    if value is None:
        return None
    return {p.strip() for p in value.split(",") if p.strip()}


def load_entry_points(pm: TapirPluginManager) -> None:
    allowed = _allowed_plugins()
    found = sorted(entry_points(group="tapir"), key=lambda e: e.name)
    # A name in TAPIR_PLUGINS that nothing offers (a typo) lists as an error
    # instead of silently loading nothing.
    for name in sorted((allowed or set()) - {ep.name for ep in found}):
        installed = ", ".join(sorted({ep.name for ep in found})) or "none"
        pm.infos[name] = PluginInfo(name, "", None, error=(
            f"TAPIR_PLUGINS names '{name}' but no installed package offers it (entry-point group 'tapir'; "
            f"installed: {installed})"))
    for ep in found:
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name) or ep.name in pm.infos:
            continue
        version = ep.dist.version if ep.dist else None
        info = PluginInfo(ep.name, ep.value, version)
        try:
            module = ep.load()
            # pluggy validates hook signatures here (PluginValidationError):
            # a plugin with a bad hook lists as broken, the others still load.
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken or half-installed plugin must not break tapir
            info.error = f"{type(exc).__name__}: {exc}"
            pm.infos[ep.name] = info
            continue
        info.hooks = sorted(h.name for h in pm.get_hookcallers(module) or [])
        pm.infos[ep.name] = info


def check_pending(pm: TapirPluginManager) -> None:
    """Fail with a clear message when a plugin implements a hook tapir does not define."""
    for name, plugin in pm.list_name_plugin():
        for attr in dir(plugin):
            opts = pm.parse_hookimpl_opts(plugin, attr)
            # pluggy adds a spec-less caller to pm.hook for every implemented
            # name, so "unknown" means "has no spec", not "no attribute".
            if opts is None or opts.get("optionalhook"):
                continue
            hook_name = opts.get("specname") or attr
            caller = getattr(pm.hook, hook_name, None)
            if caller is None or not caller.has_spec():
                known = ", ".join(sorted(h for h in dir(hookspecs) if h.startswith(("register_", "resolve_"))))
                raise TapirError(
                    f"plugin '{name}' implements unknown hook '{hook_name}' (misspelled?). Known hooks: {known}"
                )
    pm.check_pending()


def _enable_tracing(pm: TapirPluginManager) -> None:
    def before(hook_name, hook_impls, kwargs):
        names = ", ".join(pm.get_name(i.plugin) or "?" for i in hook_impls)
        print(f"[tapir hook] {hook_name}({', '.join(kwargs)}) -> [{names}]", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        try:
            result = outcome.get_result()
        except BaseException as exc:  # pragma: no cover - traced only
            result = exc
        print(f"[tapir hook] {hook_name} returned {result!r:.200}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


_pm: TapirPluginManager | None = None


def get_plugin_manager() -> TapirPluginManager:
    global _pm
    if _pm is None:
        pm = TapirPluginManager()
        if os.environ.get("TAPIR_TRACE_HOOKS"):
            _enable_tracing(pm)
        load_entry_points(pm)
        check_pending(pm)
        _pm = pm
    return _pm


def reset_plugin_manager() -> None:
    """Forget the loaded plugins (tests; after installing a plugin at run time)."""
    global _pm
    _pm = None


def registry() -> Registry:
    return get_plugin_manager().registry
