"""``pgolf-data shard --engine datatrove``: the same bytes as the default engine for any number of tasks, on the
local, Slurm and Ray executors, after a killed task, a damaged partial or an interrupted merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("datatrove", reason="the scale extra (pip install -e '.[scale]') is not installed")

from pgolf_data.cli import main
from pgolf_data.corpus import CorpusError, open_corpus
from pgolf_data.manifest import Manifest
from pgolf_data.scale import job
from pgolf_data.scale.executors import ScaleConfig, SlurmOptions
from pgolf_data.scale.job import run_datatrove
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.spec import TokenizerSpec

REPO = Path(__file__).resolve().parents[1]
EDGE_DOCS = ["", "é", "ＦＵＬＬＷＩＤＴＨ and ﬁ ligature", "tab\tand  double  spaces\r\nand CRLF", "a literal \u2581"]
CONFIG = ShardConfig(val_docs=40, shard_tokens=20_000, workers=1)


@pytest.fixture(scope="module")
def docs(dev_docs) -> list[str]:
    """Real documents with edge cases on both sides of the validation boundary (val_docs=40)."""
    return [*EDGE_DOCS[:3], *dev_docs[:40], *EDGE_DOCS[3:], *dev_docs[40:300]]


@pytest.fixture
def corpus_file(tmp_path, docs) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def reference(corpus: Path, tokenizer: bytes, out: Path, config: ShardConfig = CONFIG) -> dict[str, bytes]:
    """What ``pgolf-data shard`` writes (``--max-docs`` sets the corpus' and the config's limit, as here)."""
    write_shards(open_corpus(corpus, max_docs=config.max_docs), tokenizer, out, config)
    return files(out)


@pytest.mark.parametrize("tasks", [1, 3, 4])
def test_the_local_executor_writes_the_same_bytes_as_pgolf_shard(tmp_path, corpus_file, sp1024, tasks):
    expected = reference(corpus_file, sp1024, tmp_path / "ref")
    manifest = run_datatrove(
        open_corpus(corpus_file), sp1024, tmp_path / "dt", CONFIG, ScaleConfig(tasks=tasks, workers=2)
    )
    assert files(tmp_path / "dt") == expected
    assert len(manifest.splits["train"].shards) > 3, "documents must straddle shards for the test to mean much"
    assert not (tmp_path / "dt.work" / "partials").exists(), "partials are deleted once merged"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tasks=st.integers(1, 6),
    val_docs=st.integers(0, 30),
    shard_tokens=st.sampled_from([997, 4096, 100_000]),
    train_sidecars=st.booleans(),
)
def test_any_tasks_and_cut_give_the_same_bytes(
    tmp_path_factory, docs, bytes260, tasks, val_docs, shard_tokens, train_sidecars
):
    root = tmp_path_factory.mktemp("any")
    corpus = root / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:60]), encoding="utf-8")
    config = ShardConfig(val_docs=val_docs, shard_tokens=shard_tokens, train_sidecars=train_sidecars, workers=1)
    expected = reference(corpus, bytes260, root / "ref", config)
    run_datatrove(open_corpus(corpus), bytes260, root / "dt", config, ScaleConfig(tasks=tasks, workers=1))
    assert files(root / "dt") == expected


def test_sources_train_sidecars_and_max_docs(tmp_path, docs, bytes260):
    """A directory of plain, compressed and parquet files, train sidecars, and a max_docs inside a slice."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    source = tmp_path / "src"
    source.mkdir()
    (source / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:120]), encoding="utf-8")
    raw = "".join(json.dumps({"text": d}) + "\n" for d in docs[120:200]).encode()
    (source / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    pq.write_table(pa.table({"text": docs[200:]}), source / "c.parquet", row_group_size=16)
    config = ShardConfig(val_docs=40, shard_tokens=50_000, max_docs=270, train_sidecars=True, workers=1)
    expected = reference(source, bytes260, tmp_path / "ref", config)
    corpus = open_corpus(source, max_docs=270)
    run_datatrove(corpus, bytes260, tmp_path / "dt", config, ScaleConfig(tasks=5, workers=2))
    assert files(tmp_path / "dt") == expected


@pytest.mark.parametrize(("max_docs", "verified"), [(None, True), (250, False)])
def test_the_challenge_file_is_verified_as_by_its_reader(tmp_path, docs, bytes260, max_docs, verified):
    """docs_selected.jsonl with its source manifest: the manifests agree on docs_sha256_verified, and a file that
    is not the declared one is refused by both engines."""
    import hashlib

    folder = tmp_path / "challenge"
    folder.mkdir()
    raw = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    (folder / "docs_selected.jsonl").write_bytes(raw)
    sidecar = folder / "docs_selected.source_manifest.json"
    sidecar.write_text(json.dumps({"docs_val": 40, "docs_sha256": hashlib.sha256(raw).hexdigest()}))
    config = ShardConfig(val_docs=40, shard_tokens=50_000, max_docs=max_docs, workers=1)
    expected = reference(folder, bytes260, tmp_path / "ref", config)
    manifest = run_datatrove(
        open_corpus(folder, max_docs=max_docs), bytes260, tmp_path / "dt", config, ScaleConfig(tasks=3, workers=2)
    )
    assert files(tmp_path / "dt") == expected
    assert manifest.corpus["source"]["docs_sha256_verified"] is verified

    sidecar.write_text(json.dumps({"docs_val": 40, "docs_sha256": "0" * 64}))
    if verified:
        with pytest.raises(CorpusError, match="differs from docs_sha256"):
            run_datatrove(open_corpus(folder), bytes260, tmp_path / "bad", config, ScaleConfig(tasks=3, workers=2))
        assert not (tmp_path / "bad" / "manifest.json").exists()


def test_the_cli_switch(tmp_path, corpus_file, bytes260):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.pgt").write_bytes(bytes260)
    args = ["shard", "--tokenizer", str(tmp_path / "tok"), "--corpus", str(corpus_file), "--val-docs", "40"]
    args += ["--shard-tokens", "20000", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    assert main([*args, "--out", str(tmp_path / "dt"), "--engine", "datatrove", "--tasks", "3", "--workers", "1"]) == 0
    assert files(tmp_path / "dt") == files(tmp_path / "ref")
    assert main(["verify", str(tmp_path / "dt"), "--corpus", str(corpus_file)]) == 0


def test_a_task_killed_mid_run_is_redone_on_resume(tmp_path, corpus_file, sp1024):
    """SIGKILL the whole run while task 1 writes its partial; --resume keeps task 0 and redoes task 1."""
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.pgt").write_bytes(sp1024)
    out, work = tmp_path / "dt", tmp_path / "dt.work"
    args = ["shard", "--tokenizer", str(tmp_path / "tok"), "--corpus", str(corpus_file), "--val-docs", "40"]
    args += ["--shard-tokens", "20000", "--quiet", "--engine", "datatrove", "--tasks", "3", "--workers", "1"]
    command = [sys.executable, "-m", "pgolf_data", *args, "--out", str(out)]
    run = subprocess.Popen(command, cwd=REPO, start_new_session=True, stderr=subprocess.DEVNULL)
    writing = work / "partials" / "00001.tokens.tmp"
    deadline = time.monotonic() + 120
    while not writing.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert writing.exists(), "the run ended before task 1 started writing"
    assert not (out / "manifest.json").exists()
    finished = work / "logs" / "encode" / "stats" / "00000.json"
    before = finished.stat().st_mtime_ns
    assert not (work / "logs" / "encode" / "completions" / "00001").exists()

    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert finished.stat().st_mtime_ns == before, "task 0 had finished and was not redone"
    assert files(out) == reference(corpus_file, sp1024, tmp_path / "ref")


def test_a_damaged_partial_is_redone_and_an_interrupted_merge_continues(tmp_path, monkeypatch, corpus_file, sp1024):
    corpus, out, work = open_corpus(corpus_file), tmp_path / "dt", tmp_path / "dt.work"
    scale = ScaleConfig(tasks=3, workers=1)
    with monkeypatch.context() as m:
        m.setattr("pgolf_data.scale.steps.merge_partials", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_datatrove(corpus, sp1024, out, CONFIG, scale)
    damaged = work / "partials" / "00001.tokens"
    data = bytearray(damaged.read_bytes())
    data[1000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    kept = (work / "logs" / "encode" / "stats" / "00002.json").stat().st_mtime_ns

    from pgolf_data import sharding

    commit, commits = sharding._ShardFile.commit, []

    def interrupted_commit(self):
        commits.append(self.path.name)
        if len(commits) == 5:
            raise KeyboardInterrupt
        return commit(self)

    messages: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(sharding._ShardFile, "commit", interrupted_commit)
        with pytest.raises(KeyboardInterrupt):
            run_datatrove(corpus, sp1024, out, CONFIG, scale, mode="resume", log=messages.append)
    assert any("encode task 1: 00001.tokens: sha256 differs from its record" in m for m in messages), messages
    assert (out / "resume.json").exists(), "the merge was interrupted after some shards"
    run_datatrove(corpus, sp1024, out, CONFIG, scale, mode="resume")
    assert (work / "logs" / "encode" / "stats" / "00002.json").stat().st_mtime_ns == kept
    assert files(out) == reference(corpus_file, sp1024, tmp_path / "ref")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_the_merge_reads_no_partial_that_differs_from_its_record(tmp_path, monkeypatch, corpus_file, sp1024):
    """A partial damaged after its task finished stops the merge before it is read; --resume redoes the task."""
    from pgolf_data.scale import steps

    corpus, out = open_corpus(corpus_file), tmp_path / "dt"
    check_records = steps.check_records

    def damage_then_check(partials, *args):
        path = partials / "00002.text"
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))
        return check_records(partials, *args)

    with monkeypatch.context() as m:
        m.setattr(steps, "check_records", damage_then_check)
        with pytest.raises(ValueError, match=r"task 2: 00002\.text: sha256 differs from its record.*--resume"):
            run_datatrove(corpus, sp1024, out, CONFIG, ScaleConfig(tasks=3, workers=1))
    assert not (out / "manifest.json").exists()
    assert (out / "resume.json").exists(), "the shards from tasks 0 and 1 were written"
    run_datatrove(corpus, sp1024, out, CONFIG, ScaleConfig(tasks=3, workers=1), mode="resume")
    assert files(out) == reference(corpus_file, sp1024, tmp_path / "ref")


def test_resume_refuses_other_settings_or_a_changed_corpus(tmp_path, monkeypatch, corpus_file, bytes260):
    corpus, out = open_corpus(corpus_file), tmp_path / "dt"
    with monkeypatch.context() as m:
        m.setattr("pgolf_data.scale.steps.merge_partials", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_datatrove(corpus, bytes260, out, CONFIG, ScaleConfig(tasks=2, workers=1))
    with pytest.raises(FileExistsError, match="--resume to continue it or --force"):
        run_datatrove(corpus, bytes260, out, CONFIG, ScaleConfig(tasks=2, workers=1))
    with pytest.raises(ValueError, match="tasks: was 2, now 3"):
        run_datatrove(corpus, bytes260, out, CONFIG, ScaleConfig(tasks=3, workers=1), mode="resume")
    with corpus_file.open("a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    with pytest.raises(ValueError, match="corpus files changed"):
        run_datatrove(open_corpus(corpus_file), bytes260, out, CONFIG, ScaleConfig(tasks=2, workers=1), mode="resume")
    manifest = run_datatrove(open_corpus(corpus_file), bytes260, out, CONFIG, ScaleConfig(tasks=2), mode="force")
    assert manifest.corpus["docs"] == len(list(open_corpus(corpus_file)))
    with pytest.raises(FileExistsError, match="nothing to resume"):
        run_datatrove(open_corpus(corpus_file), bytes260, out, CONFIG, ScaleConfig(tasks=2), mode="resume")


def test_bad_input_gives_the_default_engines_error(tmp_path, corpus_file, bytes260):
    lines = corpus_file.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[250] = '{"text": "unterminated\n'
    corpus_file.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(CorpusError) as default:
        write_shards(open_corpus(corpus_file), bytes260, tmp_path / "ref", CONFIG)
    with pytest.raises(CorpusError) as scaled:
        run_datatrove(open_corpus(corpus_file), bytes260, tmp_path / "dt", CONFIG, ScaleConfig(tasks=4, workers=2))
    assert str(scaled.value) == str(default.value)
    assert f"{corpus_file}:251:" in str(scaled.value)
    assert not (tmp_path / "dt" / "manifest.json").exists()

    class Wide(ByteTokenizer):
        vocab_size = 70_000

    with pytest.raises(ValueError, match="70000 ids, more than the 65536"):
        run_datatrove(
            open_corpus(corpus_file), Wide(TokenizerSpec("w", "bytes", 260)), tmp_path / "w", CONFIG, ScaleConfig()
        )
    assert not (tmp_path / "w").exists() and not (tmp_path / "w.work").exists()


# --- Slurm: the submission scripts, then the pickled pipelines run as Slurm would run them -----------------------


def test_slurm_submits_three_dependent_job_arrays_that_write_the_same_bytes(tmp_path, monkeypatch, corpus_file, sp1024):
    import datatrove.executor.slurm as slurm

    submitted: list[tuple[str, tuple[str, ...]]] = []

    def sbatch(script: str, job_id_retriever, *args: str) -> str:
        submitted.append((script, args))
        return str(100 + len(submitted))

    monkeypatch.setattr(slurm, "launch_slurm_job", sbatch)
    out, work = tmp_path / "dt", tmp_path / "dt.work"
    options = SlurmOptions(
        partition="cpu", time="2:00:00", cpus_per_task=2, env_command="source /opt/venv/bin/activate"
    )
    scale = ScaleConfig(tasks=3, executor="slurm", workers=2, slurm=options)
    assert run_datatrove(open_corpus(corpus_file), sp1024, out, CONFIG, scale) is None

    stages = [(s, a) for s, a in submitted if "launch_pickled_pipeline" in s]
    assert len(stages) == 3, [s for s, _ in submitted]
    for (script, _args), stage, array in zip(stages, ["count", "encode", "merge"], ["0-2%2", "0-2%2", "0-0%2"]):
        sbatch_lines = {line for line in script.splitlines() if line.startswith("#SBATCH")}
        for expected in ("--partition=cpu", "--time=2:00:00", "--cpus-per-task=2", f"--array={array}"):
            assert f"#SBATCH {expected}" in sbatch_lines, (stage, sorted(sbatch_lines))
        assert f"#SBATCH --job-name=pgolf-shard-{stage}" in sbatch_lines
        assert "source /opt/venv/bin/activate" in script
        assert f"launch_pickled_pipeline {work / 'logs' / stage / 'executor.pik'}" in script
    dependencies = [next((a for a in args if a.startswith("--dependency")), None) for _, args in stages]
    ids = [str(101 + submitted.index(stage)) for stage in stages]
    assert dependencies == [None, f"--dependency=afterok:{ids[0]}", f"--dependency=afterok:{ids[1]}"]

    # Each array task as Slurm starts it: SLURM_ARRAY_TASK_ID set, then datatrove's launcher on the pickled executor.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NODELIST": "localhost"}
    for stage, tasks in (("count", 3), ("encode", 3), ("merge", 1)):
        for rank in range(tasks):
            launch = [
                sys.executable,
                "-m",
                "datatrove.tools.launch_pickled_pipeline",
                str(work / "logs" / stage / "executor.pik"),
            ]
            run = subprocess.run(launch, env={**env, "SLURM_ARRAY_TASK_ID": str(rank)}, capture_output=True, text=True)
            assert run.returncode == 0, run.stderr[-3000:]
    assert files(out) == reference(corpus_file, sp1024, tmp_path / "ref")


# --- Ray: a local single-node cluster ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:placement_group:DeprecationWarning")  # datatrove's call into Ray
def test_the_ray_executor_writes_the_same_bytes(tmp_path, corpus_file, sp1024):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        scale = ScaleConfig(tasks=3, executor="ray")
        manifest = run_datatrove(open_corpus(corpus_file), sp1024, tmp_path / "dt", CONFIG, scale)
    finally:
        ray.shutdown()
    assert isinstance(manifest, Manifest)
    assert files(tmp_path / "dt") == reference(corpus_file, sp1024, tmp_path / "ref")


def test_the_work_directory_defaults_beside_the_output(tmp_path):
    assert job.default_work_dir(tmp_path / "shards") == tmp_path / "shards.work"
