"""The model zoo: configs, parameter naming, seeded init and plug-in architectures."""

import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch
from torch import nn

from trajx.engine.zoo import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    ArchConfig,
    ArchitectureEntry,
    build_model,
    example_input,
    init_state_dict,
    list_architectures,
    load_entry_points,
)
from trajx.errors import InvalidInput

SMALL = {
    "mlp": {"in_features": 12, "hidden": [16, 8], "num_classes": 3},
    "cnn": {"channels": [4, 4, 8, 8], "fc": [16], "image_size": 8, "in_channels": 1},
    "resnet": {"depth": 20, "width": 0.25, "image_size": 8},
    "transformer": {"d_model": 16, "num_heads": 2, "num_layers": 1, "image_size": 8},
}


class TinyConfig(ArchConfig):
    width: int = 4


class Tiny(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(2, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


TINY_ENTRY = ArchitectureEntry(Tiny, TinyConfig, lambda c, batch: torch.randn(batch, 2), "test plug-in")
NOT_AN_ENTRY = object()


@pytest.fixture
def clean_registry():
    before = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(before)


def test_builtin_architectures_are_listed():
    assert {"mlp", "cnn", "resnet", "transformer"} <= set(list_architectures())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_architecture_builds_and_runs_on_its_example_input(name):
    model = build_model(name, SMALL[name])
    out = model(example_input(name, SMALL[name], batch=3))
    assert out.shape == (3, SMALL[name].get("num_classes", 10))


def test_example_input_is_reproducible():
    a = example_input("cnn", SMALL["cnn"], generator=torch.Generator().manual_seed(1))
    b = example_input("cnn", SMALL["cnn"], generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8)


def test_mlp_parameter_names_follow_the_docs():
    state = build_model("mlp", {**SMALL["mlp"], "norm": "batchnorm"}).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "blocks.0.fc.weight": (16, 12), "blocks.0.fc.bias": (16,),
        "blocks.0.norm.weight": (16,), "blocks.0.norm.bias": (16,),
        "blocks.0.norm.running_mean": (16,), "blocks.0.norm.running_var": (16,),
        "blocks.0.norm.num_batches_tracked": (),
        "blocks.1.fc.weight": (8, 16), "blocks.1.fc.bias": (8,),
        "blocks.1.norm.weight": (8,), "blocks.1.norm.bias": (8,),
        "blocks.1.norm.running_mean": (8,), "blocks.1.norm.running_var": (8,),
        "blocks.1.norm.num_batches_tracked": (),
        "head.weight": (3, 8), "head.bias": (3,),
    }


def test_mlp_flattens_image_inputs():
    config = {"in_features": 2 * 3 * 3, "hidden": [5], "num_classes": 2, "input_shape": [2, 3, 3]}
    x = example_input("mlp", config)
    assert x.shape == (2, 2, 3, 3)
    assert build_model("mlp", config)(x).shape == (2, 2)


def test_cnn_default_is_conv8():
    state = build_model("cnn", {}).state_dict()
    convs = [k for k in state if k.endswith("conv.weight")]
    assert [state[k].shape[0] for k in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    # four max-pools take 32x32 to 2x2: the first fc reads 512 channels x 4 positions
    assert tuple(state["fc.0.weight"].shape) == (256, 512 * 4)
    assert tuple(state["head.weight"].shape) == (10, 256)


def test_resnet_layouts():
    r20 = build_model("resnet", {"depth": 20}).state_dict()
    assert sum(k.endswith("conv1.weight") for k in r20) == 9
    assert tuple(r20["stages.2.2.conv2.weight"].shape) == (64, 64, 3, 3)
    assert "stages.1.0.shortcut.conv.weight" in r20 and "stages.0.0.shortcut.conv.weight" not in r20
    r18 = build_model("resnet", {"depth": 18, "width": 0.5}).state_dict()
    assert sum(k.endswith("conv1.weight") for k in r18) == 8
    assert tuple(r18["stages.3.1.conv2.weight"].shape) == (256, 256, 3, 3)
    assert tuple(r18["head.weight"].shape) == (10, 256)


def test_transformer_tokens_and_cls():
    config = {"input": "tokens", "d_in": 5, "seq_len": 7, "d_model": 8, "num_heads": 2,
              "num_layers": 2, "pool": "cls", "num_classes": 4}
    model = build_model("transformer", config)
    state = model.state_dict()
    assert tuple(state["pos_embed"].shape) == (1, 8, 8)  # 7 tokens + CLS
    assert tuple(state["cls_token"].shape) == (1, 1, 8)
    assert tuple(state["embed.proj.weight"].shape) == (8, 5)
    assert {"blocks.1.attn.q.weight", "blocks.1.attn.out.bias", "blocks.1.mlp.fc1.weight"} <= set(state)
    assert model(example_input("transformer", config)).shape == (2, 4)


def test_seeded_init_is_bit_identical_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = init_state_dict("resnet", SMALL["resnet"], seed=7)
    b = init_state_dict("resnet", SMALL["resnet"], seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    c = init_state_dict("resnet", SMALL["resnet"], seed=8)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.conv.weight"], c["stem.conv.weight"])


def test_unknown_architecture_is_named():
    with pytest.raises(InvalidInput) as info:
        build_model("vgg99", {})
    assert info.value.code == "unknown_architecture"
    assert "vgg99" in info.value.message and "mlp" in info.value.message


@pytest.mark.parametrize("name, config, field, words", [
    ("mlp", {**SMALL["mlp"], "hiddden": [3]}, "arch.config.hiddden", "unknown key 'hiddden' (did you mean 'hidden'?)"),
    ("mlp", {**SMALL["mlp"], "activation": "swish"}, "arch.config.activation", "relu"),
    ("mlp", {"hidden": [3], "num_classes": 2}, "arch.config.in_features", "required"),
    ("mlp", {**SMALL["mlp"], "input_shape": [5, 5]}, "arch.config", "does not hold"),
    ("cnn", {"image_size": 30}, "arch.config", "not divisible by 2**4"),
    ("resnet", {"depth": 34}, "arch.config.depth", "18"),
    ("transformer", {"d_model": 10, "num_heads": 3}, "arch.config", "not divisible by num_heads"),
])
def test_bad_configs_give_clear_errors(name, config, field, words):
    with pytest.raises(InvalidInput) as info:
        build_model(name, config)
    assert info.value.code == "invalid_config"
    assert info.value.details["errors"][0]["field"] == field
    assert words in info.value.message


def test_entry_point_object_registers_an_architecture(clean_registry):
    point = EntryPoint(name="tiny", value=f"{__name__}:TINY_ENTRY", group=ENTRY_POINT_GROUP)
    assert load_entry_points([point]) == ["tiny"]
    assert build_model("tiny", {"width": 3})(torch.randn(1, 2)).shape == (1, 3)
    with pytest.raises(InvalidInput) as info:
        build_model("tiny", {"depth": 3})
    assert info.value.code == "invalid_config"


@pytest.mark.parametrize("value, words", [
    (f"{__name__}:NOT_AN_ENTRY", "not an ArchitectureEntry"),
    ("no_such_package_for_trajx:ENTRY", "ModuleNotFoundError"),
])
def test_entry_point_must_load_an_architecture_entry(clean_registry, value, words):
    point = EntryPoint(name="broken", value=value, group=ENTRY_POINT_GROUP)
    with pytest.raises(InvalidInput) as info:
        load_entry_points([point])
    assert info.value.code == "invalid_architecture_plugin"
    assert "broken" in info.value.message and words in info.value.message


def test_installed_distribution_plugs_in_through_metadata(clean_registry, tmp_path, monkeypatch):
    (tmp_path / "acme_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from trajx.engine.zoo import ArchConfig, ArchitectureEntry

        class AcmeConfig(ArchConfig):
            hidden: int = 6

        class Acme(nn.Module):
            def __init__(self, config):
                super().__init__()
                self.fc = nn.Linear(3, config.hidden)
                self.out = nn.Linear(config.hidden, 2)

            def forward(self, x):
                return self.out(torch.relu(self.fc(x)))

        ENTRY = ArchitectureEntry(Acme, AcmeConfig, lambda c, batch: torch.randn(batch, 3))
    """))
    dist = tmp_path / "acme_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nacme = acme_models:ENTRY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "acme_models", raising=False)
    assert "acme" in list_architectures()
    state = init_state_dict("acme", {"hidden": 4}, seed=0)
    assert tuple(state["fc.weight"].shape) == (4, 3)


PLUGIN_MODULE = '''
import torch
from torch import nn
from trajx.engine.zoo import ArchConfig, ArchitectureEntry

class Config(ArchConfig):
    width: int = 3

ENTRY = ArchitectureEntry(builder=lambda c: nn.Linear(4, c.width), config_model=Config,
                          example_input=lambda c, batch: torch.zeros(batch, 4))
'''

PROBE = '''
import site, sys
site.addsitedir(sys.argv[1])  # a site-packages directory, as the worker's own
from trajx.engine.zoo import build_model, list_architectures
print("before", "late_plugin" in list_architectures(), flush=True)
input()  # the test installs the plug-in now
print("after", type(build_model("late_plugin", {"width": 5})).__name__, flush=True)
'''


def test_a_plugin_installed_after_start_is_found_without_a_restart(tmp_path):
    # An editable-style install: the code lives elsewhere, reachable through a .pth file,
    # which Python otherwise processes only at start-up.
    sitedir, src = tmp_path / "site-packages", tmp_path / "src"
    sitedir.mkdir()
    (src / "lateplug").mkdir(parents=True)
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(sitedir)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert probe.stdout.readline().split() == ["before", "False"]

    (src / "lateplug" / "__init__.py").write_text(PLUGIN_MODULE)
    (sitedir / "lateplug.pth").write_text(f"{src}\n")
    dist = sitedir / "lateplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lateplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[trajx.architectures]\nlate_plugin = lateplug:ENTRY\n")
    out, _ = probe.communicate("\n", timeout=120)

    assert probe.returncode == 0
    assert out.split() == ["after", "Linear"]
