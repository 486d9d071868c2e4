"""The folder a trainer loads: :func:`resolve_base_model`. Its own module so
that :mod:`tapir_trainers.launch` and :mod:`tapir_trainers.base` both use it
without importing each other."""

from __future__ import annotations

from pathlib import Path

from tapir.errors import TapirError


def resolve_base_model(base_model: str) -> str:
    """A local folder for ``base_model``: a folder path, ``embedded:NAME``, or a named model id.

    Anything else is passed through to ``from_pretrained`` (a hub id).
    """
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TapirError(f"base model folder {path} has no config.json; point at a transformers model folder")
        return str(path)
    if base_model.startswith("embedded:"):
        from tapir_hf.embedded import embedded_model_path

        return str(embedded_model_path(base_model.partition(":")[2]))
    if base_model.startswith("hf:"):
        return resolve_base_model(base_model[3:])
    from tapir.plugins import get_plugin_manager

    if base_model in get_plugin_manager().registry.by_role["models"]:
        from tapir.models import resolve

        spec = resolve(base_model)
        if spec.backend != "hf":
            raise TapirError(f"model '{base_model}' is served by the '{spec.backend}' backend; "
                             f"the hf trainer needs a transformers model (a folder, hub id or hf model)")
        return resolve_base_model(spec.name)
    return base_model
