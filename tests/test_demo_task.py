from distill.generation import demo_task
from distill.core.schema import format_ok
from distill.verify.math import verify_math


def test_prompts_are_deterministic_and_disjoint():
    train, ev = demo_task.make_prompts(64, 32, seed=0)
    train2, ev2 = demo_task.make_prompts(64, 32, seed=0)
    assert train == train2 and ev == ev2
    ids_train, ids_eval = {r["prompt_id"] for r in train}, {r["prompt_id"] for r in ev}
    assert len(ids_train) == 64 and len(ids_eval) == 32 and not ids_train & ids_eval
    cold = demo_task.cold_start_rows(200, seed=0, exclude=ids_train | ids_eval)
    cold_prompts = {r["prompt"][0]["content"] for r in cold}
    assert len(cold) == 200 and not cold_prompts & {r["prompt"] for r in train + ev}


def test_gold_answers_and_cold_start_traces_verify():
    train, _ = demo_task.make_prompts(10, 0, seed=1)
    for r in train:
        nums = [int(t) for t in r["prompt"].replace("?", " ").replace(".", " ").split() if t.isdigit()]
        assert int(r["answer"]) == sum(nums[:2])
    for row in demo_task.cold_start_rows(20, seed=1):
        text = row["completion"][0]["content"]
        assert format_ok(text)
        gold = text.rsplit("\\boxed{", 1)[1].split("}")[0]
        assert verify_math(text, gold).correct is True
