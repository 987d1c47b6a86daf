//! Which buffer ("slot") holds each value of a graph, so that activations reuse memory:
//! what the executor and every backend share, kept apart from both.

use crate::graph::Graph;

/// A backend buffer index.
pub type Slot = usize;

/// Which slot holds each value, and how large each slot must be.
#[derive(Clone, Debug)]
pub struct Plan {
    pub slot_of: Vec<Slot>,
    pub slot_sizes: Vec<usize>,
}

impl Plan {
    /// Greedy lifetime-based reuse: a value takes the smallest free slot that fits (or grows
    /// the largest free one), and its slot is freed after its last reader. Inputs and
    /// outputs keep their slots for the whole run.
    pub fn new(graph: &Graph) -> Self {
        let values = graph.value_sizes.len();
        let pinned: Vec<bool> = (0..values)
            .map(|v| {
                graph.inputs.iter().any(|(_, i)| *i == v)
                    || graph.outputs.iter().any(|(_, o, _)| *o == v)
            })
            .collect();
        let mut last_use = vec![None; values];
        for (step, node) in graph.nodes.iter().enumerate() {
            for &v in &node.inputs {
                last_use[v] = Some(step);
            }
        }
        let mut slot_of = vec![usize::MAX; values];
        let mut slot_sizes = Vec::new();
        let mut free: Vec<Slot> = Vec::new();
        let take = |size: usize, free: &mut Vec<Slot>, slot_sizes: &mut Vec<usize>| -> Slot {
            let fitting = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slot_sizes[s] >= size)
                .min_by_key(|(_, &s)| slot_sizes[s]);
            let chosen =
                fitting.or_else(|| free.iter().enumerate().max_by_key(|(_, &s)| slot_sizes[s]));
            match chosen.map(|(i, _)| i) {
                Some(i) => {
                    let slot = free.swap_remove(i);
                    slot_sizes[slot] = slot_sizes[slot].max(size);
                    slot
                }
                None => {
                    slot_sizes.push(size);
                    slot_sizes.len() - 1
                }
            }
        };
        for (_, v) in &graph.inputs {
            slot_of[*v] = take(graph.value_sizes[*v], &mut free, &mut slot_sizes);
        }
        for (step, node) in graph.nodes.iter().enumerate() {
            for &v in &node.outputs {
                slot_of[v] = take(graph.value_sizes[v], &mut free, &mut slot_sizes);
            }
            // Inputs are released only after the outputs are placed, so no op writes a
            // slot it reads.
            let released = node
                .inputs
                .iter()
                .chain(&node.outputs)
                .filter(|&&v| !pinned[v] && last_use[v].is_none_or(|s| s <= step));
            for &v in released {
                if !free.contains(&slot_of[v]) {
                    free.push(slot_of[v]);
                }
            }
        }
        Self {
            slot_of,
            slot_sizes,
        }
    }
}

/// A graph with its buffer plan, built once per (batch, image size, options).
pub struct CompiledGraph {
    pub graph: Graph,
    pub plan: Plan,
    /// Distinguishes graphs so the backend is re-prepared only when the graph changes.
    pub id: u64,
}

impl CompiledGraph {
    pub fn new(graph: Graph, id: u64) -> Self {
        let plan = Plan::new(&graph);
        Self { graph, plan, id }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::graph::{Op, ValueId};

    /// A `SelectCls` of `x` into a new value of `size`: the smallest op, to build test graphs.
    pub(crate) fn select(g: &mut Graph, x: ValueId, size: usize) -> ValueId {
        g.op(
            Op::SelectCls {
                batch: 1,
                tokens: 1,
                dim: size,
            },
            &[x],
            size,
        )
    }

    #[test]
    fn chain_reuses_two_slots_and_keeps_pinned_values() {
        let mut g = Graph::default();
        let x = g.input("x", 8);
        let a = select(&mut g, x, 8);
        let b = select(&mut g, a, 8);
        let c = select(&mut g, b, 8);
        let d = select(&mut g, c, 8);
        g.output("d".into(), d, vec![8]);
        let plan = Plan::new(&g);
        // x is pinned; a, b, c, d alternate between two slots.
        assert_eq!(plan.slot_sizes.len(), 3);
        assert_ne!(plan.slot_of[a], plan.slot_of[b]);
        assert_eq!(plan.slot_of[a], plan.slot_of[c]);
        assert!(plan
            .slot_of
            .iter()
            .enumerate()
            .all(|(v, &s)| v == x || s != plan.slot_of[x]));
    }

    #[test]
    fn value_read_later_is_not_overwritten() {
        let mut g = Graph::default();
        let x = g.input("x", 4);
        let a = select(&mut g, x, 4);
        let b = select(&mut g, a, 4);
        let c = select(&mut g, b, 4);
        let d = g.op(
            Op::SelectCls {
                batch: 1,
                tokens: 1,
                dim: 4,
            },
            &[a, c],
            4,
        );
        g.output("d".into(), d, vec![4]);
        let plan = Plan::new(&g);
        for v in [b, c, d] {
            assert_ne!(
                plan.slot_of[v], plan.slot_of[a],
                "value {v} overwrote a while a is still needed"
            );
        }
    }
}
