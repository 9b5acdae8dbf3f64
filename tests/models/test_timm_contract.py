"""timm's model contract for every registered family: TorchScript, fx tracing, forward_intermediates, cfgs.

Each family is checked on a tiny instance (a few channels, 32-64 px): scripted and fx-traced outputs equal
eager ones, intermediates match ``feature_info``. FcaNet (``fca_*``) is not scriptable (docs/models.md).
"""
from __future__ import annotations

import pytest
import timm
import torch
import torch.fx
from timm.models import get_notrace_functions, get_notrace_modules

import bridgeattn
from bridgeattn.models.entrypoints import RESNET_FAMILIES

# timm's contract includes TorchScript, which torch now marks deprecated; these tests exercise it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

TINY_RESNET = {"channels": (8, 16, 32, 64)}
# one model per family (and per block kind / gate version) -> tiny keyword arguments
FAMILIES: dict[str, dict] = {
    "bav1_resnet20": {},
    "bav2_resnet20": {},
    "bav2_resnet18": TINY_RESNET,
    "bav1_resnet50": TINY_RESNET,
    "bav2_resnet50": TINY_RESNET,
    "plain_resnet20": {},
    "se_resnet20": {},
    "eca_resnet20": {},
    "cbam_resnet20": {},
    "gc_resnet20": {},
    "fca_resnet20": {},
    "ca_resnet20": {},
    "srm_resnet20": {},
    "bav2_convnext_tiny": {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)},
    "bav2_swin_tiny_patch4_window7_224": {"embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
    "bav2_regnety_040": {"depth": 6, "w0": 8, "wa": 12.0, "wm": 2.0, "group_size": 8},
    "bav1_efficientnet_b0": {},
    "bav2_efficientnet_b0": {},
    "bav1_mobilenetv3_small_100": {},
    "bav2_mobilenetv3_large_100": {},
}
NOT_SCRIPTABLE = {"fca_resnet20": "FcaNet builds its DCT filters per input size in a Python dict cache"}
SIZE = 64


def _model(name: str, **kwargs) -> torch.nn.Module:
    extra = dict(FAMILIES[name])
    if name.startswith("bav2_swin"):
        extra["img_size"] = SIZE
    return bridgeattn.create_model(name, num_classes=5, **extra, **kwargs).eval()


def _trace(model: torch.nn.Module) -> torch.fx.GraphModule:
    """fx trace with timm's leaf modules and functions, as timm's own fx tests and feature extractors do."""
    leaves = tuple(get_notrace_modules())

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    graph = Tracer(autowrap_functions=tuple(get_notrace_functions())).trace(model)
    return torch.fx.GraphModule(model, graph)


def test_every_registered_family_is_covered() -> None:
    for family, names in bridgeattn.model_families().items():
        assert family == "timm" or set(names) & set(FAMILIES), family
    for prefix in RESNET_FAMILIES:
        assert any(name.startswith(prefix) for name in FAMILIES), prefix


@pytest.mark.parametrize("name", [n for n in FAMILIES if n not in NOT_SCRIPTABLE])
def test_scripted_equals_eager(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 3, SIZE, SIZE)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-6)


def test_unscriptable_models_say_so() -> None:
    for name in NOT_SCRIPTABLE:
        with pytest.raises(RuntimeError):
            torch.jit.script(_model(name))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fx_traced_equals_eager(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
        traced = _trace(model)(x)
    assert torch.equal(traced, expected)


@pytest.mark.parametrize("name", ["bav1_resnet20", "bav2_resnet50", "bav2_convnext_tiny", "bav1_mobilenetv3_small_100"])
def test_fx_traced_trains(name: str) -> None:
    """Traced in training mode, every parameter gets a gradient (timm's fx backward check)."""
    model = _model(name).train()
    traced = _trace(model)
    traced(torch.randn(2, 3, SIZE, SIZE)).mean().backward()
    assert all(p.grad is not None for p in traced.parameters())


@pytest.mark.parametrize("name", list(FAMILIES))
def test_forward_intermediates_match_feature_info(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 3, SIZE, SIZE)
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        expected = model.forward_features(x)
    assert len(feats) == len(info.channels()) >= 3
    for f, c, r in zip(feats, info.channels(), info.reduction()):
        assert f.shape[1] == c and f.shape[-1] <= -(-SIZE // r) + 1
    torch.testing.assert_close(final, expected)


def test_forward_intermediates_indices_on_three_stage_trunk() -> None:
    model = _model("bav2_resnet20")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
        full = model.forward_features(x)
    assert [f.shape[1] for f in last_two] == [32, 64]
    torch.testing.assert_close(picked[-1], full)
    with pytest.raises(ValueError):
        model.forward_intermediates(x, indices=5)
    assert model.prune_intermediate_layers(indices=[1, 2]) == [1, 2]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_default_cfg_describes_the_model(name: str) -> None:
    """timm's default-cfg checks: pool size at the cfg's input size, head width, first conv and classifier keys."""
    model = _model(name)
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name
    size = cfg["input_size"] if not name.startswith("bav2_swin") else (3, SIZE, SIZE)
    x = torch.randn(1, *size)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
    hw = feats.shape[1:3] if getattr(model, "output_fmt", "NCHW") == "NHWC" else feats.shape[-2:]
    if not name.startswith("bav2_swin"):
        assert tuple(hw) == tuple(cfg["pool_size"])
    assert pre.shape[1] == model.head_hidden_size and model.num_features > 0
    keys = model.state_dict().keys()
    assert f"{cfg['classifier']}.weight" in keys and f"{cfg['first_conv']}.weight" in keys


def test_every_pretrained_tag_creates_with_its_own_cfg() -> None:
    """Each ``timm.list_models(pretrained=True)`` name of ours builds with pretrained=False and reports its own tag."""
    names = timm.list_models(pretrained=True, module="entrypoints")
    assert any(n.startswith("bav2_convnext_tiny.") for n in names) and any(n.startswith("bav2_swin") for n in names)
    for name in names:
        arch, _, tag = name.partition(".")
        with torch.device("meta"):  # no memory, no initialisation arithmetic: only the construction is checked
            model = timm.create_model(name, pretrained=False)
        expected = tag or timm.models.get_pretrained_cfg(arch).tag  # an untagged name means the default tag
        assert (model.pretrained_cfg["architecture"], model.pretrained_cfg["tag"]) == (arch, expected), name
