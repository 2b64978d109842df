"""The operator table: torch-free, complete over core ATen, every rule implemented and documented."""

import subprocess
import sys
from pathlib import Path

import torch

from trajx.engine.permutation.trace_ops import HANDLERS
from trajx.op_table import REFUSED, RULES, refusal, rule_for, unsupported

DOCS = Path(__file__).parents[2] / "docs" / "models.md"


def _core_aten_ops() -> set[str]:
    """Every registered ATen overload tagged core (all schemas: `torch.ops.aten` loads lazily)."""
    names = set()
    for schema in torch._C._jit_get_all_schemas():
        namespace, packet = schema.name.split("::")
        if namespace != "aten":
            continue
        op = getattr(getattr(torch.ops.aten, packet), schema.overload_name or "default")
        if torch.Tag.core in op.tags:
            names.add(str(op))
    return names


def _exists(op: str) -> bool:
    if op == "_operator.getitem":
        return True
    namespace, packet, overload = op.split(".")
    found = getattr(getattr(torch.ops, namespace), packet, None)
    return found is not None and overload in found.overloads()


def test_the_table_imports_without_torch():
    code = "import sys, trajx.op_table; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_core_aten_op_has_a_rule_or_a_reason_to_refuse_it():
    core = _core_aten_ops()
    assert len(core) > 150
    assert sorted(core - set(RULES) - set(REFUSED)) == []
    assert set(RULES).isdisjoint(REFUSED)


def test_every_listed_op_exists_and_every_rule_has_a_handler():
    assert [op for op in [*RULES, *REFUSED] if not _exists(op)] == []
    assert set(RULES.values()) == set(HANDLERS)


def test_lookups_fail_closed():
    assert rule_for("aten.linear.default") == "linear"
    assert rule_for("aten.sort.default") is None and "order" in refusal("aten.sort.default")
    assert rule_for("aten.some_new_op.default") is None and refusal("aten.some_new_op.default") == "no rule for this op"
    assert unsupported(["aten.linear.default", "aten.sort.default", "x.y", "aten.sort.default"]) == [
        "aten.sort.default", "x.y"]


def test_a_saved_programs_node_targets_are_read_as_they_are_written(tmp_path):
    import json
    import zipfile

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.export.save(torch.export.export(model, (torch.randn(2, 3),), strict=False), tmp_path / "m.pt2")
    with zipfile.ZipFile(tmp_path / "m.pt2") as archive:
        name = next(n for n in archive.namelist() if n.endswith("models/model.json"))
        nodes = json.loads(archive.read(name))["graph_module"]["graph"]["nodes"]
    targets = [node["target"] for node in nodes]
    assert "torch.ops.aten.linear.default" in targets
    assert unsupported(targets) == [] and rule_for("torch.ops.aten.relu.default") == "elementwise"
    assert unsupported([*targets, "torch.ops.aten.sort.default"]) == ["aten.sort.default"]


def test_the_docs_list_every_rule_and_every_refused_op():
    text = DOCS.read_text()
    assert [op for op in [*RULES, *REFUSED] if f"`{op}`" not in text] == []
