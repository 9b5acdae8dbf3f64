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


def test_legacy_pickle_with_a_payload_is_refused_as_code_not_damage(tmp_path, capsys) -> None:
    import os

    class System:
        def __reduce__(self):
            return (os.system, ("echo payload ran",))

    for name, payload in (("print.pth", Payload()), ("system.pth", System())):
        path = tmp_path / name
        torch.save({"w": torch.ones(2), "extra": payload}, path, _use_new_zipfile_serialization=False)
        with pytest.raises(UserError, match="may run code.*unsafe-load"):
            load_file(path)
    assert "payload ran" not in capsys.readouterr().out


def test_a_checkpoint_of_timms_train_py_loads_safely_with_its_ema(tmp_path) -> None:
    import argparse

    from timm.utils import CheckpointSaver, ModelEmaV3

    import bridgeattn

    model = bridgeattn.create_model("bav2_resnet20", num_classes=4)
    ema = ModelEmaV3(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
    args = argparse.Namespace(model="bav2_resnet20", lr=0.1, epochs=1, model_kwargs={}, mean=None)
    saver = CheckpointSaver(model, torch.optim.SGD(model.parameters(), lr=0.1), args=args, model_ema=ema,
                            checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path))
    saver.save_checkpoint(epoch=0, metric=1.0)
    path = tmp_path / "model_best.pth.tar"
    assert isinstance(load_file(path)["args"], argparse.Namespace)
    loaded = bridgeattn.load_model(path)  # timm's "arch" names the model
    assert loaded.name == "bav2_resnet20" and loaded.model.num_classes == 4
    torch.testing.assert_close(loaded.model.state_dict(), model.state_dict())
    with_ema = bridgeattn.load_model(path, "bav2_resnet20", use_ema=True)
    torch.testing.assert_close(with_ema.model.state_dict(), ema.module.state_dict())
    assert argparse.Namespace not in torch.serialization.get_safe_globals()  # allowed for that load only


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
