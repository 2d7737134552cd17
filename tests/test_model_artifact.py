"""The one-file artifact: round trip, its own counted code runs when trusted, the budget limit, corrupt files (a sha256
per part), the budget CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from model_data import byte_tokenizer, make_dataset, one_thread, synthetic_docs  # noqa: F401 (autouse fixture)

from pgolf_data.tokenizer.artifact import save as save_tokenizer
from pgolf_data.tokenizer.artifact import to_artifact
from pgolf_model import artifact, budget, evaluate
from pgolf_model.config import Config
from pgolf_model.export import estimate
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.quant import QuantizedState


@pytest.fixture(scope="module")
def built():
    cfg = preset("smoke").override({"model.vocab_size": 260})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    for p in model.parameters():
        p.data += 0.02 * torch.randn_like(p)
    tok_bytes = to_artifact(byte_tokenizer())
    weights = QuantizedState.quantize(model.state_dict(), cfg.quant).to_bytes()
    data = artifact.build(cfg.to_dict(), tok_bytes, weights, artifact.counted_code(), cfg.quant.codec)
    return cfg, model, tok_bytes, data


def test_round_trip(built, tmp_path):
    cfg, _, tok_bytes, data = built
    path = artifact.write(tmp_path / "m.pga", data)
    art = artifact.read(path)
    assert Config.from_dict(art.config) == cfg  # JSON: tuples come back as lists
    assert art.tokenizer_bytes == tok_bytes and art.tokenizer().vocab_size == 260
    assert art.code == artifact.counted_code()
    assert art.total_bytes == len(data) == path.stat().st_size
    assert set(art.sizes) == {*artifact.PARTS, "container"} and art.weights_codec == "zstd"


@pytest.mark.parametrize("codec", ["pergroup", "best"])
def test_the_per_group_codec_is_a_weights_codec(built, tmp_path, codec):
    cfg, _, tok_bytes, data = built
    weights = artifact.read(artifact.write(tmp_path / "z.pga", data)).weights
    roles = {f"blocks.{i}.mlp.fc.weight": ("mlp.fc.weight", i) for i in range(cfg.model.num_layers)}
    stored = artifact.compress_weights(weights, artifact.codec_for(codec), roles)
    written = artifact.build_compressed(cfg.to_dict(), tok_bytes, stored, {})
    art = artifact.read(artifact.write(tmp_path / "g.pga", written))
    assert art.weights == weights
    smallest = min(len(artifact.compress_weights(weights, (c,))[1]) for c in artifact.WEIGHT_CODECS)
    assert art.sizes["weights"] == len(stored[1]) == (smallest if codec == "best" else art.sizes["weights"])
    assert art.weights_codec == (codec if codec == "pergroup" else artifact.weights_codec_name(stored[0]))
    assert "pergroup" in artifact.codec_for("best")


def test_the_model_is_rebuilt_by_the_artifacts_own_code(built, tmp_path):
    _, model, _, data = built
    art = artifact.read(artifact.write(tmp_path / "m.pga", data))
    embedded, _ = artifact.build_model(art, code="artifact")
    host, _ = artifact.build_model(art, code="host")
    assert type(embedded).__module__.startswith("_pgolf_artifact_") and type(host) is GPT
    x = torch.randint(0, 260, (2, 32), generator=torch.Generator().manual_seed(1))
    assert torch.equal(embedded.logits(x), host.logits(x))
    quantized = (embedded.logits(x) - model.logits(x)).abs().max()
    assert 0 < quantized < 0.05  # int8 rounding moved the logits, a little
    # Change the counted model code: the rebuilt model changes with it, so the counted code is what runs.
    code = dict(art.code)
    code["pgolf_model/layers.py"] = code["pgolf_model/layers.py"].replace(
        b"return cap * torch.tanh(z / cap) if cap > 0 else z", b"return 2 * z"
    )
    weights = QuantizedState.from_bytes(art.weights).to_bytes()
    patched = artifact.read(
        artifact.write(tmp_path / "p.pga", artifact.build(art.config, art.tokenizer_bytes, weights, code))
    )
    changed, _ = artifact.build_model(patched, code="artifact")
    assert not torch.allclose(changed.logits(x), embedded.logits(x))


def test_writer_refuses_a_file_over_the_limit(built, tmp_path):
    *_, data = built
    target = tmp_path / "big.pga"
    with pytest.raises(artifact.BudgetError, match=rf"over the 10,000-byte limit by {len(data) - 10_000:,}"):
        artifact.write(target, data, limit=10_000)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_config_that_cannot_fit_is_refused_with_the_overflow():
    cfg = preset("baseline").override({"model.num_layers": 12})
    with pytest.raises(artifact.BudgetError, match=r"over the 16,000,000-byte limit by [\d,]+ \(.*at 8 bits\)"):
        estimate.check(cfg, 20_000)
    sizes = estimate.check(preset("baseline"), 20_000)  # the baseline itself fits
    assert sum(sizes.values()) < artifact.LIMIT and estimate.warning(sizes, cfg.quant) is None


def test_config_over_by_less_than_the_estimates_slack_is_a_warning():
    cfg = preset("baseline").override({"model.num_layers": 10})
    sizes = estimate.check(cfg, 20_000)
    over = sum(sizes.values()) - artifact.LIMIT
    assert 0 < over <= estimate.slack(cfg.quant) * sizes["weights"]
    assert f"{over:,} over the 16,000,000-byte limit" in estimate.warning(sizes, cfg.quant)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"PGTK" + d[4:], "not a pgolf model artifact"),
        (lambda d: d[:4] + b"\x09" + d[5:], "format version 9"),
        (lambda d: d[:-10], "needs bytes"),
        (lambda d: d + b"x", "1 unexpected bytes"),
    ],
)
def test_corrupt_artifacts_are_errors(built, tmp_path, mutate, message):
    *_, data = built
    path = tmp_path / "bad.pga"
    path.write_bytes(mutate(data))
    with pytest.raises(artifact.ArtifactError, match=message):
        artifact.read(path)


def test_missing_part_is_an_error(tmp_path):
    path = tmp_path / "m.pga"
    path.write_bytes(artifact.pack({"config": (0, b"{}"), "tokenizer": (0, b"")}))
    with pytest.raises(artifact.ArtifactError, match="missing part"):
        artifact.read(path)


def test_budget_cli_prints_parts_and_total(built, tmp_path, capsys):
    *_, data = built
    path = artifact.write(tmp_path / "m.pga", data)
    assert budget.main([str(path)]) == 0
    out = capsys.readouterr().out
    for part in (*artifact.PARTS, "container"):
        assert part in out
    assert f"{len(data):,}" in out and "16,000,000  fits" in out


def test_budget_cli_estimates_a_config(tmp_path, capsys):
    save_tokenizer(byte_tokenizer(), tmp_path / "tok", report={})
    assert budget.main(["--preset", "baseline", "--tokenizer", str(tmp_path / "tok")]) == 0
    assert "estimate for preset baseline" in capsys.readouterr().out
    assert budget.main(["--preset", "baseline", "--tokenizer", str(tmp_path / "tok"), "--model.num_layers", "12"]) == 1
    assert "OVER" in capsys.readouterr().out


# --- integrity: a sha256 per part ------------------------------------------------------------------------------


def part_offsets(data: bytes) -> dict[str, tuple[int, int]]:
    """Where each part's stored bytes lie, from the documented layout (docs/formats.md), written independently of
    ``artifact.parse_parts``: per entry a name length, the name, the codec, a uint32 size and a 32-byte sha256."""
    pos, table = 6, []
    for _ in range(data[5]):
        n = data[pos]
        table.append((data[pos + 1 : pos + 1 + n].decode(), int.from_bytes(data[pos + 2 + n : pos + 6 + n], "little")))
        pos += 6 + n + 32
    spans = {}
    for name, size in table:
        spans[name] = (pos, pos + size)
        pos += size
    return spans


def version_1(data: bytes) -> bytes:
    """The same parts in the version-1 layout: no sha256 in the table."""
    head, pos = bytearray(data[:6]), 6
    head[4] = 1
    for _ in range(data[5]):
        n = data[pos]
        head += data[pos : pos + 6 + n]
        pos += 6 + n + 32
    return bytes(head) + data[pos:]


def test_every_part_carries_its_sha256(built):
    *_, data = built
    assert data[4] == artifact.FORMAT_VERSION == 2
    for name, (start, end) in part_offsets(data).items():
        codec_at = data.index(name.encode()) + len(name)
        digest = hashlib.sha256(data[codec_at : codec_at + 1] + data[start:end]).digest()
        assert data[codec_at + 5 : codec_at + 37] == digest, name
    assert artifact.container_bytes() == len(data) - sum(e - s for s, e in part_offsets(data).values())


@pytest.mark.parametrize("part", artifact.PARTS)
def test_a_single_bit_flip_in_any_part_is_an_error_naming_it(built, tmp_path, part):
    *_, data = built
    start, end = part_offsets(data)[part]
    path = tmp_path / "flipped.pga"
    for k, position in enumerate(np.linspace(start, end - 1, num=12, dtype=int)):
        flipped = bytearray(data)
        flipped[position] ^= 1 << (k % 8)
        path.write_bytes(flipped)
        with pytest.raises(artifact.ArtifactError, match=rf"part '{part}' .* does not match its sha256"):
            artifact.read(path)
        assert budget.main([str(path)]) == 2


def test_a_single_bit_flip_in_the_container_is_an_error(built, tmp_path):
    *_, data = built
    path = tmp_path / "flipped.pga"
    for position in range(artifact.container_bytes()):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            path.write_bytes(flipped)
            with pytest.raises(artifact.ArtifactError):
                artifact.read(path)


def test_a_version_1_artifact_still_loads_marked_unverified(built, tmp_path, capsys):
    *_, data = built
    path = tmp_path / "v1.pga"
    path.write_bytes(version_1(data))
    art = artifact.read(path)
    assert not art.verified and "integrity is unverified" in art.unverified_note
    assert art.weights == artifact.read(artifact.write(tmp_path / "v2.pga", data)).weights
    assert budget.main([str(path)]) == 0
    assert "its integrity is unverified" in capsys.readouterr().err
    # Without hashes, a flipped bit in the code part still fails in one line, not a traceback of the artifact's code.
    code = dict(art.code)
    code["pgolf_model/model.py"] = code["pgolf_model/model.py"].replace(b"\n    def ", b"\n     def ", 1)
    broken = artifact.build(art.config, art.tokenizer_bytes, art.weights, code)
    path.write_bytes(version_1(broken))
    with pytest.raises(artifact.ArtifactError, match=r"model\.py: the artifact's code fails to load: IndentationError"):
        artifact.build_model(artifact.read(path), code="artifact")


# --- trust: the artifact's code runs only when asked -----------------------------------------------------------

PAYLOAD = b"\nimport pathlib, os\npathlib.Path(os.environ['PGOLF_TEST_PAYLOAD']).write_text('the payload ran')\n"


def test_a_planted_payload_runs_only_with_trust_artifact_code(built, tmp_path, monkeypatch, capsys):
    _, _, tok_bytes, data = built
    art = artifact.read(artifact.write(tmp_path / "m.pga", data))
    assert art.foreign_model_code() == []
    code = dict(art.code)
    code["pgolf_model/model.py"] += PAYLOAD
    planted = artifact.write(tmp_path / "planted.pga", artifact.build(art.config, tok_bytes, art.weights, code))
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("PGOLF_TEST_PAYLOAD", str(marker))
    data_dir, _ = make_dataset(tmp_path / "ds", synthetic_docs(20, 1), synthetic_docs(4, 2))

    planted_art = artifact.read(planted)
    assert planted_art.foreign_model_code() == ["pgolf_model/model.py"]
    with pytest.raises(artifact.UntrustedCodeError, match=r"model code differs .*\(pgolf_model/model\.py\)"):
        artifact.build_model(planted_art)
    assert evaluate.main([str(planted), "--data", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "--trust-artifact-code" in err and len(err.strip().splitlines()) == 1
    assert budget.main([str(planted)]) == 0
    assert "model code differs from this pgolf's (pgolf_model/model.py)" in capsys.readouterr().out
    assert evaluate.main([str(planted), "--data", str(data_dir), "--host-code", "--json"]) == 0
    assert not marker.exists(), "nothing of the artifact ran without --trust-artifact-code"
    host = json.loads(capsys.readouterr().out)["val_bpb"]

    assert evaluate.main([str(planted), "--data", str(data_dir), "--trust-artifact-code", "--json"]) == 0
    assert marker.read_text() == "the payload ran"
    assert json.loads(capsys.readouterr().out)["val_bpb"] == host
