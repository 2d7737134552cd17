"""Model families: the registry (built-ins, entry points, the interface check), the per-family config section and
its flags, and a throw-away plugin package, registered by entry-point metadata on the path, trained, quantized,
scored and refused or trusted through the normal commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from model_data import jsonl_corpus, make_dataset, one_thread  # noqa: F401 (autouse fixture)

from pgolf_model import artifact, registry
from pgolf_model import train as train_cli
from pgolf_model.cli import add_config_arguments, command_parser, config_from_args
from pgolf_model.config import Config, ConfigError, ModelConfig
from pgolf_model.presets import preset
from pgolf_model.ssd import SSDConfig

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A throw-away pgolf model family: each position mixes its last ``window`` token embeddings, then an MLP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pgolf_model.quant import TensorRole


@dataclass(frozen=True)
class TinyConfig:
    arch: ClassVar[str] = "tinylm"
    vocab_size: int = field(default=256, metadata={"help": "token ids"})
    dim: int = field(default=32, metadata={"help": "embedding width"})
    window: int = field(default=3, metadata={"help": "how many tokens each position mixes"})

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window = {self.window}: must be >= 1")


class TinyLM(nn.Module):
    Config = TinyConfig
    counted_modules = ("tinyplug", "tinyplug.model")

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.mix = nn.Parameter(torch.full((cfg.window,), 1.0 / cfg.window))
        self.fc = nn.Linear(cfg.dim, 4 * cfg.dim, bias=False)
        self.out = nn.Linear(4 * cfg.dim, cfg.dim, bias=False)

    def logits(self, idx):
        e = self.emb(idx)
        x = sum(self.mix[j] * F.pad(e, (0, 0, j, 0))[:, : idx.size(1)] for j in range(self.cfg.window))
        return (x + self.out(F.relu(self.fc(x)))) @ self.emb.weight.T

    def forward(self, idx, targets, reduction="mean"):
        loss = F.cross_entropy(self.logits(idx).flatten(0, 1), targets.flatten(), reduction=reduction)
        return loss if reduction != "none" else loss.view_as(targets)

    def param_groups(self):
        matrices = [("fc.weight", self.fc.weight), ("out.weight", self.out.weight)]
        return {"matrix": matrices, "embed": [("emb.weight", self.emb.weight)], "scalar": [("mix", self.mix)]}

    def tensor_roles(self):
        return {
            "emb.weight": TensorRole("embed", "emb.weight", vocab=True),
            "fc.weight": TensorRole("mlp", "fc.weight", 0),
            "out.weight": TensorRole("mlp", "out.weight", 0),
        }

    @staticmethod
    def size_step(cfg, shrink):
        return ("dim", 8) if shrink == "width" else ("window", 1)
'''


def install(root: Path, package: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """A package's files and a ``*.dist-info`` with its ``pgolf.models`` entry points under ``root`` (a path entry):
    what ``pip install`` would leave, for ``importlib.metadata`` to find."""
    for name, source in modules.items():
        path = root / package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = root / f"{package}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{artifact.MODEL_GROUP}]\n{lines}")
    return root


# --- the registry and the config section ----------------------------------------------------------------------------


def test_builtins_and_unknown_families():
    assert registry.names()[:2] == ["gpt", "ssd"]
    assert registry.model_class("gpt").Config is ModelConfig and registry.model_class("ssd").Config is SSDConfig
    with pytest.raises(ConfigError, match=r"model.arch = 'nope': no such model family is installed \(known: gpt, ssd"):
        registry.model_class("nope")


def test_a_family_is_checked_against_the_interface(tmp_path, monkeypatch):
    bad = """
        from dataclasses import dataclass
        from typing import ClassVar

        @dataclass
        class NoVocab:
            arch: ClassVar[str] = "novocab"
            dim: int = 3

        class Incomplete:
            pass

        class Misnamed:
            Config = NoVocab
            counted_modules = ()
            forward = logits = param_groups = tensor_roles = None

        class WithoutVocab(Misnamed):
            pass
    """
    entries = {"incomplete": "badplug.model:Incomplete", "misnamed": "badplug.model:Misnamed",
               "novocab": "badplug.model:WithoutVocab", "broken": "badplug.model:Missing"}  # fmt: skip
    monkeypatch.syspath_prepend(str(install(tmp_path, "badplug", {"__init__.py": "", "model.py": bad}, entries)))
    registry.model_class.cache_clear()
    try:
        assert registry.names() == ["gpt", "ssd", "broken", "incomplete", "misnamed", "novocab"]
        cases = {
            "incomplete": "badplug.model:Incomplete lacks Config, counted_modules, forward, logits, param_groups",
            "misnamed": "badplug.model:Misnamed.Config must be a dataclass whose arch is 'misnamed'",
            "novocab": "badplug.model:WithoutVocab.Config has no vocab_size field",
            "broken": "its entry point badplug.model:Missing does not load",
        }
        for name, message in cases.items():
            with pytest.raises(ConfigError, match=message):
                registry.model_class(name)
    finally:
        registry.model_class.cache_clear()


def test_the_model_section_is_the_familys_and_only_other_families_name_it():
    gpt = preset("tiny")
    ssd = registry.with_arch(gpt.override({"model.vocab_size": 777, "model.bos_id": 5}), "ssd")
    assert isinstance(ssd.model, SSDConfig) and ssd.arch == "ssd"
    assert (ssd.model.vocab_size, ssd.model.bos_id) == (777, 5)  # the tokenizer's ids are kept
    assert (ssd.model.num_layers, ssd.model.model_dim, ssd.model.state_dim) == (4, 128, 32)  # its tiny size
    assert ssd.optim == gpt.optim and ssd.train == gpt.train and ssd.quant == gpt.quant
    assert "arch" not in gpt.to_dict()["model"] and ssd.to_dict()["model"]["arch"] == "ssd"
    assert registry.config_from_dict(ssd.to_dict()) == ssd and Config.from_dict(gpt.to_dict()) == gpt
    with pytest.raises(ConfigError, match=r"config: model.arch = 'ssd': no config class for it was given"):
        Config.from_dict(ssd.to_dict())
    with pytest.raises(ConfigError, match=r"config: unknown field\(s\) model.xsa"):
        registry.config_from_dict({**ssd.to_dict(), "model": {**ssd.to_dict()["model"], "xsa": True}})
    with pytest.raises(ConfigError, match=r"model\.state_dim = 0: must be a positive integer"):
        ssd.override({"model.state_dim": 0})


def test_flags_are_the_chosen_familys(capsys):
    parser = command_parser("x", "doc")
    add_config_arguments(parser, "ssd")
    args = parser.parse_args(
        ["--preset", "smoke", "--model.arch", "ssd", "--model.state_dim", "8", "--model.reset_at_bos", "false"]
    )
    cfg, given = config_from_args(args)
    assert cfg.arch == "ssd" and (cfg.model.state_dim, cfg.model.reset_at_bos, cfg.model.num_layers) == (8, False, 2)
    assert given == {"model.state_dim": 8, "model.reset_at_bos": False}
    with pytest.raises(SystemExit):
        train_cli.main(["--model.arch", "ssd", "--help"])
    out = capsys.readouterr().out
    assert "--model.state_dim" in out and "model settings (model.arch ssd)" in out and "--model.xsa" not in out
    assert "pgolf.models" in out  # how to register a family
    with pytest.raises(SystemExit):
        train_cli.main(["--model.arch", "nope", "--data", "d", "--tokenizer", "t"])
    assert "no such model family is installed" in capsys.readouterr().err


# --- a plugin, through the commands ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    modules = {"__init__.py": '"""A throw-away model plugin."""\n', "model.py": PLUGIN}
    return install(tmp_path_factory.mktemp("site"), "tinyplug", modules, {"tinylm": "tinyplug.model:TinyLM"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, dev_sample):
    return make_dataset(tmp_path_factory.mktemp("ds"), dev_sample[100:400], dev_sample[:20])


def command(module: str, *argv: str, path: list[Path]) -> subprocess.CompletedProcess:
    """``python -m module argv`` with ``path`` (and the repository) as PYTHONPATH."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(map(str, [*path, REPO]))}
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(plugin, dataset, tmp_path_factory):
    data, tok = dataset
    out = tmp_path_factory.mktemp("run")
    flags = ["--preset", "smoke", "--model.arch", "tinylm", "--model.dim", "24", "--train.iterations", "20",
             "--quant.method", "gptq", "--quant.calib_seqs", "4", "--quant.calib_seq_len", "16"]  # fmt: skip
    proc = command("pgolf_model.train", "--data", str(data), "--tokenizer", str(tok), "--out", str(out),
                   "--no-progress", *flags, path=[plugin])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text())


def test_a_plugin_trains_and_its_artifact_carries_its_code(trained, plugin):
    out, summary = trained
    art = artifact.read(out / "model.pga")
    assert art.config["model"] == {"arch": "tinylm", "vocab_size": 260, "dim": 24, "window": 3}
    assert art.code["tinyplug/model.py"] == (plugin / "tinyplug" / "model.py").read_bytes()
    assert art.code[artifact.ENTRY_FILE] == b"[pgolf.models]\ntinylm = tinyplug.model:TinyLM\n"
    assert "pgolf_model/model.py" not in art.code and "pgolf_model/config.py" in art.code
    assert summary["steps"] == 20 and summary["artifact_val_bpb"] < 7.0  # below the uniform 8.02 bits per byte


def test_a_plugin_scores_from_its_artifact_installed_or_trusted(trained, plugin, dataset):
    out, summary = trained
    score = ["pgolf_model.evaluate", str(out / "model.pga"), "--data", str(dataset[0]), "--json"]
    installed = command(*score, path=[plugin])
    assert installed.returncode == 0, installed.stderr
    assert json.loads(installed.stdout)["val_bpb"] == summary["artifact_val_bpb"]
    refused = command(*score, path=[])
    assert refused.returncode == 2 and refused.stdout == ""
    assert "model.arch 'tinylm' is not installed here (installed: gpt, ssd)" in refused.stderr
    assert "--trust-artifact-code" in refused.stderr
    trusted = command(*score, "--trust-artifact-code", path=[])
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["val_bpb"] == summary["artifact_val_bpb"]
    no_lora = command(*score, "--ttt", "lora", path=[plugin])
    assert no_lora.returncode == 2 and "TinyLM has no LoRA TTT hooks (lora_sites)" in no_lora.stderr


def test_a_plugin_artifact_with_other_code_than_the_installed_plugin_is_refused(trained, plugin, dataset, tmp_path):
    out, summary = trained
    art = artifact.read(out / "model.pga")
    code = {**art.code, "tinyplug/model.py": art.code["tinyplug/model.py"] + b"\nraise SystemExit('it ran')\n"}
    other = artifact.write(tmp_path / "other.pga", artifact.build(art.config, art.tokenizer_bytes, art.weights, code))
    score = ["pgolf_model.evaluate", str(other), "--data", str(dataset[0]), "--json"]
    refused = command(*score, path=[plugin])
    assert refused.returncode == 2 and refused.stdout == ""
    assert "its model code differs from this pgolf's (tinyplug/model.py)" in refused.stderr
    host = command(*score, "--host-code", path=[plugin])  # the installed plugin, whatever the artifact carries
    assert host.returncode == 0, host.stderr
    assert json.loads(host.stdout)["val_bpb"] == summary["artifact_val_bpb"]


def test_a_plugins_budget_estimate_and_help(plugin, dataset):
    estimate = command("pgolf_model.budget", "--preset", "smoke", "--model.arch", "tinylm", "--model.window", "2",
                       "--tokenizer", str(dataset[1]), path=[plugin])  # fmt: skip
    assert estimate.returncode == 0, estimate.stderr
    assert "estimate for preset smoke" in estimate.stdout and "fits" in estimate.stdout
    assert "pgolf_model.submit writes no train_gpt.py for 'tinylm', a plugin's family" in estimate.stdout
    helped = command("pgolf_model.train", "--model.arch", "tinylm", "--help", path=[plugin])
    assert "--model.window" in helped.stdout and "how many tokens each position mixes" in helped.stdout


@pytest.mark.slow
def test_a_plugin_runs_in_the_ab_and_the_ablation(plugin, tmp_path, dev_docs):
    corpus = jsonl_corpus(tmp_path / "docs.jsonl", dev_docs[:120])
    common = ["--corpus", str(corpus), "--preset", "smoke", "--model.arch", "tinylm", "--threads", "1"]
    ab = command("pipelines.tokenizer_ab", "--specs", "bytes260", "sp1024", "--seeds", "1", "--budget-value", "6",
                 "--val-docs", "10", "--out", str(tmp_path / "ab"), *common, path=[plugin])  # fmt: skip
    assert ab.returncode == 0, ab.stderr[-3000:]
    results = json.loads((tmp_path / "ab" / "results.json").read_text())
    assert results["settings"]["arch"] == "tinylm"
    (comparison,) = results["comparisons"]  # one seed each: a verdict, no t-test
    assert (comparison["reference"], comparison["candidate"]) == ("bytes260", "sp1024") and comparison["verdict"]
    assert all(s["runs"][0]["config"]["model"]["arch"] == "tinylm" for s in results["specs"])
    ablation = command("pipelines.ablate", "--spec", "bytes260", "--only", "gptq", "ema", "--steps", "6",
                       "--val-docs", "10", "--out", str(tmp_path / "abl"), *common, path=[plugin])  # fmt: skip
    assert ablation.returncode == 0, ablation.stderr[-3000:]
    rows = json.loads((tmp_path / "abl" / "ablation.json").read_text())["rows"]
    assert [r["switch"] for r in rows] == ["all on", "ema", "gptq"]
