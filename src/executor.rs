//! Runs a graph on a backend: plans which buffer ("slot") holds each value so that
//! activations reuse memory, then hands the backend one op at a time.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::graph::Graph;
use std::collections::HashMap;
use std::time::Instant;

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

/// The time one op of a forward took.
#[derive(Clone, Debug)]
pub struct OpTime {
    /// `Op::name`.
    pub name: &'static str,
    /// `Op::flops`.
    pub flops: Option<f64>,
    pub seconds: f64,
}

/// Owns a backend and runs compiled graphs on it.
pub struct Executor {
    backend: Box<dyn Backend>,
    prepared_for: Option<u64>,
    /// The ops of the last run, in graph order, while op timing is on.
    op_times: Option<Vec<OpTime>>,
}

impl Executor {
    pub fn new(backend: Box<dyn Backend>) -> Self {
        Self {
            backend,
            prepared_for: None,
            op_times: None,
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Times every op of the runs that follow (or stops, with `false`); a backend that
    /// runs its ops only when the outputs are read cannot be timed op by op.
    pub fn time_ops(&mut self, on: bool) -> Result<()> {
        if on && !self.backend.runs_ops_when_called() {
            return Err(Error::Usage(format!(
                "the {} backend runs a forward's ops together, so they cannot be timed one by one",
                self.backend.name()
            )));
        }
        self.op_times = on.then(Vec::new);
        Ok(())
    }

    /// Each op of the last run with its time, in graph order, while op timing is on.
    pub fn op_times(&self) -> Option<&[OpTime]> {
        self.op_times.as_deref()
    }

    /// Lets the backend allocate for `compiled` unless it last ran it. A backend that
    /// refuses (over its memory budget) is left as it was, ready for another graph.
    pub fn prepare(&mut self, compiled: &CompiledGraph) -> Result<()> {
        if self.prepared_for != Some(compiled.id) {
            self.backend.prepare(&compiled.graph, &compiled.plan)?;
            self.prepared_for = Some(compiled.id);
        }
        Ok(())
    }

    /// Writes `inputs` (by name), runs every node, and returns each graph output by name.
    pub fn run(
        &mut self,
        compiled: &CompiledGraph,
        inputs: &[(&str, &[f32])],
    ) -> Result<HashMap<String, Vec<f32>>> {
        self.prepare(compiled)?;
        let CompiledGraph { graph, plan, .. } = compiled;
        for (name, value) in &graph.inputs {
            let data = inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| *d)
                .unwrap_or_else(|| panic!("graph input {name} not supplied"));
            debug_assert_eq!(data.len(), graph.value_sizes[*value], "input {name}");
            self.backend.write(plan.slot_of[*value], data)?;
        }
        let mut in_slots = Vec::new();
        let mut out_slots = Vec::new();
        if let Some(times) = &mut self.op_times {
            times.clear();
        }
        for node in &graph.nodes {
            in_slots.clear();
            in_slots.extend(node.inputs.iter().map(|&v| plan.slot_of[v]));
            out_slots.clear();
            out_slots.extend(node.outputs.iter().map(|&v| plan.slot_of[v]));
            // The clock is read only when timing is on.
            let start = self.op_times.is_some().then(Instant::now);
            self.backend.run(&node.op, &in_slots, &out_slots)?;
            if let (Some(times), Some(start)) = (&mut self.op_times, start) {
                times.push(OpTime {
                    name: node.op.name(),
                    flops: node.op.flops(),
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
        }
        let requests: Vec<(Slot, usize)> = graph
            .outputs
            .iter()
            .map(|(_, v, _)| (plan.slot_of[*v], graph.value_sizes[*v]))
            .collect();
        let data = self.backend.read(&requests)?;
        Ok(graph
            .outputs
            .iter()
            .map(|(name, _, _)| name.clone())
            .zip(data)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Op, ValueId};

    fn select(g: &mut Graph, x: ValueId, size: usize) -> ValueId {
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

    /// A backend that, like the GPU one, only records ops until the outputs are read.
    struct Recording;

    impl Backend for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        fn runs_ops_when_called(&self) -> bool {
            false
        }
        fn load_constants(&mut self, _: Vec<crate::graph::Constant>) -> Result<()> {
            Ok(())
        }
        fn prepare(&mut self, _: &Graph, _: &Plan) -> Result<()> {
            Ok(())
        }
        fn write(&mut self, _: Slot, _: &[f32]) -> Result<()> {
            Ok(())
        }
        fn run(&mut self, _: &Op, _: &[Slot], _: &[Slot]) -> Result<()> {
            Ok(())
        }
        fn read(&mut self, requests: &[(Slot, usize)]) -> Result<Vec<Vec<f32>>> {
            Ok(requests.iter().map(|&(_, len)| vec![0.0; len]).collect())
        }
    }

    #[test]
    fn op_times_list_every_node_of_the_last_run() {
        let mut g = Graph::default();
        let x = g.input("x", 4);
        let a = select(&mut g, x, 4);
        let b = select(&mut g, a, 4);
        g.output("b".into(), b, vec![4]);
        let compiled = CompiledGraph::new(g, 0);
        let mut executor = Executor::new(Box::new(
            crate::backend::scalar::ScalarBackend::with_budget(
                crate::backend::memory::FALLBACK_BUDGET,
            ),
        ));
        executor.run(&compiled, &[("x", &[1.0; 4])]).unwrap();
        assert!(executor.op_times().is_none());
        executor.time_ops(true).unwrap();
        for _ in 0..2 {
            executor.run(&compiled, &[("x", &[1.0; 4])]).unwrap();
            let times = executor.op_times().unwrap();
            assert_eq!(times.len(), 2);
            assert!(times
                .iter()
                .all(|t| t.name == "SelectCls" && t.flops.is_none()));
        }
        executor.time_ops(false).unwrap();
        assert!(executor.op_times().is_none());
    }

    #[test]
    fn ops_of_a_backend_that_records_them_cannot_be_timed() {
        let mut executor = Executor::new(Box::new(Recording));
        assert!(matches!(executor.time_ops(true), Err(Error::Usage(_))));
        assert!(executor.time_ops(false).is_ok());
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
