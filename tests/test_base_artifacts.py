"""Artifacts written by commit 8575f8a (``tests/fixtures/base-8575f8a``) still load and score as they did then, and
the same config still trains to the same weights: the restructuring of issue 12 changed no behaviour. (Since the
initial weights are drawn in the baseline's order, issue 13, training starts from other weights: expected.json's
``since_init_order``.) And against commit cb2b357 (``tests/fixtures/base-cb2b357``): with the GPT behind the model
interface of issue 18, the same config writes the same config, tokenizer and weights parts."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import pytest
import torch
from model_data import make_dataset, one_thread, synthetic_docs  # noqa: F401 (autouse fixture)

from pgolf_data.compress import compress
from pgolf_model import artifact, evaluate
from pgolf_model.config import Config
from pgolf_model.export import weights as export
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.quant import QuantizedState
from pgolf_model.runtime import Runtime
from pgolf_model.training.trainer import run

FIXTURES = Path(__file__).parent / "fixtures" / "base-8575f8a"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
BEFORE_INTERFACE = json.loads((FIXTURES.parent / "base-cb2b357" / "expected.json").read_text())

# The base's evaluate runs (expected.json's ``base_flags``) with this code's flag names.
RUNS = {
    "plain": {
        "own": [],
        "stride0": ["--stride", "0"],
        "full": [
            "--ttt", "full", "--eval.full.chunk_tokens", "512", "--eval.full.batch_seqs", "2",
            "--eval.full.epochs", "1", "--eval.full.lr", "0.01",
        ],
        "phased": [
            "--ttt", "phased", "--eval.lora.chunk_tokens", "8", "--eval.lora.batch_docs", "3", "--eval.lora.rank", "4",
            "--eval.lora.targets", "k,o", "--eval.phased.prefix_docs", "6", "--eval.phased.phases", "2",
            "--eval.phased.chunk_tokens", "256", "--eval.phased.batch_seqs", "2", "--eval.phased.lr", "0.01",
        ],
        "host": ["--host-code"],
    },
    "stack": {"own": [], "stride8": ["--ttt", "none", "--stride", "8"]},
}  # fmt: skip
CASES = [(name, run_name) for name, runs in RUNS.items() for run_name in runs]
# Per-document TTT changed on purpose after the base (issue 16): documents sorted by length within rounds, adapters
# per virtual layer and started from rows keyed by document; these runs score (val_bpb, val_loss) as that code does.
TTT_CHANGED = {
    ("plain", "phased"): (4.438179099889482, 3.0568297958675994),  # base: 4.436690693773924, 3.0558046447729748
    ("stack", "own"): (4.355955544266892, 3.0001976931307874),  # base: 4.355269170774034, 2.9997249481385646
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("base"), synthetic_docs(300, 1), synthetic_docs(12, 2))


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """``{name: (run directory, summary)}``: each fixture config trained by this code."""
    data, tok = dataset
    out = {}
    for name in ("plain", "stack"):
        run_dir = tmp_path_factory.mktemp(name)
        out[name] = run_dir, run(config(name), data=data, tokenizer=tok, out_dir=run_dir, progress=False)
    return out


# The fixtures' overrides (expected.json) with this code's names: tuples for lists, nested TTT settings.
OVERRIDES = {
    "plain": EXPECTED["artifacts"]["plain"]["overrides"],
    "stack": {
        **{k: v for k, v in EXPECTED["artifacts"]["stack"]["overrides"].items() if k.startswith("model.")},
        "model.ve_layers": (1,),
        "eval.ttt": "lora",
        "eval.lora.targets": ("q", "v", "mlp"),
        "eval.lora.rank": 4,
        "eval.lora.chunk_tokens": 8,
        "eval.lora.batch_docs": 3,
    },
}


def config(name: str) -> Config:
    return preset(EXPECTED["preset"]).override({**EXPECTED["common"], **OVERRIDES[name]})


def part_sha256(path: Path) -> dict[str, str]:
    parts, _ = artifact.parse_parts(path.read_bytes(), str(path))
    return {name: hashlib.sha256(stored).hexdigest() for name, (_, stored) in parts.items()}


# The base's training runs of each config: on the CPU that wrote the fixture, then on each other CPU where the base's
# own code was run (``other_machines``; base-cb2b357/README.md): float32 sums round differently across CPUs, so
# the same code trains to other bits there. A run of this code must be one of them, bit for bit.
BASE_RUNS = [BEFORE_INTERFACE["artifacts"], *(m["artifacts"] for m in BEFORE_INTERFACE["other_machines"])]
NUMBERS = ("steps", "val_bpb", "artifact_val_bpb")


def as_a_base_run(name: str, parts: dict[str, str], summary: dict) -> None:
    """Assert that ``parts`` (sha256 by part name) and ``summary``'s numbers are one base run's of ``name``."""
    got = {"part_sha256": {p: parts[p] for p in parts}, "summary": {k: summary[k] for k in NUMBERS}}
    runs = [{"part_sha256": {p: r[name]["part_sha256"][p] for p in parts}, "summary": {k: r[name]["summary"][k]
            for k in NUMBERS}} for r in BASE_RUNS]  # fmt: skip
    assert got in runs


@pytest.mark.parametrize(("name", "run_name"), CASES)
def test_old_artifacts_score_as_at_base(dataset, capsys, name, run_name):
    want = dict(EXPECTED["artifacts"][name]["evaluate"][run_name])
    if (name, run_name) in TTT_CHANGED:
        want["val_bpb"], want["val_loss"] = TTT_CHANGED[name, run_name]
    path = FIXTURES / f"{name}.pga"
    flags = RUNS[name][run_name]
    trust = [] if "--host-code" in flags else ["--trust-artifact-code"]  # their code is the base's, not this pgolf's
    assert evaluate.main([str(path), "--data", str(dataset[0]), "--json", *flags, *trust]) == 0
    captured = capsys.readouterr()
    assert "a version-1 artifact without part hashes: its integrity is unverified" in captured.err
    got = json.loads(captured.out)
    assert (got["val_tokens"], got["val_bytes"], got["ttt"], got["stride"]) == tuple(
        want[k] for k in ("val_tokens", "val_bytes", "ttt", "stride")
    )
    # Bit-identical on the machine that wrote the fixture; other CPUs may round float32 sums differently.
    assert got["val_bpb"] == pytest.approx(want["val_bpb"], rel=1e-6)
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-6)


def test_old_configs_read_as_this_codes_config():
    for name in RUNS:
        art = artifact.read(FIXTURES / f"{name}.pga")
        assert Config.from_dict(art.config) == config(name)


def test_the_same_config_trains_to_the_same_weights(trained):
    """As the base trained, but from the initial weights drawn in the baseline's order (``since_init_order``)."""
    run_dir, summary = trained["plain"]
    want = EXPECTED["since_init_order"]["plain"]
    got = part_sha256(run_dir / "model.pga")
    assert got["tokenizer"] == EXPECTED["artifacts"]["plain"]["part_sha256"]["tokenizer"]
    # The writer's CPU trained to since_init_order's weights, which cb2b357's runs repeat (on every CPU recorded).
    assert want["weights_sha256"] == BASE_RUNS[0]["plain"]["part_sha256"]["weights"]
    as_a_base_run("plain", {"weights": got["weights"]}, summary)
    assert {k: summary[k] for k in ("val_targets", "val_bytes")} == {
        k: want["summary"][k] for k in ("val_targets", "val_bytes")
    }


def test_a_seeded_model_exports_the_same_weights():
    cfg = config("plain").override({"quant.method": "rtn"})
    torch.manual_seed(cfg.train.seed)
    out = export.export_weights(GPT(cfg.model), cfg, runtime=Runtime(torch.device("cpu")))
    assert out.compressed[0] == EXPECTED["init_export"]["codec_id"]
    assert hashlib.sha256(out.compressed[1]).hexdigest() == EXPECTED["since_init_order"]["init_export_weights_sha256"]


def test_an_old_config_file_reads_as_the_same_config():
    old = json.loads((FIXTURES / "record-1.11-config.json").read_text())
    # The file predates the preset's orthogonal init (model.ortho_init) and bf16 tables (model.embed_bf16), so it keeps
    # the uniform init and fp32 tables it trained with.
    want = preset("record-1.11").override(
        {
            "eval.lora.targets": ("q", "k", "mlp"),
            "eval.phased.lr": 0.002,
            "eval.full.epochs": 2,
            "model.ortho_init": False,
            "model.embed_bf16": False,
        }
    )
    assert Config.from_dict(old) == want


def test_host_code_refuses_an_old_artifacts_renamed_weights_in_one_line(dataset, capsys):
    """SmearGate, BigramHash, value embeddings and lanes are modules now, with renamed tensors: with host code an old
    artifact's config still reads, and its weights are refused with the way out (its own code)."""
    art = artifact.read(FIXTURES / "stack.pga")
    with pytest.raises(artifact.ArtifactError, match=r"do not fit the model built by this pgolf_model: .*'bigram\.emb"):
        artifact.build_model(art, code="host")
    assert evaluate.main([str(FIXTURES / "stack.pga"), "--data", str(dataset[0]), "--host-code"]) == 2
    assert "an older artifact needs its own code: --trust-artifact-code" in capsys.readouterr().err


# The state-dict renames of the composition refactor (old name -> new name); the old packed SmearGate tensor held
# the 12 gate weights, then lambda.
RENAMED = {
    "bigram_emb.weight": "bigram.emb.weight",
    "bigram_proj.weight": "bigram.proj.weight",
    "bigram_scale": "bigram.scale",
    "ve_emb.weight": "value_embeds.emb.weight",
    "ve_proj.weight": "value_embeds.proj.weight",
    "ve_scale": "value_embeds.scale",
    "ve_layer_scales": "value_embeds.layer_scales",
    "blocks.1.lane_decay": "blocks.1.lanes.decay",
    "blocks.1.lane_mix": "blocks.1.lanes.mix",
}


def test_the_renamed_parts_train_to_the_same_values(trained):
    """The old artifact's parts, renamed, are the tensors this code trains (names and shapes); the values are the
    ones recorded since the initial weights are drawn in the baseline's order (``since_init_order``)."""
    run_dir, summary = trained["stack"]
    new = QuantizedState.from_bytes(artifact.read(run_dir / "model.pga").weights).dequantize()
    old = QuantizedState.from_bytes(artifact.read(FIXTURES / "stack.pga").weights).dequantize()
    smear = old.pop("smear")
    old = {RENAMED.get(name, name): t for name, t in old.items()} | {"smear.weight": smear[:12], "smear.lam": smear[12]}
    assert {name: t.shape for name, t in old.items()} == {name: t.shape for name, t in new.items()}
    assert EXPECTED["since_init_order"]["stack"]["weights_sha256"] == BASE_RUNS[0]["stack"]["part_sha256"]["weights"]
    as_a_base_run("stack", {"weights": part_sha256(run_dir / "model.pga")["weights"]}, summary)


# Config fields added since cb2b357, at their defaults (off): with them taken out, the config part is the base's.
ADDED_SINCE_CB2B357 = {
    "model": {"doc_masked": False, "xsa_last": 0, "xsa_layers": [], "attn_layers": [], "lane0_skip": False,
              "skip_gates": False, "ortho_init": False, "asym_softcap": False},
    "quant": {"sdclip_correction": 0, "gate_int8": False, "calib_source": "self", "awq_groups": 0,
              "awq_group_size": 64, "awq_bits": 8},
    "train": {"calib_reserve_s": 0.0, "seq_stages": [], "seq_stage_ends": [], "seq_rewarm_steps": 0, "clock_every": 10},
    "eval": {"tilt": {"boost": 0.0, "order": 16, "threshold": 0.8}},
    "eval.lora": {"short_until": [], "short_chunks": []},
}  # fmt: skip


def config_part_sha256_at_base(path: Path) -> str:
    """The sha256 of the artifact's config part as the base wrote it: without the fields added since, each of which
    must hold its default."""
    config = artifact.read(path).config
    for section, fields in ADDED_SINCE_CB2B357.items():
        part = functools.reduce(dict.__getitem__, section.split("."), config)  # "eval.lora": config["eval"]["lora"]
        assert {k: part.pop(k) for k in fields} == fields
    stored = compress(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())[1]
    return hashlib.sha256(stored).hexdigest()


@pytest.mark.parametrize("name", ["plain", "stack"])
def test_the_gpt_behind_the_interface_writes_the_same_artifact_but_its_code(trained, name):
    run_dir, summary = trained[name]
    got = part_sha256(run_dir / "model.pga") | {"config": config_part_sha256_at_base(run_dir / "model.pga")}
    as_a_base_run(name, {part: got[part] for part in ("config", "tokenizer", "weights")}, summary)
    assert "arch" not in artifact.read(run_dir / "model.pga").config["model"]  # a GPT's config names no family
