"""The HTTP engine against a small local server that misbehaves on purpose: retries with backoff on
429/5xx/dropped connections, no retry on other errors, bounded concurrency, rate limits, the API key
kept out of logs and errors. Plus the rate limiter's arithmetic and the one-field engine switch."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distill.engines.base import EngineError, Request, SamplingParams
from distill.engines.openai import OpenAIEngine, RateLimiter
from distill.engines.factory import make_engine
from distill.config.sampling import OpenAISettings
from distill.config.recipe import recipe_from_dict

SECRET = "sk-test-7f3a9c-never-log-me"


class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1: `script` lists what the first calls get
    ("429", "500", "503", "400", "drop"); every other call is answered properly after `delay` seconds."""

    def __init__(self, script=(), delay=0.0, key=None):
        self.script, self.delay, self.key = list(script), delay, key
        self.calls, self.starts, self.inflight, self.max_inflight = 0, [], 0, 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, payload, headers=()):
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"data": [{"id": "fake-model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.calls += 1
                    fake.starts.append(time.monotonic())
                    action = fake.script.pop(0) if fake.script else "ok"
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    if fake.key and self.headers.get("Authorization") != f"Bearer {fake.key}":
                        return self._send(401, {"error": "bad key"})
                    if action == "drop":  # close the connection without an answer
                        self.close_connection = True
                        return
                    if action != "ok":
                        return self._send(int(action), {"error": action}, [("Retry-After", "0")] if action == "429" else [])
                    time.sleep(fake.delay)
                    self._send(200, fake.answer(self.path, body))
                finally:
                    with fake.lock:
                        fake.inflight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path, body):
        n = body["n"]
        if path.endswith("/chat/completions"):
            q = body["messages"][-1]["content"]
            choices = [{"index": i, "message": {"role": "assistant", "content": f"{q} -> {i}"}, "finish_reason": "stop"} for i in range(n)]
            return {"choices": choices, "usage": {"prompt_tokens": 7, "completion_tokens": 3 * n}}
        ids = body["prompt"]
        # token ids: the prompt's last three, then one per sample index; "length" for odd indexes
        choices = [{"index": i, "text": "server text", "token_ids": ids[-3:] + [i], "finish_reason": "length" if i % 2 else "stop"} for i in range(n)]
        return {"choices": choices[::-1], "usage": {"prompt_tokens": len(ids), "completion_tokens": 4 * n}}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _requests(k):
    return [Request(f"r{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(k)]


PARAMS = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_tokens=8)


def _chat(url, **kw):
    return OpenAIEngine(None, OpenAISettings(base_url=url, endpoint="chat", backoff_s=0.01, **kw))


def test_chat_results_map_to_their_requests():
    with FakeOpenAI(delay=0.01) as srv:
        engine = _chat(srv.url, max_concurrency=4)
        assert engine.served_model == "fake-model"  # asked /v1/models
        out = engine.generate(_requests(9), PARAMS)
    assert [r.request_id for r in out] == [f"r{i}" for i in range(9)]
    for i, r in enumerate(out):
        assert [c.text for c in r.completions] == [f"question {i} -> 0", f"question {i} -> 1"]
        assert r.prompt_tokens == 7 and all(c.completion_tokens == 3 for c in r.completions)


def test_completions_send_token_ids_and_decode_locally(tiny_llama):
    from transformers import AutoTokenizer

    from distill.engines.base import render_prompts

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    reqs = _requests(3)
    with FakeOpenAI() as srv:
        engine = OpenAIEngine(str(tiny_llama), OpenAISettings(base_url=srv.url, model="m", backoff_s=0.01))
        out = engine.generate(reqs, PARAMS)
    for r, ids in zip(out, render_prompts(tok, reqs)):
        assert r.prompt_tokens == len(ids)
        for i, c in enumerate(r.completions):  # choices came back in reverse order: sorted by index
            assert c.token_ids == ids[-3:] + [i]
            assert c.text == tok.decode(ids[-3:] + [i], skip_special_tokens=True)  # not the server's text
            assert c.finish_reason == ("length" if i % 2 else "stop") and c.completion_tokens == 4


def test_retries_429_5xx_and_dropped_connections_then_succeeds():
    with FakeOpenAI(script=["429", "500", "drop", "503"]) as srv:
        engine = _chat(srv.url, max_concurrency=1, max_retries=5)
        out = engine.generate(_requests(2), PARAMS)
        assert srv.calls == 6  # 4 failures, then both requests served
    assert len(out) == 2 and engine.counters["retries"] == 4 and engine.counters["rate_limited"] == 1


def test_backoff_grows_exponentially():
    with FakeOpenAI(script=["500", "500", "500"]) as srv:
        engine = OpenAIEngine(None, OpenAISettings(base_url=srv.url, endpoint="chat", backoff_s=0.2, max_concurrency=1))
        t0 = time.monotonic()
        engine.generate(_requests(1), PARAMS)
        gaps = [b - a for a, b in zip(srv.starts, srv.starts[1:])]
    # delays are backoff_s * 2**attempt * U(0.5, 1): >= 0.1, 0.2, 0.4
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39
    assert time.monotonic() - t0 < 5


def test_client_errors_are_not_retried_and_retries_run_out():
    with FakeOpenAI(script=["400"]) as srv:
        with pytest.raises(EngineError, match="HTTP 400"):
            _chat(srv.url, max_retries=5).generate(_requests(1), PARAMS)
        assert srv.calls == 1
    with FakeOpenAI(script=["503"] * 10) as srv:
        with pytest.raises(EngineError, match="after 3 attempts: HTTP 503"):
            _chat(srv.url, max_retries=2).generate(_requests(1), PARAMS)
        assert srv.calls == 3


def test_api_key_is_sent_but_never_logged(monkeypatch, caplog):
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI(script=["500", "400"], key=SECRET) as srv:
        engine = _chat(srv.url, api_key_env="DISTILL_TEST_KEY")
        with pytest.raises(EngineError) as err:
            engine.generate(_requests(1), PARAMS)
        assert srv.calls == 2  # the key was accepted (a wrong key would be a 401)
        ok = engine.generate(_requests(1), PARAMS)
    assert ok[0].completions
    assert SECRET not in caplog.text and SECRET not in str(err.value) and SECRET not in repr(engine.__dict__.get("settings"))
    monkeypatch.delenv("DISTILL_TEST_KEY")
    with pytest.raises(EngineError, match="DISTILL_TEST_KEY"):
        _chat("http://127.0.0.1:9/v1", api_key_env="DISTILL_TEST_KEY")


def test_concurrency_is_bounded():
    with FakeOpenAI(delay=0.05) as srv:
        _chat(srv.url, max_concurrency=3).generate(_requests(12), PARAMS)
        assert srv.max_inflight == 3


def test_requests_per_minute_limit():
    """rpm over a 1-second window here (60 s in use): 3 per window, 7 requests -> at least 2 windows."""
    with FakeOpenAI() as srv:
        engine = OpenAIEngine(None, OpenAISettings(base_url=srv.url, endpoint="chat", rpm=3, max_concurrency=8), rate_window_s=1.0)
        t0 = time.monotonic()
        engine.generate(_requests(7), PARAMS)
        elapsed = time.monotonic() - t0
        starts = sorted(srv.starts)
    assert elapsed >= 1.9
    # server-side arrival times: connection set-up on a loaded machine can delay one window's arrivals by
    # tens of ms, so check a 0.75 s window (without the limiter all 7 arrive within a few ms)
    assert all(sum(1 for t in starts if s <= t < s + 0.75) <= 3 for s in starts)


def test_tokens_per_minute_limit():
    """Each chat request reserves ~prompt/4 + n * max_tokens = 2 + 16 tokens; 40 per window lets 2 through."""
    with FakeOpenAI() as srv:
        engine = OpenAIEngine(None, OpenAISettings(base_url=srv.url, endpoint="chat", tpm=40, max_concurrency=8), rate_window_s=1.0)
        t0 = time.monotonic()
        engine.generate(_requests(5), PARAMS)
        assert time.monotonic() - t0 >= 1.9


def test_rate_limiter_window_arithmetic():
    now = [100.0]
    rl = RateLimiter(10, window=60, clock=lambda: now[0])
    assert rl.delay(4) == 0
    rl.record(4)  # t=100
    now[0] = 130
    rl.record(5)  # t=130
    assert rl.delay(1) == 0  # 10 in the window: fits exactly
    assert rl.delay(2) == pytest.approx(30)  # the t=100 entry must leave first (at 160)
    assert rl.delay(7) == pytest.approx(60)  # 9 + 7 - 10 = 6 > 4: the t=130 entry too (at 190)
    assert rl.delay(50) == pytest.approx(60)  # larger than the limit: alone, in an empty window
    entry = rl.record(1)
    entry[1] = 0  # corrected to the real usage (nothing: the request failed)
    assert rl.delay(1) == 0
    now[0] = 200
    assert rl.delay(10) == 0 and not rl._log  # all expired


def test_engine_is_one_recipe_field():
    base = {"name": "t", "sampling": {"engine": "openai", "openai": {"base_url": "http://h:1/v1", "model": "m", "rpm": 60, "api_key_env": "MY_KEY"}}}
    r = recipe_from_dict(base)
    assert r.sampling.engine == "openai" and r.sampling.openai.rpm == 60
    with pytest.raises(ValueError, match="api_key_env"):
        recipe_from_dict(base, overrides=["sampling.openai.api_key_env=sk-abc.def"])
    with pytest.raises(ValueError, match="unknown field"):
        recipe_from_dict(base, overrides=["sampling.openai.rpn=60"])
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("sglang", "m")


def test_sampling_params_from_a_recipe_section():
    r = recipe_from_dict({"name": "t", "sampling": {"n": 3, "temperature": 0.8, "top_p": 0.9, "max_tokens": 64, "seed": 7},
                          "eval": {"k": 5, "temperature": 0.2, "seed": 3}})
    assert SamplingParams.from_section(r.sampling) == SamplingParams(3, 0.8, 0.9, 64, 7)
    assert SamplingParams.from_section(r.eval, n=r.eval.k) == SamplingParams(5, 0.2, r.eval.top_p, r.eval.max_tokens, 3)
    gen = r.merge.generator  # no n: one answer per prompt
    assert SamplingParams.from_section(gen) == SamplingParams(1, gen.temperature, gen.top_p, gen.max_tokens, gen.seed)
    fs = r.teacher.cold_start.fewshot  # no top_p, no seed: the defaults, then what is given
    assert SamplingParams.from_section(fs, n=fs.samples_per_prompt, seed=9) == SamplingParams(fs.samples_per_prompt, fs.temperature, 0.95, fs.max_tokens, 9)


def test_engine_for_reads_the_section_and_its_factory_pickles(monkeypatch):
    import pickle

    from distill.engines import factory

    built = []
    monkeypatch.setattr(factory, "make_engine", lambda kind, model, **kw: built.append((kind, model, kw)) or "engine")
    r = recipe_from_dict({"name": "t", "sampling": {"engine": "transformers", "seed": 4, "chat_template": "{{ x }}"}})
    assert factory.engine_for(r.sampling, "m") == "engine"
    assert built[-1] == ("transformers", "m", {"seed": 4, "chat_template": "{{ x }}", "vllm_settings": r.sampling.vllm, "openai_settings": r.sampling.openai})
    factory.engine_for(r.eval, "e", chat_template="t")  # eval has no openai section and no template of its own
    assert built[-1] == ("vllm", "e", {"seed": r.eval.seed, "chat_template": "t", "vllm_settings": r.eval.vllm, "openai_settings": None})
    f = pickle.loads(pickle.dumps(factory.engine_factory(r.sampling, "m", seed=11)))  # data-parallel workers unpickle it
    assert f.func is factory.engine_for and f.args[1] == "m" and f.keywords["seed"] == 11


def test_gpus_per_section():
    from distill.engines.factory import data_parallel_workers, devices_per_engine, gpus_for

    r = recipe_from_dict({"name": "t", "sampling": {"vllm": {"tensor_parallel_size": 2, "pipeline_parallel_size": 3, "data_parallel_size": 2}},
                          "eval": {"engine": "transformers"}})
    assert devices_per_engine(r.sampling.vllm) == 6 and data_parallel_workers(r.sampling) == 2
    assert gpus_for(r.sampling, data_parallel=True) == 12 and gpus_for(r.sampling) == 6
    assert gpus_for(r.eval) == 1 and gpus_for(r.verify.judge) == 1
    assert gpus_for(recipe_from_dict({"name": "t", "sampling": {"engine": "openai"}}).sampling, data_parallel=True) == 0
    priced = recipe_from_dict({"name": "t", "sampling": {"cost": {"gpus": 5}}}).sampling
    assert gpus_for(priced, data_parallel=True) == 5  # a stated count wins
