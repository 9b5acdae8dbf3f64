"""One loader for every weights location: run folder, checkpoint, hub folder, safetensors, reference and
compiled-model state dicts give the same model, every command uses it, and nothing in a file starts a download."""
from __future__ import annotations

import http.server
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import bridgeattn
from bridgeattn import UserError
from bridgeattn.cli.main import main
from bridgeattn.config import from_flat
from bridgeattn.engine import train
from bridgeattn.weights.export import save_safetensors
from bridgeattn.weights.loading import load_model
from bridgeattn.weights.safe_load import load_file

NAME = "bav2_resnet20"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loading") / "run"
    train(*from_flat(dict(model=NAME, data="synthetic:64", img_size=16, in_chans=1, batch_size=32, epochs=1, workers=0,
                      progress=False, plots=False, output=str(folder))))
    return folder


def _to_bav2_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our BAv2 gate keys renamed to the reference BAv2 layout (the inverse of convert.py, written here)."""
    rules = [(r"\.ba\.integration\.(\d+)\.weight$", r".ba.fusions.\1.0.weight"), (r"\.ba\.selection\.", ".ba.proj."),
             (r"\.ba\.norm\.", ".ba.generation.0."), (r"\.ba\.generation\.weight$", ".ba.generation.2.weight")]
    out = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_every_location_gives_the_same_model_and_preprocessing(run: Path, tmp_path: Path) -> None:
    ref = load_model(run)
    assert ref.kind == "run" and ref.name == NAME and ref.source.name == "epoch-0001.pth"
    assert ref.preprocessing.input_size == (1, 16, 16) and ref.model.pretrained_cfg["input_size"] == (1, 16, 16)
    assert ref.preprocessing.mean == (0.5,) and ref.preprocessing.std == (0.25,)  # synthetic data, one channel
    assert ref.config["data"] == "synthetic:64" and ref.checkpoint["epoch"] == 1 and "top1" in ref.metrics
    older = load_file(run / "checkpoints" / "last.pth")  # a checkpoint from before preprocessing was recorded
    assert older.pop("preprocessing") == ref.preprocessing.to_dict()
    torch.save(older, tmp_path / "older.pth")
    assert load_model(tmp_path / "older.pth").preprocessing == ref.preprocessing

    state = ref.model.state_dict()
    compiled = tmp_path / "compiled.pth"  # torch.compile inside DDP: both wrappers' prefixes
    torch.save({"state_dict": {f"_orig_mod.module.{k}": v for k, v in state.items()}}, compiled)
    reference = tmp_path / "reference.pth"
    torch.save({"model": _to_bav2_reference(state), "epoch": 299}, reference)
    hub = bridgeattn.save_pretrained(ref.model, tmp_path / "hub", metrics=ref.metrics)
    weights = save_safetensors(ref.model, tmp_path / "w.safetensors")
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bare))

    cases = {
        run / "checkpoints": ("run", None),
        run / "checkpoints" / "last.pth": ("checkpoint", None),
        hub: ("hub", None),
        weights: ("weights", None),
        bare: ("weights", NAME),
        compiled: ("weights", NAME),
        reference: ("reference", NAME),
    }
    for location, (kind, name) in cases.items():
        loaded = load_model(location, name)
        assert loaded.kind == kind, location
        _same(loaded.model, ref.model)
        assert loaded.model.num_classes == 10 and loaded.model.in_chans == 1
        if kind in ("run", "checkpoint", "hub") or location == weights:  # these carry their preprocessing
            assert loaded.preprocessing == ref.preprocessing, location
    assert load_model(hub).metrics["top1"] == ref.metrics["top1"]
    with pytest.raises(UserError, match="pass --model NAME"):
        load_model(bare)
    with pytest.raises(UserError, match="holds a bav2_resnet20 model, not bav1_resnet20"):
        load_model(hub, "bav1_resnet20")
    with pytest.raises(UserError, match=r"missing in the checkpoint .*: layer1\.3\."):
        load_model(bare, "bav2_resnet56")
    with pytest.raises(UserError, match="neither a run folder"):
        load_model(tmp_path)


def test_a_run_folder_stands_for_its_newest_complete_verified_finite_checkpoint(run: Path, tmp_path: Path) -> None:
    import shutil

    from bridgeattn.weights.checkpoint import record_path

    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    folder = copy / "checkpoints"
    good = folder / "epoch-0001.pth"
    record = json.loads(record_path(good).read_text())
    for name, rec in (("epoch-0001-batch-000001.pth", record),  # mid-epoch: for --resume only
                      ("epoch-0002.pth", None),  # no record: the write never finished
                      ("epoch-0003.pth", {**record, "epoch": 3, "finite": False})):  # NaN statistics
        shutil.copy(good, folder / name)
        if rec is not None:
            record_path(folder / name).write_text(json.dumps(rec))
    with pytest.warns(UserWarning, match=r"skipped newer checkpoint\(s\) epoch-0003.pth \(non-finite"):
        assert load_model(copy).source == good
    damaged = folder / "epoch-0001-batch-000001.pth"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"?")  # same size, other content
    with pytest.raises(UserError, match="cannot be used: checksum mismatch"):
        load_model(damaged)
    for name in ("epoch-0001.pth", "epoch-0001.pth.json"):
        (folder / name).unlink()
    with pytest.raises(UserError, match="no usable checkpoint.*epoch-0003.pth \\(non-finite"):
        load_model(copy)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_each_command_scores_and_exports_the_same_model(run: Path, tmp_path: Path, capsys) -> None:
    ref = load_model(run)
    hub = bridgeattn.save_pretrained(ref.model, tmp_path / "hub")
    weights = save_safetensors(ref.model, tmp_path / "w.safetensors")
    assert os.stat(weights).st_mode & 0o777 == os.stat(hub / "config.json").st_mode & 0o777  # 0644, like the rest
    assert os.stat(hub / "model.safetensors").st_mode & 0o777 == os.stat(hub / "config.json").st_mode & 0o777

    results = []
    for location, extra in ((run, []), (hub, ["--data", "synthetic:64"]), (weights, ["--data", "synthetic:64"])):
        out = tmp_path / f"eval-{len(results)}"
        assert main(["eval", "--checkpoint", str(location), "--output", str(out), "--no-plots", "--no-progress",
                     "--print-json", *extra]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["count"] == 16 and results[0]["top1"] == results[0]["stored_top1"]
    for other in results[1:]:
        assert (other["top1"], other["loss"], other["count"]) == (results[0]["top1"], results[0]["loss"], 16)
    assert main(["eval", "--checkpoint", str(weights)]) == 2
    assert "pass --data SPEC" in capsys.readouterr().err

    script = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--output", str(script),
                 "--print-json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == [1, 16, 16]  # the run's size, not the model's 32
    extra = {"bridgeattn.json": ""}
    scripted = torch.jit.load(str(script), _extra_files=extra)
    assert json.loads(json.loads(extra["bridgeattn.json"])["preprocessing"])["input_size"] == [1, 16, 16]
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        # TorchScript's executor may fuse and reorder float ops (it did under AVX2): equal up to rounding
        torch.testing.assert_close(scripted(x), ref.model(x), rtol=1e-5, atol=1e-6)


def test_explain_uses_the_run_and_refuses_an_earlier_report(run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("pytorch_grad_cam")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(images / f"img{i}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "explain"
    argv = ["explain", "--checkpoint", str(run), "--images", str(images), "--block", "layer1.0", "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 Grad-CAM figures" in printed and "skipped 1 unreadable" in printed
    report = json.loads((out / "explain.json").read_text())
    assert report["img_size"] == 16 and report["mean"] == [0.5]
    assert list(report["skipped"]) == [str(images / "broken.png")]
    assert (out / "skipped_files.txt").read_text().startswith(str(images / "broken.png"))
    assert main(argv) == 2
    assert "already holds an explain report" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        _Recorder.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_url_stored_in_weights_is_never_requested(run: Path, tmp_path: Path, server: str, capsys) -> None:
    hostile = {"pretrained": True, "pretrained_cfg_overlay": {"url": f"{server}/weights.pth", "hf_hub_id": None}}
    state = load_file(run / "checkpoints" / "last.pth")
    state["config"]["model_kwargs"] = hostile
    checkpoint = tmp_path / "hostile.pth"
    torch.save(state, checkpoint)
    ref = load_model(run)
    hub = bridgeattn.save_pretrained(ref.model, tmp_path / "hub")
    config = json.loads((hub / "config.json").read_text())
    config["model_args"].update(hostile)
    (hub / "config.json").write_text(json.dumps(config))

    for location in (checkpoint, hub):
        _same(load_model(location).model, ref.model)
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "safetensors",
                 "--output", str(tmp_path / "x.safetensors")]) == 0
    assert main(["eval", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "e"), "--no-plots",
                 "--no-progress"]) == 0
    # a run folder whose config.yaml asks for remote weights: resuming it takes the weights from its checkpoint
    import shutil

    import yaml

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed, symlinks=True)
    stored = yaml.safe_load((resumed / "config.yaml").read_text())
    stored["model_kwargs"] = hostile
    (resumed / "config.yaml").write_text(yaml.safe_dump(stored))
    assert main(["train", "--output", str(resumed), "--resume", "auto", "--epochs", "2", "--workers", "0",
                 "--no-progress", "--no-plots"]) == 0
    assert _Recorder.seen == []


def test_broken_files_are_one_line_errors(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    broken = tmp_path / "broken.safetensors"
    save_file({"w": torch.ones(64)}, str(broken))
    broken.write_bytes(broken.read_bytes()[:-40])
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    expected = {empty: "is empty", noise: "is not a checkpoint", broken: "not a readable .safetensors",
                garbled: "not a readable .safetensors"}
    for path, message in expected.items():
        with pytest.raises(UserError, match=message) as info:
            load_file(path)
        assert "unsafe-load" not in str(info.value) and "\n" not in str(info.value)
        assert main(["export", "--model", NAME, "--checkpoint", str(path), "--format", "onnx",
                     "--output", str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_resume_into_a_different_model_names_the_keys(run: Path, tmp_path: Path) -> None:
    cfg = from_flat(dict(model=NAME, data="synthetic:64", img_size=16, in_chans=1, batch_size=32, epochs=2, workers=0,
                      progress=False, plots=False, output=str(tmp_path / "other"), model_kwargs={"rd_ratio": 0.5},
                      resume=str(run / "checkpoints" / "last.pth")))
    names = r"shape \(file vs model\): layer2\.0\.ba\.integration\.0\.weight \(8, 32\) vs \(16, 32\)"
    with pytest.raises(UserError, match=names):
        train(*cfg)


def test_eval_of_plain_weights_reads_only_the_validation_split(tmp_path: Path, monkeypatch, capsys) -> None:
    import bridgeattn.data.folder as folder

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / cls / f"{i}.png")
    checked = []
    real = folder.check_image
    monkeypatch.setattr(folder, "check_image", lambda path: checked.append(Path(path)) or real(path))
    model = bridgeattn.create_model(NAME, num_classes=2).eval()
    weights = save_safetensors(model, tmp_path / "w.safetensors")
    assert main(["eval", "--checkpoint", str(weights), "--data", f"folder:{tmp_path / 'data'}", "--no-plots",
                 "--no-progress", "--print-json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 4
    assert len(checked) == 4 and all(p.parent.parent.name == "val" for p in checked)
