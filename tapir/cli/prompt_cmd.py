"""``tapir prompt``: ask any model one question, through the cache and store."""

from __future__ import annotations

import click

from tapir.cli.options import parse_options


def register(cli):
    @cli.command()
    @click.argument("text")
    @click.option("-m", "--model", "model_id", default="smollm2-135m-instruct", show_default=True)
    @click.option("--system", default=None, help="System message.")
    @click.option("--max-new-tokens", default=128, show_default=True, type=click.IntRange(min=1))
    @click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0))
    @click.option("--sample", default=0, show_default=True, type=click.IntRange(min=0),
                  help="Sample index (distinct samples at temperature > 0).")
    @click.option("-o", "--option", "options", multiple=True, help="Backend option KEY=VALUE (repeatable).")
    @click.pass_obj
    def prompt(obj, text, model_id, system, max_new_tokens, temperature, sample, options):
        """Answer TEXT with a model; the call is recorded in llm_calls and a
        second identical call is served from the cache."""
        from tapir.cache import CachedBackend
        from tapir.models import load_backend
        from tapir.roles import GenerationParams, GenerationRequest
        from tapir.store import open_store

        if not text.strip():  # nothing to ask: refused before the model is loaded or the database touched
            raise click.BadParameter("the question is empty; give the text to ask, e.g. tapir prompt "
                                     "\"What is 12*12?\"", param_hint="TEXT")
        opts = parse_options(options)
        raw = load_backend(model_id, opts)  # an unknown model fails before the database is touched
        store = open_store(obj["db"])
        backend = CachedBackend(raw, store)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature)
        (completion,) = backend.generate([GenerationRequest(messages, params, sample)])
        if completion.error:
            from tapir.models import error_hint

            raise click.ClickException(f"{model_id} failed: {completion.error}{error_hint(model_id, completion.error)}")
        click.echo(completion.text)
        where = "cache" if completion.cached else f"{completion.latency_s:.2f}s"
        click.echo(f"[{model_id}, {where}, llm_calls id {completion.call_id} in {store.path}]", err=True)

