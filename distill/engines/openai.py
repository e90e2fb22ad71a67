"""Any OpenAI-compatible server (`vllm serve`, SGLang, a hosted API) over HTTP: bounded concurrency,
retries with exponential backoff, and request/token rate limits."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Sequence

from distill.config.sampling import OpenAISettings
from distill.core.secrets import register, scrub
from distill.engines.base import Completion, EngineError, Request, Result, SamplingParams, render_prompts, request_seed

log = logging.getLogger(__name__)


class RateLimiter:
    """At most `limit` units (requests or tokens) in any `window` seconds: a sliding log of what was sent.

    Exact over every window (a token bucket that starts full lets twice the limit through in the first
    minute). A single request larger than the whole limit waits for an empty window and goes alone.
    The amount of an entry can be corrected after the fact (an estimate replaced by the real usage).
    """

    def __init__(self, limit: float, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = float(limit), float(window), clock
        self._log: deque[list[float]] = deque()  # [time, amount], oldest first
        self._lock: asyncio.Lock | None = None

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            self._log.popleft()

    def delay(self, amount: float, now: float | None = None) -> float:
        """Seconds until `amount` more fits in the window (0: it fits now)."""
        now = self.clock() if now is None else now
        self._expire(now)
        excess = sum(a for _, a in self._log) + amount - self.limit
        if excess <= 0 or not self._log:
            return 0.0
        if amount > self.limit:  # alone, once everything in the window has expired
            return self._log[-1][0] + self.window - now
        for t, a in self._log:
            excess -= a
            if excess <= 0:
                return t + self.window - now
        return 0.0

    def record(self, amount: float, now: float | None = None) -> list[float]:
        entry = [self.clock() if now is None else now, float(amount)]
        self._log.append(entry)
        return entry

    async def acquire(self, amount: float) -> list[float]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # first come, first served: a big request is not starved by small ones
            while (wait := self.delay(amount)) > 0:
                await asyncio.sleep(wait)
            return self.record(amount)


RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0


class OpenAIEngine:
    """An OpenAI-compatible server over HTTP (`/v1/completions` with token ids, or `/v1/chat/completions`).

    Up to `max_concurrency` requests are in flight; 429, 5xx, timeouts and connection errors are retried
    with exponential backoff and jitter (a `Retry-After` header is honoured), other errors fail at once.
    `rpm`/`tpm` hold requests back so the server's limits are not hit in the first place; the token
    reservation of a request is its prompt plus an estimate of its completions, corrected to the real
    usage when the response arrives. The API key is read from the environment variable the recipe names
    and only ever put in the Authorization header: never logged, never in an error message.
    """

    name = "openai"

    def __init__(self, model: str | None, settings=None, *, seed: int = 0, chat_template: str | None = None, rate_window_s: float = 60.0):
        import httpx  # optional: only the HTTP engine needs it

        self.settings = s = settings or OpenAISettings()
        self.seed = seed
        self.chat_template = chat_template
        self.base_url = s.base_url.rstrip("/")
        self.rate_window_s = rate_window_s
        self._key = None
        if s.api_key_env:
            self._key = os.environ.get(s.api_key_env)
            if not self._key:
                raise EngineError(f"environment variable {s.api_key_env} (sampling.openai.api_key_env) is not set")
            register(self._key, s.api_key_env)  # scrubbed from every error, log and Prefect record from now on
        self.tokenizer = None
        if s.endpoint == "completions":
            if not model:
                raise EngineError("the completions endpoint sends token ids: it needs the model's tokenizer (a local path or hub name)")
            from transformers import AutoTokenizer  # heavy: only the completions endpoint renders prompts here

            self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.served_model = s.model or self._first_served_model(httpx)
        self.version = self.served_model
        self.counters = {"requests": 0, "retries": 0, "rate_limited": 0}
        self._observed: list[int] = []  # completion tokens per sample, for the tpm estimate

    def _scrubbed(self, text: str) -> str:
        """A server's reply without our key or any other secret (a server may echo the request's headers)."""
        return scrub(text.replace(self._key, f"<secret {self.settings.api_key_env}>") if self._key else text)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def _first_served_model(self, httpx) -> str:
        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=min(self.settings.timeout, 30))
            r.raise_for_status()
            return self._scrubbed(str(r.json()["data"][0]["id"]))
        except Exception as e:  # noqa: BLE001 - turned into one clear error
            raise EngineError(f"could not list models at {self.base_url}/models ({type(e).__name__}); set sampling.openai.model") from None

    # -- one request --

    def _body(self, req: Request, prompt_ids: list[int] | None, params: SamplingParams) -> tuple[str, dict]:
        body: dict[str, Any] = {
            "model": self.served_model,
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if self.settings.send_seed:
            body["seed"] = request_seed(self.seed, req)
        if prompt_ids is not None:
            body |= {"prompt": prompt_ids, "return_token_ids": True}
            path = "/completions"
        else:
            body["messages"] = req.messages
            path = "/chat/completions"
        return path, body | self.settings.extra_body

    def _estimate(self, prompt_tokens: int, params: SamplingParams) -> int:
        per_sample = params.max_tokens
        if len(self._observed) >= 8:  # reserving max_tokens for every sample would starve the window
            per_sample = min(params.max_tokens, int(1.5 * sum(self._observed[-256:]) / len(self._observed[-256:])) + 1)
        return prompt_tokens + params.n * per_sample

    def _parse(self, req: Request, prompt_ids: list[int] | None, params: SamplingParams, data: dict) -> Result:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        comps = []
        for c in choices:
            text = c.get("text") if prompt_ids is not None else (c.get("message") or {}).get("content")
            text = text or ""
            token_ids = c.get("token_ids")
            if token_ids is not None and self.tokenizer is not None:
                text = self.tokenizer.decode(token_ids, skip_special_tokens=True)  # as the offline engines do
                n_tokens = len(token_ids)
            elif self.tokenizer is not None:
                token_ids, n_tokens = [], len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            else:  # a hosted chat API: only the total is known
                token_ids = []
                n_tokens = round((usage.get("completion_tokens") or 0) / max(1, len(choices)))
            finish = "length" if c.get("finish_reason") == "length" else "stop"
            text = self._scrubbed(text)  # a server that echoes our key does not get it into the traces
            comps.append(Completion(text, finish, n_tokens, list(token_ids)))
        if len(comps) != params.n:
            raise EngineError(f"request {req.request_id}: server returned {len(comps)} completions, asked for {params.n}")
        prompt_tokens = len(prompt_ids) if prompt_ids is not None else int(usage.get("prompt_tokens") or 0)
        return Result(req.request_id, prompt_tokens, comps)

    async def _request(self, client, limits, req: Request, prompt_ids: list[int] | None, params: SamplingParams) -> Result:
        import httpx  # optional: only the HTTP engine needs it

        rpm, tpm = limits
        path, body = self._body(req, prompt_ids, params)
        prompt_tokens = len(prompt_ids) if prompt_ids is not None else sum(len(m.get("content") or "") for m in req.messages) // 4
        s = self.settings
        for attempt in range(s.max_retries + 1):
            if rpm:
                await rpm.acquire(1)
            reserved = await tpm.acquire(self._estimate(prompt_tokens, params)) if tpm else None
            retry_after = None
            self.counters["requests"] += 1
            try:
                resp = await client.post(path, json=body)
            except httpx.TransportError as e:  # connection refused/reset, timeouts, broken responses
                problem = f"{type(e).__name__}"
            else:
                if resp.status_code == 200:
                    result = self._parse(req, prompt_ids, params, resp.json())
                    used = [c.completion_tokens for c in result.completions]
                    self._observed.extend(used)
                    if reserved is not None:
                        reserved[1] = result.prompt_tokens + sum(used)
                    return result
                problem = f"HTTP {resp.status_code}"
                if resp.status_code not in RETRY_STATUS:  # the reply may echo our headers: scrubbed, then cut
                    raise EngineError(scrub(f"{problem} from {self.base_url}{path}: {self._scrubbed(resp.text)[:500]}"))
                if resp.status_code == 429:
                    self.counters["rate_limited"] += 1
                try:
                    retry_after = float(resp.headers.get("retry-after", ""))
                except ValueError:
                    retry_after = None
            if reserved is not None:
                reserved[1] = 0  # not served: its tokens do not count against the window
            if attempt == s.max_retries:
                raise EngineError(f"request {req.request_id} to {self.base_url}{path} failed after {attempt + 1} attempts: {problem}")
            delay = min(MAX_BACKOFF_S, s.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = max(delay, min(retry_after, MAX_BACKOFF_S))
            self.counters["retries"] += 1
            log.warning("request %s: %s; retry %d/%d in %.1f s", req.request_id, problem, attempt + 1, s.max_retries, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # -- many requests --

    async def _drive(self, batches: Iterable[Sequence[Request]], params: SamplingParams, emit: Callable[[tuple[int, list[Result]]], None]) -> None:
        import httpx  # optional: only the HTTP engine needs it

        s = self.settings
        conc = s.max_concurrency
        limits = (
            RateLimiter(s.rpm, self.rate_window_s) if s.rpm else None,
            RateLimiter(s.tpm, self.rate_window_s) if s.tpm else None,
        )
        jobs: asyncio.Queue = asyncio.Queue(maxsize=2 * conc)  # bounded: batches are read as needed, not all at once
        pending: dict[int, list] = {}

        async def produce() -> None:
            for b, reqs in enumerate(batches):
                if not reqs:
                    emit((b, []))
                    continue
                prompts = render_prompts(self.tokenizer, reqs, self.chat_template) if self.tokenizer else [None] * len(reqs)
                pending[b] = [[None] * len(reqs), len(reqs)]
                for j, (r, p) in enumerate(zip(reqs, prompts)):
                    await jobs.put((b, j, r, p))
            for _ in range(conc):
                await jobs.put(None)

        async def work(client) -> None:
            while (job := await jobs.get()) is not None:
                b, j, r, p = job
                res = await self._request(client, limits, r, p, params)
                slot = pending[b]
                slot[0][j] = res
                slot[1] -= 1
                if slot[1] == 0:
                    del pending[b]
                    emit((b, slot[0]))

        pool = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        async with httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=s.timeout, limits=pool) as client:
            tasks = [asyncio.ensure_future(produce())] + [asyncio.ensure_future(work(client)) for _ in range(conc)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def stream(self, batches: Iterable[Sequence[Request]], params: SamplingParams) -> Iterator[tuple[int, list[Result]]]:
        """Run the requests on an event loop in a helper thread; yield batches as they complete.

        A thread keeps this usable from code that already runs an event loop (Prefect's workers)."""
        out: queue.Queue = queue.Queue()
        done = object()
        stop = threading.Event()
        loop = asyncio.new_event_loop()
        main: list[asyncio.Task] = []

        def emit(item) -> None:
            out.put(item)

        def run() -> None:
            try:
                asyncio.set_event_loop(loop)
                task = loop.create_task(self._drive(batches, params, emit))
                main.append(task)
                if stop.is_set():
                    task.cancel()
                loop.run_until_complete(task)
                out.put(done)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer's thread
                out.put(e)
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="openai-engine", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not done:
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        return
                    raise item
                yield item
        finally:
            stop.set()
            if main and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(main[0].cancel)
                except RuntimeError:  # the loop finished meanwhile
                    pass
            thread.join(timeout=30)

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]:
        return [r for _, results in self.stream([requests], params) for r in results]

    def close(self) -> None:
        pass
