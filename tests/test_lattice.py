import networkx as nx
import pytest

import hcl_explore as hx


def test_full_lattice_has_all_nonempty_subsets_in_deterministic_order():
    lat = hx.Lattice.full(["a", "b", "c"])
    assert len(lat) == 7
    assert lat.nodes == (("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c"))
    assert len(hx.Lattice.full(list("abcde"))) == 31


def test_nodes_are_canonicalised_to_modality_order():
    lat = hx.Lattice(["a", "b", "c"], nodes=[("c", "a"), "b", ["b", "c", "a"]])
    assert lat.nodes == (("b",), ("a", "c"), ("a", "b", "c"))
    assert ("c", "a") in lat and ("a", "b") not in lat
    assert lat.node(["c", "b"]) == ("b", "c")


def test_levels():
    lat = hx.Lattice.full(["a", "b", "c", "d"])
    assert lat.level(("a", "b", "c", "d")) == "global"
    assert lat.level(("a", "c", "d")) == "partial"
    assert lat.level(("b", "d")) == "partial"
    assert lat.level("c") == "private"


def test_presets():
    mods = ["a", "b", "c", "d"]
    sp = hx.Lattice.shared_private(mods)
    assert set(sp.nodes) == {("a", "b", "c", "d"), ("a",), ("b",), ("c",), ("d",)}
    go = hx.Lattice.global_only(mods)
    assert ("a", "b", "c", "d") in go and not any(go.level(n) == "partial" for n in go)
    pw = hx.Lattice.pairwise(mods)
    assert len(pw) == 1 + 6 + 4
    assert all(len(n) in (1, 2, 4) for n in pw)
    assert hx.Lattice.preset("full", mods) == hx.Lattice.full(mods)
    # With two modalities the only pair is the global node: no duplicate.
    assert len(hx.Lattice.pairwise(["a", "b"])) == 3
    with pytest.raises(ValueError, match="Unknown lattice preset"):
        hx.Lattice.preset("nope", mods)


@pytest.mark.parametrize(
    "nodes, message",
    [
        ([("a", "z")], "Unknown modality 'z'"),
        ([()], "Empty node"),
        ([("a", "b"), ("b", "a")], "Duplicate node"),
        ([("a", "a")], "repeats a modality"),
    ],
)
def test_bad_nodes_raise_clear_value_errors(nodes, message):
    with pytest.raises(ValueError, match=message):
        hx.Lattice(["a", "b", "c"], nodes=nodes)


def test_bad_modality_names():
    with pytest.raises(ValueError, match="Duplicate modality"):
        hx.Lattice(["a", "a"])
    with pytest.raises(ValueError, match="contains"):
        hx.Lattice(["a+b", "c"])


def test_hasse_diagram_is_the_covering_relation():
    lat = hx.Lattice.full(["a", "b", "c"])
    g = lat.hasse()
    assert isinstance(g, nx.DiGraph)
    assert list(g.nodes) == list(lat.nodes)
    # global covers the three pairs, each pair covers its two singletons: 3 + 6 edges
    assert g.number_of_edges() == 9
    assert set(g.successors(("a", "b", "c"))) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert not g.has_edge(("a", "b", "c"), ("a",))  # not a cover: (a, b) lies between
    assert g.nodes[("a", "b")]["level"] == "partial"
    # Without the pairs, global covers the singletons directly.
    sp = hx.Lattice.shared_private(["a", "b", "c"]).hasse()
    assert set(sp.successors(("a", "b", "c"))) == {("a",), ("b",), ("c",)}
    # Deterministic: same edges in the same order each time.
    assert list(lat.hasse().edges) == list(g.edges)


def test_round_trip_dict():
    lat = hx.Lattice(["x", "y", "z"], nodes=[("x", "y"), ("z",)])
    assert hx.Lattice.from_dict(lat.to_dict()) == lat
