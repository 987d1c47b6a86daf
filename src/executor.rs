//! Runs a compiled graph on a backend: writes its inputs, hands the backend one op at a
//! time, and reads the requested outputs.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::plan::{CompiledGraph, Slot};
use std::time::Instant;

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

    /// Writes `inputs` (by name), runs every node, and returns the graph's outputs in its
    /// order.
    pub fn run(
        &mut self,
        compiled: &CompiledGraph,
        inputs: &[(&str, &[f32])],
    ) -> Result<Vec<Vec<f32>>> {
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
        self.backend.read(&requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Graph, Op};
    use crate::plan::tests::select;
    use crate::plan::Plan;

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
}
