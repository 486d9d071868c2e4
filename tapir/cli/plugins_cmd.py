"""``tapir plugins`` and ``tapir models``: what is installed."""

from __future__ import annotations

import json

import click

from tapir.plugins import ROLES, get_plugin_manager


def plugin_rows() -> list[dict]:
    pm = get_plugin_manager()
    reg = pm.registry
    rows = []

    def components_of(name: str) -> dict:
        components = {
            role: [
                {"name": c.name, "available": c.available, "reason": c.reason, "description": c.description}
                for c in sorted(reg.by_role[role].values(), key=lambda c: c.name)
                if c.plugin == name
            ]
            for role in ROLES
        }
        return {r: c for r, c in components.items() if c}

    def overrides_of(name: str) -> list[str]:
        return [f"its {role[:-1]} '{comp}' replaces {old}'s" for role, comp, old, new in reg.overridden if new == name]

    for name, info in sorted(pm.infos.items()):
        error = info.error or reg.errors.get(name)
        rows.append(
            {
                "name": name,
                "module": info.module,
                "version": info.version,
                "hooks": info.hooks,
                "available": error is None,
                "error": error,
                "components": components_of(name),
                "overrides": overrides_of(name),
            }
        )
    # Plugins registered in-process (tests, notebooks) without an entry point.
    for name, plugin in pm.list_name_plugin():
        if name not in pm.infos and not name.startswith("_"):
            rows.append(
                {
                    "name": name,
                    "module": getattr(plugin, "__name__", repr(plugin)),
                    "version": None,
                    "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
                    "available": name not in reg.errors,
                    "error": reg.errors.get(name),
                    "components": components_of(name),
                    "overrides": overrides_of(name),
                }
            )
    return rows


def register(cli):
    @cli.command()
    @click.argument("name", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plugins(name, as_json):
        """List installed plugins and what each offers; with NAME, the
        options every component of that name declares (type with its allowed
        values and range, default, doc)."""
        if name:
            _show_component(name, as_json)
            return
        rows = plugin_rows()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            status = "ok" if row["available"] else f"UNAVAILABLE: {row['error']}"
            version = f" {row['version']}" if row["version"] else ""
            click.echo(f"{row['name']}{version}  ({row['module']})  {status}")
            for note in row["overrides"]:
                click.echo(f"    note: {note}")
            for role, comps in row["components"].items():
                for c in comps:
                    mark = "" if c["available"] else f"  [unavailable: {c['reason']}]"
                    desc = f" - {c['description']}" if c["description"] else ""
                    click.echo(f"    {role[:-1]:<10} {c['name']}{desc}{mark}")

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def models(as_json):
        """List named models and the backends that serve any other id."""
        reg = get_plugin_manager().registry
        named = [
            {
                "id": c.name,
                "backend": c.options.get("backend"),
                "model": c.options.get("model"),
                "plugin": c.plugin,
                "description": c.description,
                "available": c.available,
                "reason": c.reason,
            }
            for c in sorted(reg.by_role["models"].values(), key=lambda c: c.name)
        ]
        backends = [
            {"name": c.name, "plugin": c.plugin, "available": c.available, "reason": c.reason,
             "description": c.description}
            for c in sorted(reg.by_role["backends"].values(), key=lambda c: c.name)
        ]
        if as_json:
            click.echo(json.dumps({"models": named, "backends": backends}, indent=2))
            return
        click.echo("Named models:")
        for m in named:
            mark = "" if m["available"] else f"  [unavailable: {m['reason']}]"
            click.echo(f"  {m['id']:<28} {m['backend']}:{m['model']}{mark}")
            if m["description"]:
                click.echo(f"  {'':<28} {m['description']}")
        click.echo("Backends (any model id as BACKEND:NAME):")
        for b in backends:
            mark = "" if b["available"] else f"  [unavailable: {b['reason']}]"
            click.echo(f"  {b['name']:<28} {b['description']}{mark}")


def _show_component(name: str, as_json: bool) -> None:
    from tapir.errors import TapirError
    from tapir.configdoc import key_rows

    reg = get_plugin_manager().registry
    roles = [r for r in ROLES if r != "models"]  # named models are aliases, not components with options
    found = [c for role in roles for c in reg.by_role[role].values() if c.name == name or c.plugin == name]
    if not found:
        names = sorted({c.name for role in roles for c in reg.by_role[role].values()})
        raise TapirError(f"no component or plugin named '{name}'. Components: {', '.join(names)}")
    out = []
    for c in found:
        entry = {"role": c.role[:-1], "name": c.name, "plugin": c.plugin, "description": c.description,
                 "available": c.available, "reason": c.reason,
                 "options": key_rows(c.options_model()) if c.available else []}
        out.append(entry)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for e in out:
        click.echo(f"{e['role']} {e['name']} ({e['plugin']}): {e['description']}")
        if not e["available"]:
            click.echo(f"    unavailable: {e['reason']}")
            continue
        if not e["options"]:
            click.echo("    (no options)")
        # columns as wide as their widest cell: a type lists its allowed values and range
        widths = {k: max(len(o[k]) for o in e["options"]) for k in ("name", "type", "default")} if e["options"] \
            else {}
        for o in e["options"]:
            click.echo(f"    {o['name']:<{widths['name']}}  {o['type']:<{widths['type']}}  "
                       f"default {o['default']:<{widths['default']}}  {o['doc']}")
