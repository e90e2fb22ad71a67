import polars as pl
import pytest

from distill.core.storage import atomic_path, fingerprint, is_done, read_table, write_manifest, write_parquet


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_manifest_detects_changed_fingerprint_and_tampered_files(tmp_path):
    df = pl.DataFrame({"a": [1, 2, 3]})
    entry = write_parquet(df, tmp_path / "t.parquet")
    assert entry["rows"] == 3
    fp = fingerprint("s", {"k": 1}, [])
    write_manifest(tmp_path, fp, files={"t.parquet": entry})
    assert is_done(tmp_path, fp)
    assert not is_done(tmp_path, fingerprint("s", {"k": 2}, []))
    (tmp_path / "t.parquet").write_bytes(b"garbage")
    assert not is_done(tmp_path, fp)


def test_read_table_errors_name_the_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{not json}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2"):
        read_table(p)
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "missing.jsonl")
