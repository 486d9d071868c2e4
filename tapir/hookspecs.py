"""The hooks a tapir plugin may implement.

A plugin is any module or object with functions marked ``@tapir.hookimpl``
whose names match the specs below. Built-in plugins and third-party ones are
found the same way: through the ``tapir`` entry-point group.

Most hooks follow the register-callback pattern: tapir calls the hook with a
``register`` function, and the plugin calls ``register(name, factory, ...)``
once per component it offers. ``factory`` may be a callable or a lazy
``"module:attribute"`` string, so that listing plugins never imports torch,
transformers or litellm. ``requires`` names importable modules the
component needs; when one is missing the component still lists, marked
unavailable with the reason.

    register(name: str, factory: Callable | str, *, description: str = "",
             requires: Sequence[str] = (), extra: str | None = None,
             capabilities: object | str | tuple | None = None,
             flags: dict[str, bool] | None = None)

What each factory must build is described in :mod:`tapir.roles`, with the
optional capabilities a role's factory may offer (``missing_credentials``,
``price``, ``estimate``, ``answered_by``, ``steps_for``, ``max_length``; flags such as
``needs_model``):
tapir checks them once, at registration, and refuses a component whose
capability has the wrong shape (the plugin lists as broken, naming it).
``capabilities`` names where they live when not on the factory (an object,
or a light ``"module[:attr]"`` so that checking them imports no backend;
``()``: none) and ``flags`` declares the flags; what is declared is not
looked for on the factory, so registering imports nothing of it. Every
``options`` a factory is called with is the component's declared ``Options``
model, already validated (:mod:`tapir.options`).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("tapir")
hookimpl = pluggy.HookimplMarker("tapir")


@hookspec
def register_backends(register):
    """Register model backends (``hf``, ``litellm``, ``vllm``, ...).

    The factory is called as ``factory(model_name: str, options)`` and
    returns a :class:`tapir.roles.Backend`: something that generates
    completions (and optionally scores continuations) for batches of
    :class:`tapir.roles.GenerationRequest`.
    """


@hookspec
def register_models(register):
    """Register named models that ``tapir models`` lists.

    Called as ``register(model_id, backend=..., model=..., description=...,
    options={...})``. A named model is an alias: ``model_id`` resolves to
    ``backend`` loading ``model`` with ``options``.
    """


@hookspec(firstresult=True)
def resolve_model(model_id: str):
    """Map a model id such as ``openai/gpt-4o`` or ``hf:path/to/folder`` to a
    backend spec.

    Return ``(backend_name, model_name, options)`` if this plugin serves the
    id, else ``None``. The first non-``None`` answer wins; the litellm plugin
    answers last (it accepts any ``provider/model`` id).
    """


@hookspec(firstresult=True)
def resolve_trainable(backend: str, model_name: str):
    """The local folder or hub id a trainer loads for a student that
    resolved to (``backend``, ``model_name``): e.g. the converted folder of
    an embedded model. Return ``None`` when this plugin does not serve it;
    no answer means ``model_name`` itself."""


@hookspec
def register_encoders(register):
    """Register sentence encoders (used by embedding de-duplication and
    embedding judges). The factory is called as ``factory(options)`` and
    returns an object with ``embed(texts: list[str]) -> numpy array`` of
    L2-normalised rows."""


@hookspec
def register_stages(register):
    """Register pipeline stages a recipe can name. The factory is called with
    no arguments and returns a :class:`tapir.pipeline.engine.Stage`."""


@hookspec
def register_teachers(register):
    """Register teacher prompts. The factory is called as
    ``factory(backend, options)`` and returns a :class:`tapir.roles.Teacher`.
    """


@hookspec
def register_judges(register):
    """Register judges. The factory is called as ``factory(backend, options)``
    (``backend`` may be ``None`` for judges that need no LLM, such as
    reference-similarity) and returns a :class:`tapir.roles.Judge`.
    """


@hookspec
def register_classifiers(register):
    """Register task-type classifiers. The factory is called as
    ``factory(backend, options)`` (``backend`` is ``None`` unless the config
    names a model, as the LLM classifier needs) and returns a
    :class:`tapir.roles.Classifier`.
    """


@hookspec
def register_rewriters(register):
    """Register rewriters (task-aware instruction and answer refinement).
    The factory is called as ``factory(backend, options)`` and returns a
    :class:`tapir.roles.Rewriter`.
    """


@hookspec
def register_trainers(register):
    """Register training backends. The factory is called as
    ``factory(options)`` and returns a :class:`tapir.roles.Trainer`.
    """


@hookspec
def register_evaluators(register):
    """Register benchmark runners (MT-Bench, AlpacaEval, lm-eval, ...). The
    factory is called as ``factory(options)`` and returns a
    :class:`tapir.roles.Evaluator`.
    """


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``tapir`` CLI group ``cli``."""
