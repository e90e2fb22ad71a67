"""Sampling with an engine larger than one node (DeepSeek-R1 at TP 8 x PP 2 on 8-GPU nodes): the recipe
setting, the engine's arguments, the Ray placement of each worker, the plan, and the load-time refusal of
an engine that cannot be scheduled."""

from pathlib import Path

import pytest

from distill.config.base import RecipeError
from distill.config.recipe import load_recipe, recipe_from_dict
from distill.config.sampling import VLLMSettings
from distill.engines.factory import gpus_for
from distill.engines.vllm import engine_kwargs
from distill.planning.plan import format_plan, plan_recipe
from flows.ray_sampling import RaySampler, RaySettings, engine_placement, worker_options

ROOT = Path(__file__).resolve().parents[1]
R1_TEACHER_RECIPES = sorted((ROOT / "recipes").glob("r1-distill-*.yaml"))
R1 = {"tensor_parallel_size": 8, "pipeline_parallel_size": 2}


def test_an_engine_over_one_node_without_ray_is_refused_at_load():
    with pytest.raises(RecipeError, match=r"sampling\.vllm: .*16 GPUs per engine exceeds gpus_per_node 8.*distributed_executor_backend: ray"):
        recipe_from_dict({"name": "x", "sampling": {"vllm": R1}})
    with pytest.raises(RecipeError, match=r"eval\.vllm: .*distributed_executor_backend"):
        recipe_from_dict({"name": "x", "eval": {"vllm": R1}})
    with pytest.raises(RecipeError, match=r"sampling\.vllm: .*tensor_parallel_size 16 exceeds gpus_per_node 8"):
        recipe_from_dict({"name": "x", "sampling": {"vllm": {"tensor_parallel_size": 16, "distributed_executor_backend": "ray"}}})
    with pytest.raises(RecipeError, match=r"sampling\.vllm: .*data_parallel_size 2 with a 2-node engine"):
        recipe_from_dict({"name": "x", "sampling": {"vllm": {**R1, "distributed_executor_backend": "ray", "data_parallel_size": 2}}})
    # larger nodes hold the engine whole; the defaults leave the dump (the stage hashes) unchanged
    big = recipe_from_dict({"name": "x", "sampling": {"vllm": {**R1, "gpus_per_node": 16}}}).sampling.vllm
    assert big.nodes_per_engine == 1 and "gpus_per_node" in big.model_dump()
    assert not {"gpus_per_node", "distributed_executor_backend"} & set(VLLMSettings().model_dump())


@pytest.mark.parametrize("path", R1_TEACHER_RECIPES, ids=lambda p: p.stem)
def test_r1_recipes_sample_on_a_ray_cluster(path):
    recipe = load_recipe(path)
    v = recipe.sampling.vllm
    assert (v.tensor_parallel_size, v.pipeline_parallel_size, v.distributed_executor_backend) == (8, 2, "ray")
    assert v.nodes_per_engine == 2 and gpus_for(recipe.sampling) == 16
    kw = engine_kwargs(recipe.teacher.model, v, seed=3)
    assert kw["distributed_executor_backend"] == "ray"
    assert kw["tensor_parallel_size"] == 8 and kw["pipeline_parallel_size"] == 2 and kw["seed"] == 3
    assert kw["max_model_len"] == v.max_model_len and kw["gpu_memory_utilization"] == v.gpu_memory_utilization
    stage = plan_recipe(recipe)["stages"]["sample"]
    assert stage["nodes_per_engine"] == 2 and stage["executor"] == "ray" and stage["gpus_per_engine"] == 16
    assert "over 2 nodes (ray)" in format_plan(plan_recipe(recipe))


def test_engine_kwargs_leave_the_backend_to_vllm_on_one_node():
    kw = engine_kwargs("m", VLLMSettings(tensor_parallel_size=2), on_cpu=True)
    assert "distributed_executor_backend" not in kw and "gpu_memory_utilization" not in kw and kw["enforce_eager"]


def test_placement_of_a_multi_node_engine():
    v = VLLMSettings(**R1, distributed_executor_backend="ray")
    p = engine_placement(v, device="GPU")
    # one bundle per engine worker (TP x PP), packed 8 + 8; the driver task holds no GPU of its own
    assert p.multi_node and p.num_gpus == 0 and p.nodes == 2 and p.strategy == "PACK"
    assert p.bundles == [{"GPU": 1.0, "CPU": 1.0}] * 16
    assert worker_options(p, 4.0) == {"num_cpus": 4.0, "num_gpus": 0.0}
    # an engine on one node: the worker task holds its GPUs, as before
    one = engine_placement(VLLMSettings(tensor_parallel_size=4), device="GPU")
    assert not one.multi_node and one.num_gpus == 4 and one.bundles == []
    assert engine_placement(VLLMSettings(tensor_parallel_size=4), device="CPU").num_gpus == 0
    assert engine_placement(None, devices_per_engine=2, gpus_per_worker=1.5).num_gpus == 1.5
    sampler = RaySampler(RaySettings(workers=2), vllm=v)
    assert sampler.devices_per_engine == 16 and sampler.vllm is v


@pytest.mark.slow
def test_a_worker_runs_inside_its_engines_placement_group():
    """A local Ray instance (CPU bundles stand in for GPUs): the worker task lands in bundle 0 of its own
    placement group and sees it as vLLM will (ray.util.get_current_placement_group)."""
    import ray
    from ray.util.placement_group import remove_placement_group

    from flows.ray_sampling import placement_groups

    v = VLLMSettings(pipeline_parallel_size=2, gpus_per_node=1, distributed_executor_backend="ray")
    p = engine_placement(v, device="CPU")
    assert p.multi_node and p.bundles == [{"CPU": 1.0}] * 2
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        (group,) = placement_groups(p, 1, timeout_s=120)

        @ray.remote
        def where() -> str:
            return ray.util.get_current_placement_group().id.hex()

        assert ray.get(where.options(**worker_options(p, 1.0, group)).remote(), timeout=120) == group.id.hex()
        remove_placement_group(group)
        with pytest.raises(RuntimeError, match=r"could not place sampling engine 0 of 1 .*CPU"):
            placement_groups(engine_placement(VLLMSettings(pipeline_parallel_size=4, gpus_per_node=1,
                                                           distributed_executor_backend="ray"), device="CPU"), 1, timeout_s=3)
    finally:
        ray.shutdown()
