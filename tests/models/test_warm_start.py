"""Warm start from a plain twin: the bridged model computes what the plain one computes, and its gates learn."""
from __future__ import annotations

import copy
import logging
import socket

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file

import bridgeattn
from bridgeattn.errors import UserError
from bridgeattn.models.warmstart import plain_twin, warm_sites
from bridgeattn.weights.warmstart import from_plain

# name -> (kwargs for a tiny trunk, image size). Each family's rule is exercised at least once.
EXACT = {
    "bav2_resnet20": ({}, 16),
    "bav1_resnet18": (dict(channels=(8, 8, 16, 16)), 32),
    "bav2_resnet50": (dict(channels=(4, 4, 8, 8)), 32),
    "se_resnet20": ({}, 16),
    "bav2_convnext_tiny": (dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16)), 32),
    "bav2_swin_tiny_patch4_window7_224": (
        dict(img_size=32, depths=(1, 1, 1, 1), embed_dim=8, num_heads=(1, 1, 1, 1), window_size=2, drop_path_rate=0.0),
        32,
    ),
}


def _plain(name: str, kwargs: dict) -> nn.Module:
    """The plain twin in float64, with BatchNorm statistics and affines away from their defaults."""
    plain = timm.create_model(plain_twin(name), **kwargs).double()
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.1)
    return plain


def _assert_same_function(plain: nn.Module, model: nn.Module, size: int) -> None:
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    for training in (False, True):
        p, m = copy.deepcopy(plain).train(training), copy.deepcopy(model).train(training)
        with torch.no_grad():
            expected, got = p(x), m(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
        if training:  # the same batch statistics were used: the running statistics moved alike
            for (k, a), b in zip(p.state_dict().items(), (m.state_dict()[k] for k in p.state_dict())):
                if "running" in k:
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8, msg=k)


@pytest.mark.parametrize("name", list(EXACT))
def test_from_plain_is_the_plain_function_in_eval_and_training(name: str) -> None:
    kwargs, size = EXACT[name]
    plain = _plain(name, kwargs)
    model = from_plain(name, plain, **kwargs)
    assert next(model.parameters()).dtype == torch.float64
    assert warm_sites(model) and not warm_sites(plain)
    _assert_same_function(plain, model, size)


@pytest.mark.parametrize("name", ["bav2_resnet20", "bav2_convnext_tiny"])
def test_gates_receive_gradient_from_the_first_step(name: str) -> None:
    kwargs, size = EXACT[name]
    model = from_plain(name, _plain(name, kwargs), **kwargs).train()
    gates = [m.ba for m in model.modules() if hasattr(m, "ba")]
    assert gates
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        x = torch.randn(4, 3, size, size, dtype=torch.float64)
        model(x).logsumexp(1).sum().backward()
        for gate in gates:
            # Step 1: the generation weight (zero) has a gradient; the layers before it get theirs once it moved.
            # (Not the selection bias: a training-mode BatchNorm follows it, so its gradient is 0 in any
            # bridged model.)
            later = [p for n, p in gate.named_parameters() if n != "selection.bias"]
            learning = [gate.generation.weight] if step == 0 else later
            for p in learning:
                assert p.grad is not None and p.grad.abs().sum() > 0
        opt.step()


def test_se_families_load_the_trunk_and_say_they_are_not_exact(caplog: pytest.LogCaptureFixture) -> None:
    plain = timm.create_model("mobilenetv3_small_100", num_classes=5)
    with caplog.at_level(logging.WARNING, logger="bridgeattn.models.warmstart"):
        model = from_plain("bav2_mobilenetv3_small_100", plain)
    assert "SE modules" in caplog.text and "not exactly" in caplog.text
    trunk = {k: v for k, v in plain.state_dict().items() if ".se." not in k}
    assert model.num_classes == 5
    ours = model.state_dict()
    scaled = {k for site in warm_sites(model) for k in site.scale}
    assert scaled
    for k, v in trunk.items():
        torch.testing.assert_close(ours[k], 2 * v if k in scaled else v, msg=k)  # 2 = 1 / gate(0)


def test_wrong_depth_is_one_line_naming_the_mismatch() -> None:
    deeper = timm.create_model("plain_resnet56").state_dict()
    with pytest.raises(UserError) as err:
        from_plain("bav2_resnet20", deeper)
    message = str(err.value)
    assert "\n" not in message
    assert "unexpected" in message and "layer1.3." in message and "plain_resnet20" in message


def test_a_bridged_checkpoint_loads_as_itself(tmp_path) -> None:
    trained = bridgeattn.create_model("bav2_resnet20")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "ba.pth"
    torch.save({"model": trained.state_dict(), "epoch": 3}, path)  # a training-checkpoint wrapper
    model = from_plain("bav2_resnet20", str(path))
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def test_a_new_classifier_keeps_its_initialisation() -> None:
    plain = timm.create_model("plain_resnet20")
    model = from_plain("bav2_resnet20", plain, num_classes=3)
    assert model.fc.out_features == 3
    torch.testing.assert_close(model.conv1.weight, plain.conv1.weight)


# ------------------------------------------------------------------------- through timm: pretrained=True


def _float32_plain(name: str, kwargs: dict) -> nn.Module:
    """A float32 plain twin (so that timm's float32 load rounds nothing), to be compared in float64."""
    return _plain(name, kwargs).float()


@pytest.mark.parametrize("name", list(EXACT))
def test_pretrained_with_a_plain_file_is_the_same_warm_start(name: str, tmp_path) -> None:
    kwargs, size = EXACT[name]
    plain = _float32_plain(name, kwargs)
    path = tmp_path / "plain.safetensors"
    save_file(plain.state_dict(), str(path))
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    _assert_same_function(plain.double(), model.double(), size)
    reference = from_plain(name, plain.float(), **kwargs)
    for k, v in reference.state_dict().items():
        if ".ba." not in k and ".se." not in k:  # fresh gates differ by their random draws, not by the rule
            torch.testing.assert_close(model.state_dict()[k].to(v.dtype), v, msg=k)


def test_a_bridged_checkpoint_given_as_pretrained_file_loads_as_itself(tmp_path) -> None:
    trained = bridgeattn.create_model("bav2_resnet20")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "ba.safetensors"
    save_file(trained.state_dict(), str(path))
    model = timm.create_model("bav2_resnet20", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_warm_start_tag_is_the_default_and_loads_from_a_faked_timm_cache(tmp_path, monkeypatch) -> None:
    _no_network(monkeypatch)
    cfg = timm.get_pretrained_cfg("bav1_resnet18")
    assert cfg.tag == "from_a1_in1k" and cfg.hf_hub_id == "timm/resnet18.a1_in1k"
    tiny = dict(channels=(8, 8, 16, 16))
    plain = _float32_plain("bav1_resnet18", tiny)
    # The Hugging Face cache layout that timm's hub download reads: models--ORG--NAME/{refs/main, snapshots/REV/}
    repo, revision = tmp_path / "models--timm--resnet18.a1_in1k", "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    save_file(plain.state_dict(), str(repo / "snapshots" / revision / "model.safetensors"))
    model = timm.create_model("bav1_resnet18", pretrained=True, cache_dir=str(tmp_path), **tiny)
    _assert_same_function(plain.double(), model.double(), 32)


def test_detection_backbone_starts_from_plain_weights(tmp_path) -> None:
    from bridgeattn.models.detection import create_features

    plain = _float32_plain("bav2_resnet20", {}).eval()
    path = tmp_path / "plain.safetensors"
    save_file(plain.state_dict(), str(path))
    body = create_features("bav2_resnet20", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert any(".ba." in k for k in body.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = plain.forward_features(x)
        # float32 through ~20 layers: the two models run equivalent but different kernels (the lean merge vs timm's
        # add), whose rounding differs by CPU (AVX2 vs AVX-512); the float64 tests above check exactness.
        torch.testing.assert_close(body(x)[-1], ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_wrapped_and_prefixed_plain_weights_warm_start_alike() -> None:
    plain = _plain("bav2_resnet20", {})
    compiled = {f"_orig_mod.{k}": v for k, v in plain.state_dict().items()}
    ddp = {"state_dict": {f"module.{k}": v for k, v in plain.state_dict().items()}}
    for weights in (compiled, ddp):
        _assert_same_function(plain, from_plain("bav2_resnet20", weights), 16)


# ------------------------------------------------------------- every location load_model takes: one resolver
def _plain_locations(tmp_path) -> tuple[nn.Module, dict[str, str]]:
    """A float64 plain_resnet20 written as a run folder, its checkpoint file, a hub folder and a safetensors file."""
    from bridgeattn.weights import checkpoint as ckpt
    from bridgeattn.weights.export import save_safetensors
    from bridgeattn.weights.hub import save_pretrained

    plain = _plain("bav2_resnet20", {})
    state = {"model": plain.state_dict(), "config": {"model": "plain_resnet20"}, "epoch": 1, "step": 1}
    path = ckpt.save_checkpoint(state, tmp_path / "run", is_best=True)
    save_pretrained(plain, tmp_path / "hub")
    save_safetensors(plain, tmp_path / "plain.safetensors")
    return plain, {"run folder": str(tmp_path / "run"), "checkpoint file": str(path), "hub folder":
                   str(tmp_path / "hub"), "safetensors": str(tmp_path / "plain.safetensors")}


def test_from_plain_and_init_from_accept_the_same_locations_exactly(tmp_path) -> None:
    from bridgeattn.engine.finetune import init_from

    plain, locations = _plain_locations(tmp_path)
    for location in locations.values():
        _assert_same_function(plain, from_plain("bav2_resnet20", location), 16)
        model = bridgeattn.create_model("bav2_resnet20").double()
        init_from(model, location)
        _assert_same_function(plain, model, 16)


def test_an_unreachable_hub_is_one_line_within_seconds_naming_the_offline_form(tmp_path, monkeypatch) -> None:
    import time

    import huggingface_hub

    from bridgeattn.engine.finetune import init_from

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("unreachable")))
    for env in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(env, raising=False)
    model = bridgeattn.create_model("bav2_resnet50")
    for offline in (False, True):  # offline: the hub client finds no cached file, and asks no one
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        start = time.monotonic()
        for load in (lambda: from_plain("bav2_resnet50", "resnet50.a1_in1k"),
                     lambda: init_from(model, "resnet50.a1_in1k")):
            with pytest.raises(UserError, match="HF_HUB_OFFLINE=1.*pretrained_cfg_overlay") as err:
                load()
            assert "\n" not in str(err.value)
        assert time.monotonic() - start < 10


def test_a_name_without_weights_or_a_missing_path_is_one_line_without_the_network(monkeypatch) -> None:
    _no_network(monkeypatch)
    for location, says in (("plain_resnet20", "timm has no weights for it"), ("resnet50.nope", "no weights"),
                           ("runs/absent", "no such file, folder or timm model")):
        with pytest.raises(UserError, match=says):
            from_plain("bav2_resnet20", location)
