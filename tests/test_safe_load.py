"""Weights from strangers: code-running pickles are refused unless the user opts in."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from bridgeattn import UserError, load_file


class Payload:
    """Unpickling this would call a function chosen by the file's author."""

    def __reduce__(self):
        return (print, ("payload ran",))


def test_plain_state_dict_loads(tmp_path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, path)
    obj = load_file(path)
    assert obj["epoch"] == 3 and torch.equal(obj["model"]["w"], torch.ones(2))


def test_code_running_pickle_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Payload()}, path)
    with pytest.raises(UserError, match="unsafe-load"):
        load_file(path)
    assert "payload ran" not in capsys.readouterr().out
    load_file(path, unsafe=True)  # the explicit escape hatch runs it
    assert "payload ran" in capsys.readouterr().out


def test_truncated_and_missing_files_are_clear(tmp_path) -> None:
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="truncated"):
        load_file(path)
    with pytest.raises(UserError, match="no such file"):
        load_file(tmp_path / "absent.pth")


def test_safetensors(tmp_path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path))
    assert torch.equal(load_file(path)["w"], torch.arange(3.0))
