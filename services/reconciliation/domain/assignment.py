"""Optimal one-to-one assignment of scored candidates, and the ties that make a pairing ambiguous.

Candidates are scored edges between statement rows and ledger rows. An edge whose two rows have no other
candidate is matched directly; every other connected component is solved for the maximum total score,
then checked for another optimum that would pair items differently. Items whose partner differs between
optima are reported as ambiguous, never guessed.

Rows with identical content (the caller's "identity" codes) are interchangeable: swapping two identical
statement lines changes nothing anyone could observe, so such swaps are not ties. The uniqueness check
therefore works on classes of identical rows, as a transportation problem: the optimum is unique exactly
when its residual graph has no zero-weight cycle, and the arcs on such cycles are the variable ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from services.reconciliation.domain.sorted_keys import distinct, factorize, order_by, starts_of_runs

I64 = NDArray[np.int64]
Identity = Callable[[I64], I64]  # rows -> codes; equal codes mean identical content

# Above this many cells a component's dense score matrix costs more than the sparse solver; below it,
# per-component dense LSA is far faster (the sparse solver is slow on many tiny blocks).
DENSE_CELLS_LIMIT = 1_000_000
# Components of at most this many cells (4 x 4 has 209 matchings) are solved by trying every matching,
# all components of one shape at once: far cheaper than one solver call each.
SMALL_CELLS = 16


@dataclass(frozen=True)
class TiedSets:
    """Items whose partner differs between optima, in numbered sets: `statement[i]` belongs to set
    `statement_set[i]`, likewise on the ledger side; both sorted by set, then row."""

    count: int
    statement_set: I64
    statement: I64
    ledger_set: I64
    ledger: I64

    @classmethod
    def none(cls) -> TiedSets:
        empty = np.zeros(0, dtype=np.int64)
        return cls(0, empty, empty, empty, empty)

    def as_tuples(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """(statement rows, ledger rows) of each set, in set order."""
        sets = np.arange(self.count + 1)
        s_bounds = np.searchsorted(self.statement_set, sets).tolist()
        l_bounds = np.searchsorted(self.ledger_set, sets).tolist()
        s_rows, l_rows = self.statement.tolist(), self.ledger.tolist()
        return [
            (tuple(s_rows[s_bounds[i] : s_bounds[i + 1]]), tuple(l_rows[l_bounds[i] : l_bounds[i + 1]]))
            for i in range(self.count)
        ]


@dataclass(frozen=True)
class Assignment:
    """Pairs (statement[i], ledger[i]) of an optimum that every optimum shares, and the tied sets."""

    statement: I64
    ledger: I64
    tied: TiedSets


def assign_optimally(
    statement: I64, ledger: I64, points: I64, statement_identity: Identity, ledger_identity: Identity
) -> Assignment:
    """Maximises the total points of a one-to-one matching over the given candidate edges (points > 0,
    each (statement, ledger) pair at most once) and reports every item whose partner is not forced."""
    if statement.size == 0:
        return Assignment(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), TiedSets.none())
    lone = (np.bincount(statement)[statement] == 1) & (np.bincount(ledger)[ledger] == 1)
    if lone.all():
        return Assignment(statement.copy(), ledger.copy(), TiedSets.none())
    rest = ~lone
    shared = _assign_shared(statement[rest], ledger[rest], points[rest], statement_identity, ledger_identity)
    return Assignment(
        np.concatenate([statement[lone], shared.statement]),
        np.concatenate([ledger[lone], shared.ledger]),
        shared.tied,
    )


@dataclass
class _Classes:
    """Rows of one side grouped into classes of identical content, each class's rows in row order."""

    rows: I64  # sorted by (class, row)
    start: I64  # class c's rows are rows[start[c]:start[c] + capacity[c]]
    capacity: I64

    @classmethod
    def of(cls, rows: I64, identity: Identity) -> tuple[_Classes, I64]:
        """Returns the classes and, for each of the given (sorted, distinct) rows, its class."""
        class_of, _ = factorize([identity(rows)])
        order = order_by([class_of, rows])
        capacity = np.bincount(class_of).astype(np.int64)
        start = np.concatenate([[0], np.cumsum(capacity)[:-1]]).astype(np.int64)
        return cls(rows[order], start, capacity), class_of

    @property
    def first_row(self) -> I64:
        return self.rows[self.start]


def _assign_shared(
    statement: I64, ledger: I64, points: I64, statement_identity: Identity, ledger_identity: Identity
) -> Assignment:
    s_at, s_first = factorize([statement])
    l_at, l_first = factorize([ledger])
    s_rows, l_rows = statement[s_first], ledger[l_first]
    s_classes, s_class_of = _Classes.of(s_rows, statement_identity)
    l_classes, l_class_of = _Classes.of(l_rows, ledger_identity)
    n_s, n_l = s_classes.capacity.size, l_classes.capacity.size

    # Class-level arcs; identical rows score identically, so any edge of a class pair gives its points.
    edge_arc, arc_first = factorize([s_class_of[s_at], l_class_of[l_at]])
    arc_s, arc_l = s_class_of[s_at[arc_first]], l_class_of[l_at[arc_first]]
    arc_points = np.zeros(arc_first.size, dtype=np.int64)
    np.maximum.at(arc_points, edge_arc, points)

    n_nodes = n_s + n_l
    graph = coo_matrix((np.ones(arc_first.size), (arc_s, n_s + arc_l)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    component: I64 = labels.astype(np.int64)
    arc_component = component[arc_s]
    arcs_per_component = np.bincount(arc_component)

    # A component with a single class pair has one optimum up to swaps of identical rows.
    flow = np.zeros(arc_first.size, dtype=np.int64)
    single = arcs_per_component[arc_component] == 1
    flow[single] = np.minimum(s_classes.capacity[arc_s[single]], l_classes.capacity[arc_l[single]])

    multi_edges = np.flatnonzero(~single[edge_arc])
    if multi_edges.size:
        matched = _solve_components(
            s_at[multi_edges], l_at[multi_edges], points[multi_edges], arc_component[edge_arc[multi_edges]]
        )
        np.add.at(flow, edge_arc[multi_edges][matched], 1)
    variable, rest_varies, node_group = _variable_arcs(
        arc_s, arc_l, arc_points, flow, ~single, component, s_classes, l_classes
    )
    return _allocate(arc_s, arc_l, flow, variable, rest_varies, node_group, s_classes, l_classes)


def _solve_components(s_at: I64, l_at: I64, points: I64, edge_component: I64) -> NDArray[np.bool_]:
    """Solves each component for its maximum total; returns which of the given edges are matched.

    Most components are tiny: a line with a few candidates (solved at once by each one's best edge),
    or a few lines sharing a few candidates (solved at once per shape, by scoring every matching of
    that shape). Larger ones go one by one to linear_sum_assignment, or LAPJVsp when very large."""
    matched = np.zeros(s_at.size, dtype=np.bool_)
    order = order_by([edge_component, s_at])
    component, s_at, l_at, points = edge_component[order], s_at[order], l_at[order], points[order]
    starts = np.flatnonzero(starts_of_runs([component]))
    ends = np.concatenate([starts[1:], [component.size]])
    sizes = ends - starts
    # Each edge's row and column numbered within its component (edges are sorted by component, row).
    new_row = starts_of_runs([component, s_at])
    row_local = _count_within(new_row, starts, sizes)
    del new_row
    col_order = order_by([component, l_at])
    new_col = starts_of_runs([component[col_order], l_at[col_order]])
    col_local = np.empty_like(row_local)
    col_local[col_order] = _count_within(new_col, starts, sizes)
    del col_order, new_col, component, s_at, l_at
    n_rows = np.maximum.reduceat(row_local, starts) + 1
    n_cols = np.maximum.reduceat(col_local, starts) + 1
    which = np.repeat(np.arange(starts.size), sizes)  # each edge's component, numbered 0..

    star = (n_rows == 1) | (n_cols == 1)
    edges = np.flatnonzero(star[which])
    if edges.size:
        # The best edge of each star (on equal points, the first; ties are found afterwards).
        by_points = edges[order_by([which[edges], points[edges], -edges])]
        best = np.concatenate([which[by_points][1:] != which[by_points][:-1], [True]])
        matched[order[by_points[best]]] = True

    small = ~star & (n_rows * n_cols <= SMALL_CELLS)
    for rows, cols in {(int(r), int(c)) for r, c in zip(n_rows[small], n_cols[small], strict=True)}:
        chosen = np.flatnonzero(small & (n_rows == rows) & (n_cols == cols))
        slot = np.full(starts.size, -1, dtype=np.int64)
        slot[chosen] = np.arange(chosen.size)
        edges = np.flatnonzero(slot[which] >= 0)
        cell = (slot[which[edges]] * rows + row_local[edges]) * cols + col_local[edges]
        scores = np.zeros(chosen.size * rows * cols, dtype=np.int64)
        scores[cell] = points[edges]
        edge_at = np.full(chosen.size * rows * cols, -1, dtype=np.int64)
        edge_at[cell] = edges
        cells = _matchings(rows, cols)  # every matching as its cells, padded with the sentinel cell
        block = np.concatenate([scores.reshape(chosen.size, rows * cols), np.zeros((chosen.size, 1), np.int64)], axis=1)
        best = block[:, cells].sum(axis=2).argmax(axis=1)
        picked_cells = cells[best] + (np.arange(chosen.size) * rows * cols)[:, None]
        picked_cells = picked_cells[cells[best] < rows * cols]
        picked = edge_at[picked_cells]
        matched[order[picked[picked >= 0]]] = True

    for c in np.flatnonzero(~star & ~small).tolist():
        first, last = int(starts[c]), int(ends[c])
        rows, cols = int(n_rows[c]), int(n_cols[c])
        r, k = row_local[first:last], col_local[first:last]
        if rows * cols <= DENSE_CELLS_LIMIT:
            # Zero marks a non-candidate: candidates score at least one point, so pairing a
            # non-candidate never beats leaving both sides unmatched; such pairs match no edge below.
            dense = np.zeros((rows, cols), dtype=np.float64)
            dense[r, k] = points[first:last]
            picked_rows, picked_cols = linear_sum_assignment(dense, maximize=True)
            at = np.full((rows, cols), -1, dtype=np.int64)
            at[r, k] = np.arange(first, last)
            picked = at[picked_rows, picked_cols]
            picked = picked[picked >= 0]
        else:
            picked_rows, picked_cols = _solve_sparse(r, k, points[first:last], rows, cols)
            picked = first + np.flatnonzero(np.isin(r * cols + k, picked_rows * cols + picked_cols))
        matched[order[picked]] = True
    return matched


def _count_within(new: NDArray[np.bool_], starts: I64, sizes: I64) -> I64:
    """For a run of elements split into groups (starts, sizes): how many `new` marks precede each
    element within its group, i.e. the rank of its distinct value."""
    seen = np.cumsum(new) - 1
    return (seen - np.repeat(seen[starts], sizes)).astype(np.int64)


@cache
def _matchings(rows: int, cols: int) -> I64:
    """Every matching of a rows x cols grid as row-major cell numbers, padded to `rows` cells with
    the sentinel rows * cols (a cell scoring nothing)."""
    found: list[list[int]] = []

    def extend(row: int, used: frozenset[int], cells: list[int]) -> None:
        if row == rows:
            found.append(cells + [rows * cols] * (rows - len(cells)))
            return
        extend(row + 1, used, cells)
        for col in range(cols):
            if col not in used:
                extend(row + 1, used | {col}, [*cells, row * cols + col])

    extend(0, frozenset(), [])
    return np.array(found, dtype=np.int64)


def _solve_sparse(row_at: I64, col_at: I64, points: I64, n_rows: int, n_cols: int) -> tuple[I64, I64]:
    """LAPJVsp on one large component. Each row gets a private dummy column so that a full matching
    always exists; real edges get one extra point so that no weight is zero (sparse zeros vanish)."""
    rows = np.concatenate([row_at, np.arange(n_rows)])
    cols = np.concatenate([col_at, n_cols + np.arange(n_rows)])
    weights = np.concatenate([points.astype(np.float64) + 1.0, np.ones(n_rows)])
    matrix = csr_matrix((weights, (rows, cols)), shape=(n_rows, n_cols + n_rows))
    picked_rows, picked_cols = min_weight_full_bipartite_matching(matrix, maximize=True)
    real = picked_cols < n_cols
    return picked_rows[real].astype(np.int64), picked_cols[real].astype(np.int64)


def _variable_arcs(
    arc_s: I64,
    arc_l: I64,
    arc_points: I64,
    flow: I64,
    checked: NDArray[np.bool_],
    component: I64,
    s_classes: _Classes,
    l_classes: _Classes,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], I64]:
    """Which class arcs (and which classes' unmatched remainders) differ between optima.

    Residual graph of the class-level flow, one "outside" node Z per component: s→l adds a unit on a
    pair (while below both capacities), l→s removes one, Z→s / l→Z use a spare unit, s→Z / Z→l free one.
    Potentials (longest paths, no positive cycle exists at an optimum) make every arc's reduced weight
    ≤ 0; zero-weight cycles are the cycles of zero-reduced-weight ("tight") arcs. A 2-cycle that adds
    and removes the same unit changes nothing, so an antiparallel tight pair only counts when another
    tight path joins its ends.

    Returns `variable` per pair arc, `rest_varies` per class node (S classes then L classes: its count
    of unmatched rows differs between optima), and per node the tied set it belongs to (-1 when none).
    """
    n_s, n_l = s_classes.capacity.size, l_classes.capacity.size
    n_nodes = n_s + n_l + int(component.max()) + 1
    variable = np.zeros(arc_s.size, dtype=np.bool_)
    rest_varies = np.zeros(n_s + n_l, dtype=np.bool_)
    node_group = np.full(n_nodes, -1, dtype=np.int64)
    arcs = np.flatnonzero(checked)
    if arcs.size == 0:
        return variable, rest_varies, node_group

    used_s = np.bincount(arc_s, weights=flow, minlength=n_s).astype(np.int64)
    used_l = np.bincount(arc_l, weights=flow, minlength=n_l).astype(np.int64)
    s_nodes = distinct(arc_s[arcs])
    l_nodes = distinct(arc_l[arcs])
    z_of_s = n_s + n_l + component[s_nodes]
    z_of_l = n_s + n_l + component[n_s + l_nodes]
    spare_s = s_classes.capacity[s_nodes] - used_s[s_nodes]
    spare_l = l_classes.capacity[l_nodes] - used_l[l_nodes]
    cap = np.minimum(s_classes.capacity[arc_s[arcs]], l_classes.capacity[arc_l[arcs]])
    forward = arcs[flow[arcs] < cap]
    backward = arcs[flow[arcs] > 0]

    # Residual arcs, each tagged with the undirected "pair" it belongs to: pair arc a is pair a, the
    # spare/free arcs of class node v are pair (number of arcs + v).
    n_arcs = arc_s.size
    s_spare, s_used = s_nodes[spare_s > 0], s_nodes[used_s[s_nodes] > 0]
    l_spare, l_used = l_nodes[spare_l > 0], l_nodes[used_l[l_nodes] > 0]
    parts = [
        (arc_s[forward], n_s + arc_l[forward], arc_points[forward], forward),
        (n_s + arc_l[backward], arc_s[backward], -arc_points[backward], backward),
        (z_of_s[spare_s > 0], s_spare, np.zeros(s_spare.size, dtype=np.int64), n_arcs + s_spare),
        (s_used, z_of_s[used_s[s_nodes] > 0], np.zeros(s_used.size, dtype=np.int64), n_arcs + s_used),
        (n_s + l_spare, z_of_l[spare_l > 0], np.zeros(l_spare.size, dtype=np.int64), n_arcs + n_s + l_spare),
        (z_of_l[used_l[l_nodes] > 0], n_s + l_used, np.zeros(l_used.size, dtype=np.int64), n_arcs + n_s + l_used),
    ]
    src, dst, weight, pair = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4))

    potential = _longest_path_potentials(src, dst, weight, n_nodes)
    tight = potential[src] + weight == potential[dst]
    src, dst, pair = src[tight], dst[tight], pair[tight]
    tight_graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(n_nodes, n_nodes))
    _, scc = connected_components(tight_graph, directed=True, connection="strong")
    inside = scc[src] == scc[dst]
    if not inside.any():
        return variable, rest_varies, node_group
    src, dst, pair = src[inside], dst[inside], pair[inside]

    # A one-way tight arc inside a strongly connected set lies on a real cycle; a two-way pair (add and
    # remove the same unit) only when another tight path joins its ends.
    pair_code, _ = factorize([pair])
    varies = np.bincount(pair_code)[pair_code] == 1
    two_way = np.flatnonzero(~varies)
    if two_way.size:
        near = np.isin(scc[src], distinct(scc[src[two_way]]))  # only their sets need walking
        adjacency: dict[int, list[tuple[int, int]]] = {}
        for u, v, p in zip(src[near].tolist(), dst[near].tolist(), pair[near].tolist(), strict=True):
            adjacency.setdefault(u, []).append((v, p))
        joined = {
            p for i in two_way.tolist() if _reaches_without(adjacency, int(dst[i]), int(src[i]), p := int(pair[i]))
        }
        varies |= np.isin(pair, list(joined))
    node_group[src[varies]] = scc[src[varies]]
    node_group[dst[varies]] = scc[dst[varies]]
    varying = distinct(pair[varies])
    variable[varying[varying < n_arcs]] = True
    rest_varies[varying[varying >= n_arcs] - n_arcs] = True
    return variable, rest_varies, node_group


def _reaches_without(adjacency: dict[int, list[tuple[int, int]]], start: int, goal: int, skipped_pair: int) -> bool:
    seen = {start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt, pair in adjacency.get(node, ()):
            if pair == skipped_pair or nxt in seen:
                continue
            if nxt == goal:
                return True
            seen.add(nxt)
            queue.append(nxt)
    return False


def _longest_path_potentials(src: I64, dst: I64, weight: I64, n_nodes: int) -> I64:
    """Bellman-Ford from a virtual source joined to every node by a zero arc. Terminates because an
    optimal flow's residual graph has no positive cycle; it usually settles in a few rounds."""
    potential = np.zeros(n_nodes, dtype=np.int64)
    for _ in range(n_nodes + 1):
        relaxed = potential.copy()
        np.maximum.at(relaxed, dst, potential[src] + weight)
        if np.array_equal(relaxed, potential):
            return potential
        potential = relaxed
    raise AssertionError("the assignment is not optimal: its residual graph has a positive cycle")


def _allocate(
    arc_s: I64,
    arc_l: I64,
    flow: I64,
    variable: NDArray[np.bool_],
    rest_varies: NDArray[np.bool_],
    node_group: I64,
    s_classes: _Classes,
    l_classes: _Classes,
) -> Assignment:
    """Turns class flows back into rows: fixed flows become pairs, taking each class's rows in row order
    (so among identical lines the first is matched and the later ones are left over); the units of
    variable arcs and variable remainders become the tied sets."""
    n_s = s_classes.capacity.size
    fixed = np.flatnonzero((flow > 0) & ~variable)
    fixed = fixed[order_by([s_classes.first_row[arc_s[fixed]], l_classes.first_row[arc_l[fixed]]])]
    s_offset = _offsets_within(arc_s[fixed], flow[fixed], s_classes.start)
    l_offset = _offsets_within(arc_l[fixed], flow[fixed], l_classes.start)
    repeat = flow[fixed]
    step = np.arange(int(repeat.sum())) - np.repeat(np.cumsum(repeat) - repeat, repeat)
    statement = s_classes.rows[np.repeat(s_offset, repeat) + step]
    ledger = l_classes.rows[np.repeat(l_offset, repeat) + step]

    # Tied units: after a class's fixed pairs, its next rows, labelled with their tied set.
    tied_rows: list[I64] = []
    tied_group: list[I64] = []
    tied_side: list[I64] = []
    for side_code, arc_class, classes, base in ((0, arc_s, s_classes, 0), (1, arc_l, l_classes, n_s)):
        n = classes.capacity.size
        fixed_count = np.bincount(arc_class[fixed], weights=flow[fixed], minlength=n).astype(np.int64)
        varying = np.bincount(arc_class, weights=flow * variable, minlength=n).astype(np.int64)
        used = np.bincount(arc_class, weights=flow, minlength=n).astype(np.int64)
        tied_units = varying + np.where(rest_varies[base : base + n], classes.capacity - used, 0)
        c = np.flatnonzero(tied_units > 0)
        count = tied_units[c]
        step = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        tied_rows.append(classes.rows[np.repeat(classes.start[c] + fixed_count[c], count) + step])
        tied_group.append(np.repeat(node_group[base + c], count))
        tied_side.append(np.full(int(count.sum()), side_code, dtype=np.int64))
    rows, group, side = np.concatenate(tied_rows), np.concatenate(tied_group), np.concatenate(tied_side)
    order = order_by([group, side, rows])
    rows, side = rows[order], side[order]
    number, _ = factorize([group[order]])
    on_statement = side == 0
    tied = TiedSets(
        int(number.max()) + 1 if number.size else 0,
        number[on_statement],
        rows[on_statement],
        number[~on_statement],
        rows[~on_statement],
    )
    return Assignment(statement, ledger, tied)


def _offsets_within(classes_of_arcs: I64, flows: I64, class_start: I64) -> I64:
    """For arcs in allocation order, where each arc's first unit sits in its class's row list: the class
    start plus the flows of the same class's earlier arcs."""
    order = order_by([classes_of_arcs])
    sorted_class = classes_of_arcs[order]
    sorted_flow = flows[order]
    running = np.cumsum(sorted_flow) - sorted_flow
    first_of_class = (
        np.concatenate([[True], sorted_class[1:] != sorted_class[:-1]]) if order.size else np.zeros(0, np.bool_)
    )
    class_base = np.maximum.accumulate(np.where(first_of_class, running, 0)) if order.size else running
    offset = np.empty_like(order)
    offset[order] = class_start[sorted_class] + running - class_base
    return offset.astype(np.int64)
