"""Calibration on every rank: two gloo processes under torchrun each generate their share of the self-generated
sequences and collect the Hessians on it; the all-gathered tokens are one process's (generating the same batches,
each from its own generator) exactly and the all-reduced Hessians one process's to float summation order. (Run as a
script, this file is the torchrun worker.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# (num_seqs, batch_size): three batches split 2 + 1 over the ranks; a single batch, which leaves rank 1 no rows.
CASES = [(5, 2), (2, 2)]
SEQ_LEN, SEED = 12, 7


def model():
    from test_gpt_decode import RECORD, build  # a small GPT with the record's switches, decoded with its KV cache

    return build(RECORD)


def worker(out: Path) -> None:
    from pgolf_model import runtime
    from pgolf_model.export import calibration

    torch.set_num_threads(1)
    rt = runtime.setup("cpu")
    net = model()
    for num_seqs, batch in CASES:
        tokens, share = calibration.generate_shared(net, num_seqs, SEQ_LEN, batch_size=batch, seed=SEED, runtime=rt)
        H = calibration.collect_hessians(net, share, batch_size=batch, runtime=rt, reduce=True)
        torch.save({"tokens": tokens, "share": share, "hessians": H}, out / f"{num_seqs}x{batch}-rank{rt.rank}.pt")
    runtime.teardown()


def test_two_ranks_calibrate_as_one_process(tmp_path):
    from pgolf_model.export import calibration

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547"]
    proc = subprocess.run(
        [*argv, __file__, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    net = model()
    for num_seqs, batch in CASES:
        # Under torchrun every batch has its own generator: one process's run of all batches the same way.
        batches = list(range(-(-num_seqs // batch)))
        want = calibration.generate(net, num_seqs, SEQ_LEN, batch_size=batch, seed=SEED, batches=batches)
        want_h = calibration.collect_hessians(net, want, batch_size=batch)
        ranks = [torch.load(tmp_path / f"{num_seqs}x{batch}-rank{r}.pt") for r in range(2)]
        for got in ranks:
            assert torch.equal(got["tokens"], want)
            assert got["hessians"].keys() == want_h.keys()
            for name, h in want_h.items():
                torch.testing.assert_close(got["hessians"][name], h, atol=1e-5, rtol=1e-5)
        # Each rank generated its own batches: rank 0 batches 0, 2, ...; rank 1 batch 1, ...
        for r, got in enumerate(ranks):
            rows = calibration.batch_rows(list(range(r, -(-num_seqs // batch), 2)), num_seqs, batch)
            assert torch.equal(got["share"], want[rows])
        if num_seqs > batch:
            assert all(len(got["share"]) for got in ranks), "a rank did no generation"


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
