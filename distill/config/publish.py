"""The publish stage's section: which Hub repos get the datasets and checkpoints, and their cards."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from distill.config.base import Section
from distill.config.names import hub_repo_id


class PublishConfig(Section):
    """Push the run's datasets (reasoning, non-reasoning, merged) and student checkpoints to the Hub, each
    with a card (distill/publish/hub.py). The token comes from HF_TOKEN or `huggingface-cli login`, never from
    the recipe. `dry_run` writes exactly the files that would be pushed under `dry_run_dir` instead."""

    enabled: bool = False
    dry_run: bool = True
    dry_run_dir: str | None = None  # default: <run_dir>/publish
    dataset_repo: str | None = None  # "org/name": pushes org/name-reasoning, -non-reasoning, -merged (default: the recipe name)
    model_repo_prefix: str | None = None  # "org/name": pushes org/name-<student> (default: the recipe name)
    private: bool = True
    revision: str | None = None  # the branch each repo gets for this run; default: run-<recipe hash>
    license: str | None = None  # licence id in the cards' metadata; default: the sources' licence if they agree
    source_licenses: dict[str, str] = Field(default_factory=dict)  # source (model, dataset path) -> licence

    @field_validator("dataset_repo", "model_repo_prefix")
    @classmethod
    def _repo_id(cls, v: str | None, info: ValidationInfo) -> str | None:
        # a Hub id, never a path: the dry run joins it under OUT (an absolute or `..` id would leave it)
        return None if v is None else hub_repo_id(v, f"publish.{info.field_name}")
