"""Keys and endpoints of the litellm backend: keys never stored (also inside
URLs and error texts), the environment's key and base URL used and part of
the model id, missing credentials found without a call, and one distinct,
actionable message per failure kind. Local servers only."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytest.importorskip("litellm")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.errors import PermanentFailure, TapirError  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import LiteLLMBackend, check_credentials  # noqa: E402
from tapir_testing.openai_server import Faults, OpenAIServer  # noqa: E402

BOTH = pytest.mark.parametrize("transport", ["litellm", "auto"])
SECRET = "sk-tapir-url-SECRET-abcdefghijklmnop"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def lb(model_name: str, **options) -> LiteLLMBackend:
    return LiteLLMBackend(model_name, LiteLLMBackend.Options(**{"retry_base_seconds": 0.01,
                                                                "retry_cap_seconds": 0.02, **options}))


def reqs(n: int, prefix: str = "q") -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"{prefix}{i}"}], GenerationParams(max_new_tokens=8))
            for i in range(n)]


def all_bytes(store) -> bytes:
    store.close()
    return b"".join(p.read_bytes() for p in Path(store.path).parent.glob(Path(store.path).name + "*"))


@BOTH
def test_key_inside_api_base_is_sent_but_never_stored(store, transport):
    from tapir.runs import Run

    def reply(messages, body):
        from tapir_testing.openai_server import fault

        return fault("500") if messages[-1]["content"] == "q1" else "fine"

    with OpenAIServer(reply=reply) as srv:
        base = f"{srv.base_url}?api-key={SECRET}"
        Run.start(store, {"judge": {"model": "openai/test-model", "options": {"api_base": base}}})
        be = lb("openai/test-model", api_base=base, transport=transport, max_retries=0)
        out = CachedBackend(be, store).generate(reqs(2))
        bodies = srv.stats(bodies=True)
    assert out[0].ok and not out[1].ok and "500" in out[1].error
    assert SECRET not in be.model_id and "<redacted>" in be.model_id and SECRET not in repr(be)
    assert SECRET not in out[1].error
    assert len(bodies["bodies"]) == 2  # the server was reached with the URL as given
    data = all_bytes(store)
    assert data and SECRET.encode() not in data
    assert b"api-key=<redacted>" in data


def test_user_password_in_url_never_reaches_the_store(store):
    be = lb("openai/m", api_base="http://alice:hunter2-password@127.0.0.1:9/v1")
    assert "hunter2" not in be.model_id and "alice" not in be.model_id
    from tapir.runs import redact

    assert "hunter2" not in str(redact({"x": {"api_base": "https://u:hunter2@h/v1"}}))
    assert redact("Authorization: Bearer abcdef0123456789") == "Authorization: Bearer <redacted>"


@BOTH
def test_environment_key_is_sent_on_a_self_hosted_server(monkeypatch, transport):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-0123456789abcdefghij")
    with OpenAIServer() as srv:
        [c] = lb("openai/test-model", api_base=srv.base_url, transport=transport).generate(reqs(1))
        [headers] = srv.headers
    assert c.ok
    assert headers["authorization"] == "Bearer sk-env-key-0123456789abcdefghij"


def test_no_key_anywhere_sends_a_placeholder_to_a_self_hosted_server():
    with OpenAIServer() as srv:
        [c] = lb("openai/test-model", api_base=srv.base_url).generate(reqs(1))
        [headers] = srv.headers
    assert c.ok and headers["authorization"] == "Bearer sk-no-key-needed"


@pytest.mark.parametrize("var", ["OPENAI_API_BASE", "OPENAI_BASE_URL"])
def test_base_url_from_the_environment_is_used_and_part_of_the_cache_key(store, monkeypatch, var):
    with OpenAIServer(reply=lambda m, b: "from A") as a, OpenAIServer(reply=lambda m, b: "from B") as b:
        monkeypatch.setenv(var, a.base_url)
        be_a = lb("openai/test-model")
        assert be_a.model_id == f"litellm:openai/test-model@{a.base_url}" and be_a.api_base_source == var
        assert be_a.transport == "openai"  # a self-hosted server, found through the environment
        [first] = CachedBackend(be_a, store).generate(reqs(1))
        monkeypatch.setenv(var, b.base_url)
        [second] = CachedBackend(lb("openai/test-model"), store).generate(reqs(1))
        assert (first.text, second.text) == ("from A", "from B")  # never another server's cached reply
        assert not second.cached and (a.requests, b.requests) == (1, 1)
        # Pointed at a dead port: an error, not a cached answer from A.
        monkeypatch.setenv(var, f"http://127.0.0.1:{_free_port()}/v1")
        [dead] = CachedBackend(lb("openai/test-model", max_retries=0), store).generate(reqs(1))
    assert not dead.ok and not dead.cached and "ConnectionRefused" in dead.error


def test_missing_credentials_found_without_a_request(monkeypatch):
    assert "OPENAI_API_KEY" in check_credentials("openai/gpt-4o-mini", {})
    assert "ANTHROPIC_API_KEY" in check_credentials("anthropic/claude-3-5-haiku-latest", None)
    assert check_credentials("openai/m", {"api_base": "http://127.0.0.1:9/v1"}) is None  # self-hosted
    assert LiteLLMBackend.missing_credentials("openai/gpt-4o-mini", {}) == ["OPENAI_API_KEY"]
    [problem] = LiteLLMBackend.preflight("openai/gpt-4o-mini", LiteLLMBackend.Options())
    assert "OPENAI_API_KEY" in problem and "HTTP" not in problem
    with OpenAIServer() as srv:
        # A key variable named by api_key_env, unset: raised before anything is sent.
        be = lb("openai/test-model", api_base=srv.base_url, api_key_env="TAPIR_UNSET_KEY_VAR")
        monkeypatch.delenv("TAPIR_UNSET_KEY_VAR", raising=False)
        with pytest.raises(TapirError, match="TAPIR_UNSET_KEY_VAR.*No request was sent"):
            be.generate(reqs(3))
        assert srv.requests == 0
    with pytest.raises(TapirError, match="OPENAI_API_KEY") as err:
        lb("openai/gpt-4o-mini").generate(reqs(1))
    assert "500" not in str(err.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-present-0123456789abcdefghij")
    assert check_credentials("openai/gpt-4o-mini", {}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@BOTH
@pytest.mark.parametrize("case", ["401", "403", "404", "404-no-v1", "400", "refused", "timeout"])
def test_each_failure_kind_has_its_own_actionable_message(transport, case):
    faults = {"401": ["401"], "403": ["403"], "404": ["404"], "404-no-v1": ["404"], "400": ["400"],
              "timeout": Faults(pattern=["slow"], slow_seconds=6.0)}.get(case)
    with OpenAIServer(faults=faults) as srv:
        base = srv.base_url
        if case == "404-no-v1":
            base = base[: -len("/v1")]
        if case == "refused":
            base = f"http://127.0.0.1:{_free_port()}/v1"
        # A loaded CI machine must not turn a 404 into a timeout: only the slow case waits that long.
        timeout = 1.5 if case == "timeout" else 20.0
        be = lb("openai/test-model", api_base=base, transport=transport, max_retries=0, timeout=timeout)
        got = []
        try:
            be.generate(reqs(1), on_result=lambda i, c: got.append(c))
            raised = None
        except PermanentFailure as exc:  # no retry fixes these: the backend stops sending, naming the fix
            raised = exc
        [c] = got
    assert (raised is not None) == (case in ("401", "403", "404", "404-no-v1"))
    if raised is not None:
        assert c.error in str(raised) and "Fix: check the" in str(raised)
    assert not c.ok
    error = c.error
    expected = {
        "401": ("AuthenticationError (HTTP 401)", "OPENAI_API_KEY"),
        "403": ("PermissionDenied (HTTP 403)", "not allowed"),
        "404": ("NotFound (HTTP 404)", "/models lists the served names"),
        "404-no-v1": ("NotFound (HTTP 404)", f"did you mean api_base: {base}/v1"),
        "400": ("BadRequest (HTTP 400)", "no retry will fix it"),
        "refused": ("ConnectionRefused", "is the server running"),
        "timeout": ("Timeout", "no answer within 1.5s"),
    }[case]
    for part in expected:
        assert part in error, error
    assert "HTTP 500" not in error
    if case in ("401", "403", "404", "404-no-v1", "400"):
        assert c.http_status == int(case[:3])
