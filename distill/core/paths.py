"""File-mode commands (`distill verify --input/--output`, `distill curate --input/--output-dir`) never read
their own outputs: an output that is the input, or lies inside an input directory, is refused before
anything is read or written (a rerun would read the earlier outputs as input: rows_in 20k, 40k, 60k...).
Paths are compared with symlinks resolved."""

from __future__ import annotations

from pathlib import Path


def refuse_own_outputs(input_path: str | Path, output: str | Path, *, input_flag: str = "--input", output_flag: str = "--output") -> None:
    """ValueError naming both flags when `output` (a file or directory the command writes) is `input_path`
    or lies inside it (an input directory is read shard by shard)."""
    src, dst = Path(input_path).resolve(), Path(output).resolve()
    if dst == src:
        raise ValueError(f"{output_flag} {output} is the same path as {input_flag} {input_path}: the command would read or replace "
                         f"its own output; write the output somewhere else")
    if src.is_dir() and dst.is_relative_to(src):
        raise ValueError(f"{output_flag} {output} is inside the input directory {input_flag} {input_path}: a rerun would read the "
                         f"output as input; write the output outside {input_path}")
