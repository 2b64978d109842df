"""The atom union-find: axes as factor sequences, refined to one factorization when linked."""

from trajx.engine.permutation.axis_links import AtomUnion


def _axes(**sizes: int) -> AtomUnion:
    axes = AtomUnion()
    for key, size in sizes.items():
        axes.add((key, 0), size, in_graph=True)
    return axes


def _sizes(axes: AtomUnion, key: str) -> list[int]:
    return [axes.atom_size(a) for a in axes.leaves((key, 0))]


def test_a_merged_axis_is_refined_into_the_factors_it_was_made_of():
    axes = _axes(fused=24, part=3, heads=8)
    axes.join((("fused", 0),), (("part", 0), ("heads", 0)), "view")
    assert _sizes(axes, "fused") == [3, 8]
    assert [axes.root(a) for a in axes.leaves(("fused", 0))] == [
        axes.root(axes.leaves(("part", 0))[0]), axes.root(axes.leaves(("heads", 0))[0])]


def test_a_refinement_reaches_every_axis_of_the_class():
    # (N*H) met by (N, H) after it was joined to another axis: both are split alike
    axes = _axes(a=8, b=8, n=2, h=4)
    axes.join((("a", 0),), (("b", 0),), "add")
    axes.join((("a", 0),), (("n", 0), ("h", 0)), "view")
    assert _sizes(axes, "b") == [2, 4]
    axes.fix(("n", 0), "batch")
    assert [axes.is_live(x) for x in axes.leaves(("b", 0))] == [False, True]


def test_factors_without_a_common_refinement_are_fixed():
    axes = _axes(x=6, y=4, u=4, v=6)
    axes.join((("x", 0), ("y", 0)), (("u", 0), ("v", 0)), "view")  # (6, 4) -> (4, 6)
    assert not any(axes.is_live(a) for key in "xyuv" for a in axes.leaves((key, 0)))
    assert "view regroups units unevenly" in axes.why_fixed(axes.leaves(("x", 0))[0])


def test_an_empty_axis_is_fixed_not_refined():
    axes = _axes(x=0, y=0)
    axes.join((("x", 0),), (("y", 0),), "view")
    assert axes.why_fixed(axes.leaves(("x", 0))[0]) == "view"
