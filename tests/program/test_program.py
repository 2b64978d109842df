"""Model programs: exported graphs rebuilt into trainable modules, and what is refused unrun."""

import copy
import inspect
import json
import pickle

import pytest
import torch
from torch import nn
from torch.func import functional_call

from trajx.errors import InvalidInput
from trajx.program.build import example_inputs, export_program, load_program
from trajx.program.document import check_program


class ResidualAttentionNet(nn.Module):
    """A user's model: a residual block, nn.MultiheadAttention, LayerNorm, BatchNorm."""

    def __init__(self, in_features=16, width=8, heads=2, num_classes=3, tokens=4):
        super().__init__()
        self.tokens = tokens
        self.embed = nn.Linear(in_features // tokens, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.block = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
        self.bn = nn.BatchNorm1d(width)
        self.register_buffer("scale", torch.full((width,), 0.5), persistent=False)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.embed(x.reshape(x.shape[0], self.tokens, -1))
        a, _ = self.attn(h, h, h, need_weights=False)
        h = self.norm(h + a)
        h = h + self.block(h)
        return self.head(self.bn(h.mean(dim=1)) * self.scale)


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    model = ResidualAttentionNet()
    document = json.loads(json.dumps(export_program(model, (torch.randn(2, 16),))))  # as it travels
    return model, document


def test_rebuilt_module_computes_what_the_users_module_computes(exported):
    model, document = exported
    rebuilt = load_program(copy.deepcopy(document))
    assert list(rebuilt.state_dict()) == list(model.state_dict())  # the user's own names, in order
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(5, 16)
    for mode in (False, True):  # eval, then train (BatchNorm uses batch statistics)
        users, ours = copy.deepcopy(model).train(mode), rebuilt.train(mode)
        assert torch.allclose(ours(x), users(x), atol=1e-6)
    # train mode updated the running statistics like the user's module does
    reference = copy.deepcopy(model).train()
    reference(x)
    assert torch.allclose(rebuilt.bn.running_mean, reference.bn.running_mean, atol=1e-6)


def test_rebuilt_module_trains_and_works_with_functional_call(exported):
    model, document = exported
    rebuilt = load_program(copy.deepcopy(document))
    rebuilt.load_state_dict(model.state_dict())
    x, y = torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    nn.functional.cross_entropy(rebuilt(x), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rebuilt.parameters())

    doubled = {k: v * 2 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    rebuilt.eval()
    assert torch.allclose(functional_call(rebuilt, doubled, (x,)),
                          functional_call(copy.deepcopy(model).eval(), doubled, (x,)), atol=1e-5)


def test_example_inputs_follow_the_programs_shape(exported):
    _, document = exported
    (x,) = example_inputs(document, batch=7)
    assert x.shape == (7, 16) and x.dtype == torch.float32


def _first_node(document, mode="eval"):
    return document["graphs"][mode]["graph_module"]["graph"]["nodes"][0]


@pytest.mark.parametrize("target, code, message", [
    ("torch.ops.aten.nonexistent_op.default", "unsupported_op", "calls aten.nonexistent_op.default"),
    ("torch.ops.aten.topk.default", "unsupported_op", "depends on the order of entries"),
    ("builtins.eval", "unsupported_op", "not an ATen operator"),
    ("os.system", "unsupported_op", "Python functions are not allowed"),
    ("torch.ops.mylib.secret.default", "unsupported_op", "custom operators"),
])
def test_an_operator_outside_the_rule_table_is_refused_before_deserializing(
        exported, monkeypatch, target, code, message):
    _, document = exported
    hostile = copy.deepcopy(document)
    _first_node(hostile)["target"] = target
    deserialized = []
    monkeypatch.setattr("torch._export.serde.serialize.deserialize",
                        lambda *a, **k: deserialized.append(a))

    with pytest.raises(InvalidInput, match=message) as refused:
        load_program(hostile)

    assert refused.value.code == code and "graphs.eval" in refused.value.message
    assert deserialized == []  # refused before torch read any of it


@pytest.mark.parametrize("member", ["as_custom_obj", "as_graph", "as_operator"])
def test_a_node_passing_an_object_or_graph_is_refused(exported, member):
    _, document = exported
    hostile = copy.deepcopy(document)
    _first_node(hostile, "train")["inputs"].append({"name": "x", "arg": {member: {"name": "obj"}}, "kind": 1})
    with pytest.raises(InvalidInput, match=member):
        check_program(hostile)


def test_a_pickle_is_not_a_program():
    payload = pickle.dumps({"format": "trajx.program"})
    with pytest.raises(InvalidInput, match="not a model program"):
        check_program(payload)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=99), "version 99 is not supported"),
    (lambda d: d.update(task="regression-ish"), "task 'regression-ish'"),
    (lambda d: d["inputs"][0].update(shape=[2, -1]), r"inputs\[0\].shape"),
    (lambda d: d["graphs"].pop("train"), "must hold exactly"),
    (lambda d: d["constants"]["scale"].update(data="AAAA"), "bytes of data"),
    (lambda d: d["graphs"]["train"]["graph_module"]["signature"]["input_specs"].append(
        {"custom_obj": {"arg": {"name": "o"}}}), "input of kind 'custom_obj'"),
])
def test_malformed_programs_are_refused_naming_the_member(exported, mutate, message):
    _, document = exported
    broken = copy.deepcopy(document)
    mutate(broken)
    with pytest.raises(InvalidInput, match=message):
        check_program(broken)


def test_source_locations_of_the_users_machine_are_not_exported(exported):
    _, document = exported
    traces = [node["metadata"]["stack_trace"] for graph in document["graphs"].values()
              for node in graph["graph_module"]["graph"]["nodes"] if "stack_trace" in node.get("metadata", {})]
    assert traces and all(t.startswith("File") and "/" not in t for t in traces)  # one frame, no path
    assert any(t.startswith('File "test_program.py"') for t in traces)
    assert __file__.rsplit("/", 1)[0] not in json.dumps(document)


class _Sorted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).sort(dim=-1).values  # an op with several results, refused


def test_a_refusal_names_the_calling_node_its_module_source_line_and_what_to_do():
    with pytest.raises(InvalidInput) as refused:
        export_program(_Sorted(), (torch.randn(2, 4),))
    details, message = refused.value.details, refused.value.message
    assert details["op"] == "aten.sort.default" and details["node"] == "sort"  # not the getitem reading it
    assert details["module"] == "<root> (_Sorted)"
    line = inspect.getsourcelines(_Sorted.forward)[1] + 1
    assert details["source"].startswith(f"test_program.py:{line}: return self.fc(x).sort(dim=-1).values")
    assert "explicit permutation_spec" in message and "operator table" in message


@pytest.mark.slow
def test_trajx_run_takes_a_local_program_file(tmp_path):
    """`trajx run` reads `arch.program` as a path next to the spec, like any other ref."""
    import subprocess

    from safetensors.torch import save_file

    from trajx.demo.server import trajx_command

    def state(seed):
        torch.manual_seed(seed)
        return {k: v.clone() for k, v in nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
                .state_dict().items()}

    torch.manual_seed(0)
    (tmp_path / "program.json").write_text(json.dumps(export_program(
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), (torch.randn(2, 8),))))
    for name, seed in (("theta0", 0), ("thetaT", 5), ("target", 1)):
        save_file(state(seed), str(tmp_path / f"{name}.safetensors"))
    save_file({"inputs": torch.randn(32, 8), "targets": torch.randint(0, 3, (32,))},
              str(tmp_path / "train.safetensors"))
    (tmp_path / "spec.json").write_text(json.dumps({
        "arch": {"program": "program.json"}, "source": ["theta0.safetensors", "thetaT.safetensors"],
        "targets": [{"checkpoint": "target.safetensors"}], "train_data": "train.safetensors",
        "params": {"steps": 3, "batch_size": 16, "device": "cpu"}}))

    done = subprocess.run([*trajx_command(), "run", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "report.json").read_text())
    assert result["spec"]["arch"]["program"] == "program.json"
    assert (tmp_path / "out" / "target-0" / "last.safetensors").is_file()
