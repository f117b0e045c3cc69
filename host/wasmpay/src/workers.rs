//! A fixed pool of long-lived threads for the blocking work of the prepare
//! stage: plugin calls, the ledger reads around them, and upload compiles.
//!
//! Why not `tokio::task::spawn_blocking` behind a semaphore, as before: every
//! call then paid an async semaphore acquire plus a hop into tokio's shared
//! blocking pool, whose threads come and go (and with them each thread's
//! ledger read connection). Here exactly `count` threads live as long as the
//! daemon, each keeps its own read connection warm, and a job costs one
//! channel send and one wake-up. The queue needs no bound of its own: every
//! job belongs to a message in flight, and intake already bounds those by
//! `broker.inflight_messages_max`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Native stack of a worker thread beyond the plugin's own wasm stack: room
/// for the host's frames around the call (tokio gives its blocking threads
/// 2 MiB in all).
const HOST_STACK_BYTES: usize = 2 * 1024 * 1024;

/// Threads that run blocking work, at most `count` jobs at once, in the
/// order submitted.
#[derive(Debug)]
pub struct Workers {
    queue: mpsc::Sender<Job>,
}

impl Workers {
    /// Starts `count` threads whose native stacks hold `wasm_stack_bytes` of
    /// plugin stack on top of the host's own frames. The threads end when
    /// the pool is dropped and the queue is empty.
    pub fn start(count: usize, wasm_stack_bytes: usize) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for index in 0..count.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("plugin-worker-{index}"))
                .stack_size(HOST_STACK_BYTES + wasm_stack_bytes)
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next
                        // job, never while running one.
                        let job = match jobs.lock() {
                            Ok(jobs) => jobs.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { queue })
    }

    /// Runs `work` on a worker thread and waits for its result. A panic in
    /// `work` is caught and reported as an error; the thread lives on.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(work)));
        });
        self.queue
            .send(job)
            .map_err(|_| "the plugin workers stopped".to_owned())?;
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(format!("worker failed: {}", panic_text(&*panic))),
            Err(_) => Err("the plugin workers stopped".to_owned()),
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pool_threads_and_a_panic_is_an_error() {
        let workers = Workers::start(2, 512 * 1024).unwrap();
        let name = workers
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("plugin-worker-"));
        let failed = workers.run(|| -> u32 { panic!("boom") }).await;
        assert_eq!(failed.unwrap_err(), "worker failed: boom");
        // Both threads still serve after the panic.
        let sums = futures::future::join_all((0..8u32).map(|i| workers.run(move || i * 2))).await;
        let sums: Vec<u32> = sums.into_iter().map(Result::unwrap).collect();
        assert_eq!(sums, (0..8).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn at_most_count_jobs_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let workers = Workers::start(2, 512 * 1024).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs = (0..16).map(|_| {
            let (running, peak) = (running.clone(), peak.clone());
            workers.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        futures::future::join_all(jobs).await;
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&peak),
            "{peak} jobs ran at once on 2 workers"
        );
    }
}
