//! Runs a compiled graph on a backend: takes a workspace, writes its inputs, hands the
//! workspace one op at a time, and reads the requested outputs.

use crate::backend::{Backend, Workspace};
use crate::error::{Error, Result};
use crate::plan::{CompiledGraph, Slot};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The time one op of a forward took.
#[derive(Clone, Debug)]
pub struct OpTime {
    /// `Op::name`.
    pub name: &'static str,
    /// `Op::flops`.
    pub flops: Option<f64>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Owns a backend and runs compiled graphs on it, each forward in a workspace of its own
/// so that threads can share it; workspaces are kept between forwards with their buffers.
pub struct Executor {
    backend: Arc<dyn Backend>,
    /// Workspaces not running a forward.
    idle: Mutex<Vec<Prepared>>,
    time_ops: bool,
    /// The ops of the last run, in graph order, while op timing is on.
    op_times: Mutex<Option<Vec<OpTime>>>,
}

/// A workspace and the graph it was last prepared for.
struct Prepared {
    workspace: Box<dyn Workspace>,
    graph: Option<u64>,
}

/// A workspace taken for one forward; it goes back to the executor when dropped.
pub struct Run<'e> {
    executor: &'e Executor,
    prepared: Option<Prepared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent whatever a panicking holder was doing.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Executor {
    /// An executor over `backend`, whose constants are already loaded.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            idle: Mutex::new(Vec::new()),
            time_ops: false,
            op_times: Mutex::new(None),
        }
    }

    /// The backend the graphs run on.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Times every op of the runs that follow (or stops, with `false`); a backend that
    /// runs its ops only when the outputs are read cannot be timed op by op.
    pub fn time_ops(&mut self, on: bool) -> Result<()> {
        if on && !self.backend.runs_ops_when_called() {
            return Err(Error::InvalidOption(format!(
                "the {} backend runs a forward's ops together, so they cannot be timed one by one",
                self.backend.name()
            )));
        }
        self.time_ops = on;
        *lock(&self.op_times) = None;
        Ok(())
    }

    /// Each op of the last run with its time, in graph order, while op timing is on.
    pub fn op_times(&self) -> Option<Vec<OpTime>> {
        lock(&self.op_times).clone()
    }

    /// A workspace for one forward: an idle one, preferably one prepared for `graph`, or a
    /// new one.
    pub fn start(&self, graph: &CompiledGraph) -> Run<'_> {
        let prepared = {
            let mut idle = lock(&self.idle);
            let same = idle.iter().rposition(|p| p.graph == Some(graph.id));
            match same {
                Some(i) => Some(idle.swap_remove(i)),
                None => idle.pop(),
            }
        };
        let prepared = prepared.unwrap_or_else(|| Prepared {
            workspace: Arc::clone(&self.backend).workspace(),
            graph: None,
        });
        Run {
            executor: self,
            prepared: Some(prepared),
        }
    }
}

impl Run<'_> {
    fn prepared(&mut self) -> &mut Prepared {
        self.prepared.as_mut().expect("present until dropped")
    }

    /// Lets the workspace allocate for `compiled` unless it last ran it. A workspace that
    /// refuses (over its memory budget) is left as it was, ready for another graph.
    pub fn prepare(&mut self, compiled: &CompiledGraph) -> Result<()> {
        let prepared = self.prepared();
        if prepared.graph != Some(compiled.id) {
            prepared.graph = None;
            prepared
                .workspace
                .prepare(&compiled.graph, &compiled.plan)?;
            prepared.graph = Some(compiled.id);
        }
        Ok(())
    }

    /// Writes `inputs` (by name), runs every node, and returns the graph's outputs in its
    /// order.
    pub fn run(
        mut self,
        compiled: &CompiledGraph,
        inputs: &[(&str, &[f32])],
    ) -> Result<Vec<Vec<f32>>> {
        self.prepare(compiled)?;
        let result = self.run_prepared(compiled, inputs);
        if result.is_err() {
            // Whatever the workspace recorded before failing is not reused.
            self.prepared().graph = None;
        }
        result
    }

    fn run_prepared(
        &mut self,
        compiled: &CompiledGraph,
        inputs: &[(&str, &[f32])],
    ) -> Result<Vec<Vec<f32>>> {
        let timing = self.executor.time_ops;
        let workspace = &mut self.prepared().workspace;
        let CompiledGraph { graph, plan, .. } = compiled;
        for (name, value) in &graph.inputs {
            let data = inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| *d)
                .unwrap_or_else(|| panic!("graph input {name} not supplied"));
            debug_assert_eq!(data.len(), graph.value_sizes[*value], "input {name}");
            workspace.write(plan.slot_of[*value], data)?;
        }
        let mut in_slots = Vec::new();
        let mut out_slots = Vec::new();
        let mut times = Vec::new();
        for node in &graph.nodes {
            in_slots.clear();
            in_slots.extend(node.inputs.iter().map(|&v| plan.slot_of[v]));
            out_slots.clear();
            out_slots.extend(node.outputs.iter().map(|&v| plan.slot_of[v]));
            // The clock is read only when timing is on.
            let start = timing.then(Instant::now);
            workspace.run(&node.op, &in_slots, &out_slots)?;
            if let Some(start) = start {
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
        let outputs = workspace.read(&requests)?;
        if timing {
            *lock(&self.executor.op_times) = Some(times);
        }
        Ok(outputs)
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if let Some(prepared) = self.prepared.take() {
            lock(&self.executor.idle).push(prepared);
        }
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
        fn workspace(self: Arc<Self>) -> Box<dyn Workspace> {
            Box::new(Recording)
        }
    }

    impl Workspace for Recording {
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
        let mut executor = Executor::new(Arc::new(
            crate::backend::scalar::ScalarBackend::with_budget(
                crate::backend::memory::FALLBACK_BUDGET,
            ),
        ));
        let run = |executor: &Executor| {
            executor
                .start(&compiled)
                .run(&compiled, &[("x", &[1.0; 4])])
                .unwrap()
        };
        run(&executor);
        assert!(executor.op_times().is_none());
        executor.time_ops(true).unwrap();
        for _ in 0..2 {
            run(&executor);
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
        let mut executor = Executor::new(Arc::new(Recording));
        assert!(matches!(
            executor.time_ops(true),
            Err(Error::InvalidOption(_))
        ));
        assert!(executor.time_ops(false).is_ok());
    }
}
