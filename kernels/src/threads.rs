//! A small persistent thread pool: kernels split their work into numbered tasks and the
//! pool's threads (the caller included) take tasks from a shared counter.
//!
//! Work is split the same way for any thread count, so results never depend on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The job in flight: a borrowed closure whose lifetime `run` guarantees.
struct Job {
    /// Erased `&(dyn Fn(usize) + Sync)`; valid until `run` sees every task finished.
    task: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

// SAFETY: the pointer is only dereferenced while `run` keeps the closure alive, and the
// closure is `Sync`, so sharing it between threads is sound.
unsafe impl Send for Job {}

struct State {
    /// Bumped for every job, so sleeping workers know a new one arrived.
    generation: u64,
    job: Option<Job>,
    /// Workers inside the current job; `run` waits for them to leave before returning.
    active: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    next_task: AtomicUsize,
    finished_tasks: AtomicUsize,
    done: Condvar,
}

/// A fixed set of worker threads; `threads()` counts the caller too.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    busy: Mutex<()>,
}

impl ThreadPool {
    /// A pool in which `threads` threads (the caller and `threads - 1` workers) run tasks.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { generation: 0, job: None, active: 0, shutdown: false }),
            wake: Condvar::new(),
            next_task: AtomicUsize::new(0),
            finished_tasks: AtomicUsize::new(0),
            done: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("vitmsn-worker-{i}"))
                    .spawn(move || worker_loop(&shared))
                    .expect("spawning a worker thread")
            })
            .collect();
        Self { shared, workers, busy: Mutex::new(()) }
    }

    /// Threads that run tasks, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(0..tasks)` across the pool and returns when all have finished.
    pub fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.workers.is_empty() || tasks == 1 {
            (0..tasks).for_each(task);
            return;
        }
        let _one_job = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        shared.next_task.store(0, Ordering::Relaxed);
        shared.finished_tasks.store(0, Ordering::Relaxed);
        {
            let mut state = shared.state.lock().unwrap();
            // SAFETY: erases the closure's lifetime; this function does not return before
            // every task has finished and the job has been taken down again.
            let task: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
            state.job = Some(Job { task, tasks });
            state.generation += 1;
        }
        shared.wake.notify_all();
        take_tasks(shared, task, tasks);
        let mut state = shared.state.lock().unwrap();
        while shared.finished_tasks.load(Ordering::Acquire) < tasks || state.active > 0 {
            state = shared.done.wait(state).unwrap();
        }
        state.job = None;
    }
}

/// Takes tasks from the shared counter until none are left.
fn take_tasks(shared: &Shared, task: &(dyn Fn(usize) + Sync), tasks: usize) {
    loop {
        let i = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= tasks {
            return;
        }
        task(i);
        if shared.finished_tasks.fetch_add(1, Ordering::AcqRel) + 1 == tasks {
            let _state = shared.state.lock().unwrap();
            shared.done.notify_all();
        }
    }
}

fn worker_loop(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let (task, tasks) = {
            let mut state = shared.state.lock().unwrap();
            loop {
                if state.shutdown {
                    return;
                }
                if state.generation != seen {
                    if let Some(job) = &state.job {
                        seen = state.generation;
                        let taken = (job.task, job.tasks);
                        state.active += 1;
                        break taken;
                    }
                }
                state = shared.wake.wait(state).unwrap();
            }
        };
        // SAFETY: this worker counted itself active while the job was posted, and `run`
        // keeps the closure alive until no worker is active.
        take_tasks(shared, unsafe { &*task }, tasks);
        shared.state.lock().unwrap().active -= 1;
        shared.done.notify_all();
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().shutdown = true;
        self.shared.wake.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in 1..4 {
            let pool = ThreadPool::new(threads);
            for tasks in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }
}
