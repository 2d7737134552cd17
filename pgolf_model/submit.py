"""Turn pgolf runs into a records folder the challenge accepts, or check any records folder before submitting it.

    python -m pgolf_model.submit RUN_DIR... --name NAME --author A --github-id G --out DIR [--compare-to X]
    python -m pgolf_model.submit --check DIR [--data SHARDS [--val-text CORPUS]] [--artifact RUN/model.pga]
                                 [--compare-to X]

The first form writes, from one run per seed, ``submission.json``, ``README.md``, ``train_seed<N>.log``,
``requirements.txt``, ``tokenizers/<the run's tokenizer>`` and ``train_gpt.py``: one file that trains the same
config with ``torchrun --standalone --nproc_per_node=8 train_gpt.py`` and the official environment variables, with no
pgolf installed. X is a BPB or a previous record's ``submission.json`` (or its folder). A run of plain
``python -m pgolf_model.train`` holds only the trainer's round trip of its artifact; when its eval config asks for
sliding windows or TTT, the artifact is scored that way first (on ``--data``, the shard folder it trained on) and
the result kept in the run's ``eval.json``, so the folder reports the final numbers.

``--check`` prints one line per rule (PASS, FAIL, or CANNOT where the folder's files cannot tell), naming the file
and the value: bytes, clocks, seeds and significance (both rules), the val token count, validation documents in the
training shards, whole or lightly edited, and the byte accounting (with ``--data``; with ``--val-text`` also against
the original documents, and their decode-and-compare, for lossy tokenizers too), and issue #1017's C1-C4 measured on
the artifact (with ``--artifact``, or a ``*.pga`` in DIR). It exits 1 when a rule fails. The work is
``pgolf_model.submission``.
"""

from __future__ import annotations

import sys

from . import runtime
from .cli import command_parser, guarded
from .submission.runs import RunError


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.submit", __doc__)
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="pgolf run directories, one per seed")
    parser.add_argument("--name", help="the submission's name (also the folder's, after the date)")
    parser.add_argument("--author", help="your name as the records print it")
    parser.add_argument("--github-id", help="your GitHub user name")
    parser.add_argument("--blurb", default="", help="one paragraph on what the submission does (default: generated)")
    parser.add_argument("--out", help="the records folder to write")
    parser.add_argument("--compare-to", help="a BPB, or a previous record's submission.json or folder")
    parser.add_argument("--check", metavar="DIR", help="check a records folder instead of writing one")
    parser.add_argument(
        "--data",
        help="with --check: the shard folder the submission trains and scores on; when writing: the shard folder to "
        "score runs of pgolf_model.train whose eval config asks for sliding windows or TTT (their own shard folder)",
    )
    parser.add_argument(
        "--val-text",
        metavar="CORPUS",
        help="with --check and --data: the corpus the shards were made from (its first documents are the val split), "
        "for the byte accounting and decode-and-compare of a lossy tokenizer (sp1024) and of any other",
    )
    parser.add_argument("--artifact", action="append", default=[], help="with --check: a pgolf artifact (repeatable)")
    parser.add_argument(
        "--device", default="cpu", help="where the legality checks (--check) or the runs' final evals run (cpu, cuda)"
    )
    args = parser.parse_args(argv)
    if args.check:
        if args.runs:
            parser.error("--check takes a folder, not run directories")
        return guarded(lambda: check(args), (ValueError, FileNotFoundError))
    missing = [f"--{k.replace('_', '-')}" for k in ("name", "author", "github_id", "out") if not getattr(args, k)]
    if not args.runs or missing:
        parser.error(f"writing a records folder needs RUN_DIR... and {', '.join(missing) or 'nothing else'}")
    return guarded(lambda: submit(args), (RunError, ValueError, FileNotFoundError))


def submit(args) -> int:
    from .submission.final import score_run
    from .submission.folder import Identity, Reference, write_folder
    from .submission.runs import load_run

    rt = runtime.setup(args.device)
    runs = [score_run(load_run(d), args.data, rt) for d in args.runs]
    ref = Reference.parse(args.compare_to) if args.compare_to else None
    out = write_folder(runs, Identity(args.name, args.author, args.github_id, args.blurb), args.out, ref)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


def check(args) -> int:
    from .submission.check import check_folder

    rt = runtime.setup(args.device)
    report = check_folder(
        args.check, data=args.data, artifacts=args.artifact, compare_to=args.compare_to, val_text=args.val_text, rt=rt
    )
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
