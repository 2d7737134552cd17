"""The process group ``runtime.setup`` makes under torchrun."""

from __future__ import annotations

from pgolf_model import runtime


def test_ranks_waiting_for_the_export_get_a_long_collective_timeout(monkeypatch):
    """Rank 0 exports alone while the others wait in a broadcast: the process group is made with an explicit hour."""
    made = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda **kw: made.update(kw))
    runtime.setup("cpu")
    assert made == {"backend": "gloo", "timeout": runtime.COLLECTIVE_TIMEOUT}
    assert runtime.COLLECTIVE_TIMEOUT.total_seconds() == 3600
