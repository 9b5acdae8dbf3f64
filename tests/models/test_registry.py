"""Registration with timm through its public API: cfgs attached, timm's own module listings untouched."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch.nn as nn

import bridgeattn
from bridgeattn.errors import UserError
from bridgeattn.models import entrypoints
from bridgeattn.models.checks import default_input_size

# timm modules whose names the package's families share (their listings must not grow).
TIMM_MODULES = ("resnet", "convnext", "regnet", "efficientnet", "mobilenetv3", "swin_transformer")


def test_every_model_has_its_pretrained_cfg() -> None:
    names = bridgeattn.list_models(include_timm=False)
    assert len(names) == len(entrypoints.PRETRAINED_CFGS) == 82
    for name in names:
        cfg = timm.get_pretrained_cfg(name)
        assert cfg.architecture == name
        assert timm.models.get_arch_name(name) == name
        assert cfg.input_size and cfg.mean and cfg.std and cfg.first_conv and cfg.classifier
    assert set(timm.list_models(module="entrypoints")) == set(names)


def test_import_leaves_timm_module_listings_unchanged() -> None:
    code = (
        "import json, timm\n"
        f"mods = {TIMM_MODULES!r}\n"
        "before = {m: timm.list_models(module=m) for m in mods}\n"
        "import timm.models.resnet as r; n = len(r.__all__)\n"
        "import bridgeattn\n"
        "after = {m: timm.list_models(module=m) for m in mods}\n"
        "print(json.dumps([before == after, n == len(r.__all__), len(before['resnet'])]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    same, same_all, n_resnet = json.loads(out.strip().splitlines()[-1])
    assert same and same_all and n_resnet > 0


def test_an_unknown_name_says_which_model_was_meant() -> None:
    with pytest.raises(UserError) as err:
        bridgeattn.create_model("bav2_resnet21")
    message = str(err.value)
    assert "unknown model 'bav2_resnet21'" in message and "did you mean bav2_resnet20" in message
    assert "\n" not in message


def test_the_default_input_size_is_timms_data_config() -> None:
    model = bridgeattn.create_model("bav2_resnet20", in_chans=1)
    assert default_input_size(model) == (1, 32, 32)  # the cfg's side, the model's own channels
    assert default_input_size(model, img_size=48) == (1, 48, 48)
    assert default_input_size(model, in_chans=3) == (3, 32, 32)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 40, 40)}
    assert default_input_size(model)[1:] == timm.data.resolve_model_data_config(model)["input_size"][1:] == (40, 40)
    assert default_input_size(nn.Conv2d(3, 8, 3)) == (3, 224, 224)  # no cfg: timm's default


@pytest.mark.parametrize("name, kwargs", [
    ("bav2_resnet20", {"layers": (1, 1, 1)}),
    ("bav2_resnet50", {"attention": "se"}),
    ("bav2_convnext_tiny", {"version": "v1"}),
    ("bav2_convnext_tiny", {"twin": "convnext_small"}),
])
def test_an_entrypoint_refuses_keywords_that_would_build_another_model(name: str, kwargs: dict) -> None:
    # The name promises the trunk, the attention and the BA version: a keyword that changes them is a TypeError,
    # as it is for a hand-written timm entrypoint.
    with pytest.raises(TypeError, match="multiple values for keyword argument"):
        timm.create_model(name, **kwargs)
