//! A small persistent thread pool: kernels split their work into numbered tasks and the
//! pool's threads (the caller included) take tasks from a shared counter.
//!
//! How a kernel cuts its work may follow the thread count, but each output element is
//! computed the same way whichever task or thread computes it, so results never depend on
//! the thread count.
//!
//! A forward pass posts about a hundred jobs in quick succession. Waking a thread parked
//! on a condition variable costs tens of microseconds once its core has gone idle, so idle
//! workers and a waiting caller first spin on an atomic for a short while and park only
//! after it.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a thread spins waiting for a job, or for a job to finish, before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// The job in flight: a borrowed closure whose lifetime `run` guarantees.
#[derive(Clone, Copy)]
struct Job {
    /// Erased `&(dyn Fn(usize) + Sync)`; valid until `run` sees every worker leave.
    task: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

// SAFETY: the pointer is only dereferenced while `run` keeps the closure alive, and the
// closure is `Sync`, so sharing it between threads is sound.
unsafe impl Send for Job {}

struct State {
    /// The job workers may still join; `run` withdraws it once every task is taken.
    job: Option<Job>,
    /// Workers parked on `wake`.
    parked: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    /// Bumped under the lock for every job posted and at shutdown; workers spin on it.
    epoch: AtomicU64,
    next_task: AtomicUsize,
    /// Workers that joined the current job and have not left it yet.
    inside: AtomicUsize,
    /// A task panicked on a worker: `run` panics in turn rather than return half done.
    worker_panicked: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`ThreadPool::split_rows`] runs on each block of rows: `f(first_row, block)`.
pub type RowBlockFn<'a, T = f32> = dyn Fn(usize, &mut [T]) + Sync + 'a;

/// A fixed set of worker threads; `threads()` counts the caller too.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    busy: Mutex<()>,
}

impl ThreadPool {
    /// A pool in which `threads` threads (the caller and `threads - 1` workers) run tasks.
    /// Panics if a worker thread cannot be started; [`try_new`](Self::try_new) returns that
    /// error instead.
    pub fn new(threads: usize) -> Self {
        Self::try_new(threads).expect("spawning a worker thread")
    }

    /// As [`new`](Self::new), but a worker that the system refuses to start (a thread or
    /// memory limit) is an error, and the workers already started are stopped.
    pub fn try_new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                parked: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            epoch: AtomicU64::new(0),
            next_task: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            worker_panicked: AtomicBool::new(false),
        });
        let mut pool = Self {
            shared,
            workers: Vec::with_capacity(threads.saturating_sub(1)),
            busy: Mutex::new(()),
        };
        for i in 1..threads.max(1) {
            let shared = pool.shared.clone();
            let worker = std::thread::Builder::new()
                .name(format!("vitmsn-worker-{i}"))
                .spawn(move || worker_loop(&shared))?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Threads that run tasks, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Cuts `out` into one block of whole `row_len`-element rows per thread and runs
    /// `f(first_row, block)` on each across the pool: for ops that only move data, which
    /// memory bandwidth bounds, so larger blocks than one thread's share gain nothing.
    pub fn split_rows<T: Send>(&self, out: &mut [T], row_len: usize, f: &RowBlockFn<T>) {
        let rows = out.len() / row_len.max(1);
        assert_eq!(rows * row_len, out.len(), "out is not whole rows");
        let blocks = self.threads().min(rows);
        let out = DisjointMut::new(out);
        self.run(blocks, &|block| {
            let (first, end) = (block * rows / blocks, (block + 1) * rows / blocks);
            // SAFETY: the blocks are disjoint ranges of rows.
            f(first, unsafe {
                out.piece(first * row_len, (end - first) * row_len)
            });
        });
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
        shared.worker_panicked.store(false, Ordering::Relaxed);
        {
            let mut state = shared.lock();
            // SAFETY: erases the closure's lifetime; this function does not return before
            // the job is withdrawn and every worker that joined it has left.
            let task: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
            state.job = Some(Job { task, tasks });
            shared.epoch.fetch_add(1, Ordering::Release);
            if state.parked > 0 {
                shared.wake.notify_all();
            }
        }
        {
            let _withdraw = WithdrawOnExit(shared);
            take_tasks(shared, task, tasks);
        }
        if shared.worker_panicked.swap(false, Ordering::Relaxed) {
            panic!("a task panicked on a worker thread");
        }
    }
}

/// Withdraws the posted job and waits for the workers inside it to leave, when `run`
/// returns and also when a task panics on the calling thread: the job's closure must
/// outlive every worker's use of it.
struct WithdrawOnExit<'a>(&'a Shared);

impl Drop for WithdrawOnExit<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared.lock().job = None;
        let start = Instant::now();
        while shared.inside.load(Ordering::Acquire) > 0 && start.elapsed() < SPIN {
            spin_a_little();
        }
        let mut state = shared.lock();
        while shared.inside.load(Ordering::Acquire) > 0 {
            state = shared.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
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
    }
}

fn spin_a_little() {
    for _ in 0..32 {
        std::hint::spin_loop();
    }
}

fn worker_loop(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        while shared.epoch.load(Ordering::Acquire) == seen && start.elapsed() < SPIN {
            spin_a_little();
        }
        let job = {
            let mut state = shared.lock();
            loop {
                if state.shutdown {
                    return;
                }
                let epoch = shared.epoch.load(Ordering::Relaxed);
                if epoch != seen {
                    seen = epoch;
                    // Joining under the lock, while the job is posted, is what lets `run`
                    // know that every worker using its closure is counted in `inside`.
                    if state.job.is_some() {
                        shared.inside.fetch_add(1, Ordering::Relaxed);
                    }
                    break state.job;
                }
                state.parked += 1;
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                state.parked -= 1;
            }
        };
        let Some(Job { task, tasks }) = job else {
            continue;
        };
        // SAFETY: this worker counted itself inside while the job was posted, and `run`
        // keeps the closure alive until no worker is inside.
        let task = unsafe { &*task };
        if catch_unwind(AssertUnwindSafe(|| take_tasks(shared, task, tasks))).is_err() {
            shared.worker_panicked.store(true, Ordering::Relaxed);
        }
        if shared.inside.fetch_sub(1, Ordering::Release) == 1 {
            // Taking the lock orders this notification after `run`'s check under it.
            let _state = shared.lock();
            shared.done.notify_all();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.shutdown = true;
            self.shared.epoch.fetch_add(1, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Lets pool tasks write disjoint parts of one output slice.
/// A mutable slice that several threads may carve into non-overlapping pieces.
pub(crate) struct DisjointMut<'a, T = f32> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: `piece` hands out raw views whose disjointness its callers guarantee, and the
// elements may be sent to the threads that write them.
unsafe impl<T: Send> Sync for DisjointMut<'_, T> {}

impl<'a, T> DisjointMut<'a, T> {
    pub(crate) fn new(slice: &'a mut [T]) -> Self {
        Self {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// No two pieces alive at the same time may overlap.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn piece(&self, offset: usize, len: usize) -> &mut [T] {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "piece out of bounds"
        );
        // SAFETY: in bounds of the borrowed slice (checked above), and the caller keeps
        // live pieces disjoint, so this is the only reference to these elements.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
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

    #[test]
    fn split_rows_covers_every_row_once() {
        for threads in 1..4 {
            let pool = ThreadPool::new(threads);
            for (rows, row_len) in [(0, 3), (1, 5), (2, 1), (7, 4), (197, 16)] {
                let mut out = vec![0.0f32; rows * row_len];
                pool.split_rows(&mut out, row_len, &|first, block| {
                    for (r, row) in block.chunks_exact_mut(row_len).enumerate() {
                        row.iter_mut().for_each(|v| *v += (first + r) as f32);
                    }
                });
                let expected: Vec<f32> =
                    (0..rows * row_len).map(|i| (i / row_len) as f32).collect();
                assert_eq!(out, expected, "{threads} threads, {rows}×{row_len}");
            }
        }
    }

    #[test]
    fn a_panicking_task_panics_run_and_spares_the_pool() {
        let pool = ThreadPool::new(2);
        for _ in 0..20 {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                pool.run(8, &|i| {
                    if i == 5 {
                        panic!("task 5");
                    }
                })
            }));
            assert!(outcome.is_err());
        }
        let hits = AtomicUsize::new(0);
        pool.run(8, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn jobs_after_the_workers_park_still_run() {
        let pool = ThreadPool::new(3);
        for _ in 0..3 {
            std::thread::sleep(SPIN * 3);
            let hits = AtomicUsize::new(0);
            pool.run(50, &|_| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 50);
        }
    }
}
