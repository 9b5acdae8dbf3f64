"""Registration with timm through its public API: cfgs attached, timm's own module listings untouched."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import timm

import bridgeattn
from bridgeattn.models import entrypoints

SRC = Path(bridgeattn.__file__).parent
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


def test_no_private_timm_modules_imported() -> None:
    private = re.compile(r"timm\.(models|layers|data|utils)\._\w+|from timm\.\w+ import _")
    offenders = [
        f"{path.relative_to(SRC)}:{i}"
        for path in SRC.rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []
