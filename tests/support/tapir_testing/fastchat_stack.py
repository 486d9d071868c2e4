"""FastChat's own serving stack (controller, model_worker,
openai_api_server from ``fschat``) on 127.0.0.1, serving a model whose reply
is known in advance.

:func:`build_reply_model` writes a GPT-2 folder whose greedy *and* sampled
reply to any prompt is the same words: its tokenizer splits on whitespace
and maps every word it does not know (every prompt word) to ``<unk>``; each
layer adds nothing to the residual stream, so the next token depends only on
the current one, and the output head maps ``<unk>`` to the first reply word,
each reply word to the next, the last to the end of text. A logit margin of
about 100 makes temperature sampling pick the same tokens.

:class:`FastChatStack` starts the three processes as a FastChat user does
(``python -m fastchat.serve.*``), waits until the API lists the model, and
stops them. ``limit_worker_concurrency`` is FastChat's queue: the worker
generates that many at once and the rest wait. :meth:`FastChatStack.generations`
counts the generations the worker ran (its access log), so a test can compare
them with the calls tapir recorded. FastChat answers ``logprobs`` requests
without logprobs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def build_reply_model(path: str | Path, reply: list[str]) -> Path:
    """A GPT-2 folder at ``path`` that answers every prompt with ``reply``
    (words, each without whitespace, none repeated), then stops."""
    if len(set(reply)) != len(reply) or any(not w or any(c.isspace() for c in w) for w in reply):
        raise ValueError("reply: distinct words without whitespace")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = ["<unk>", "</s>", *reply]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", bos_token="</s>")
    fast.save_pretrained(path)

    n = len(words)
    config = GPT2Config(vocab_size=n, n_positions=4096, n_embd=n, n_layer=1, n_head=1,
                        bos_token_id=1, eos_token_id=1, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(torch.eye(n))  # token i -> e_i; positions add nothing
        for block in model.transformer.h:  # every layer adds zero (its projections are zero)
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(1.0)
        following = {0: 2 if reply else 1, **{i: i + 1 for i in range(2, n - 1)}, n - 1: 1, 1: 1}
        for current, nxt in following.items():
            model.lm_head.weight[nxt, current] = 100.0 / n ** 0.5  # layer-normed e_i has ~sqrt(n) at i
    model.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FastChatStack:
    """``with FastChatStack(model_dir, "name", limit_worker_concurrency=2) as fc:``
    ``fc.base_url`` is the OpenAI-compatible ``.../v1``; ``aliases``: more
    names the worker serves the same model under."""

    def __init__(self, model_dir: str | Path, model_name: str, *, limit_worker_concurrency: int = 5,
                 log_dir: str | Path, aliases: tuple[str, ...] = (), start_timeout: float = 180.0):
        self.model_dir, self.model_name, self.aliases = str(model_dir), model_name, tuple(aliases)
        self.limit = limit_worker_concurrency
        self.log_dir = Path(log_dir)
        self.start_timeout = start_timeout
        self.procs: list[subprocess.Popen] = []
        self.ports = {k: free_port() for k in ("controller", "worker", "api")}
        self.base_url = f"http://127.0.0.1:{self.ports['api']}/v1"

    def _start(self, name: str, *args: str) -> None:
        # FastChat also writes log files of its own (LOGDIR), some under the names used here.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "LOGDIR": str(self.log_dir / "own")}
        log = open(self.log_dir / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen([sys.executable, "-m", f"fastchat.serve.{name}", "--host", "127.0.0.1",
                                            *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                           cwd=self.log_dir))
        log.close()

    def __enter__(self) -> "FastChatStack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        controller = f"http://127.0.0.1:{self.ports['controller']}"
        try:
            self._start("controller", "--port", str(self.ports["controller"]))
            self._start("model_worker", "--port", str(self.ports["worker"]),
                        "--worker-address", f"http://127.0.0.1:{self.ports['worker']}",
                        "--controller-address", controller, "--model-path", self.model_dir,
                        "--model-names", ",".join((self.model_name, *self.aliases)), "--device", "cpu",
                        "--limit-worker-concurrency", str(self.limit))
            self._start("openai_api_server", "--port", str(self.ports["api"]), "--controller-address", controller)
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a FastChat process exited ({p.args[2]}): see {self.log_dir}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    if any(m["id"] == self.model_name for m in json.load(r)["data"]):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"FastChat did not list {self.model_name} within {self.start_timeout:.0f} s: "
                           f"see {self.log_dir}")

    def queue_length(self) -> int:
        """Generations running or waiting at the worker."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['worker']}/worker_get_status", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(json.load(r)["queue_length"])

    def generations(self, settle: float = 30.0) -> int:
        """Generations the worker has run, once it has none left (a request
        the client gave up on still runs to its end)."""
        deadline = time.monotonic() + settle
        while self.queue_length() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # the access log line follows the answer
        log = (self.log_dir / "model_worker.log").read_text(errors="replace")
        return log.count('"POST /worker_generate HTTP/1.1" 200')

    def requests(self) -> int:
        """Chat completion requests the API server has answered (any status)."""
        time.sleep(0.3)  # the access log line follows the answer
        log = (self.log_dir / "openai_api_server.log").read_text(errors="replace")
        return log.count('"POST /v1/chat/completions HTTP/1.1"')

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
