//! The worker threads that serve the main listener's connections: one per core, each a
//! current-thread tokio runtime pinned to its own upstream pools (`http_client::use_pool`).
//! nginx's shape (a worker process per core) rather than tokio's work-stealing pool: a
//! connection, its requests and the upstream connections they ride on are all driven by one
//! thread, so a proxied call wakes no other core (on the work-stealing pool, the answer of
//! an upstream connection driven by one worker woke the task of another, through the
//! scheduler's locks and a futex). Accepting stays on the main runtime, which hands each
//! connection to the next worker in turn; the shared state (slots, drain, caches, metrics)
//! is the same for all, so nothing else knows there are several runtimes.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use crate::http_client;

/// How long a stopping worker waits for its blocking tasks (a DNS look-up of the upstream
/// pool's connector) before its thread ends regardless.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Where connections are sent: the workers' runtimes, in turn.
#[derive(Debug)]
pub(super) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

/// What ends the workers: dropping their stop senders, then joining their threads.
#[derive(Debug)]
pub(super) struct Running {
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts one worker per upstream pool (`http_client::worker_pools`, one per core).
    pub(super) fn start() -> io::Result<(Workers, Running)> {
        let n = http_client::worker_pools();
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            next: AtomicUsize::new(0),
        };
        let mut running = Running {
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let (handle_tx, handle_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("sealgate-worker-{i}"))
                .spawn(move || {
                    let rt = match Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    http_client::use_pool(i);
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                    rt.shutdown_timeout(STOP_GRACE);
                })?;
            // Pushed first, so that an error below still stops and joins what started.
            running.stops.push(stop_tx);
            running.threads.push(thread);
            match handle_rx.recv() {
                Ok(Ok(handle)) => workers.handles.push(handle),
                Ok(Err(e)) => {
                    running.stop();
                    return Err(e);
                }
                Err(_) => {
                    running.stop();
                    return Err(io::Error::other("worker thread ended at start"));
                }
            }
        }
        Ok((workers, running))
    }

    /// Runs `task` on the next worker.
    pub(super) fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len().max(1);
        match self.handles.get(i) {
            Some(handle) => drop(handle.spawn(task)),
            // Not reached: `start` makes at least one worker or fails.
            None => drop(tokio::spawn(task)),
        }
    }
}

impl Running {
    /// Ends every worker (the tasks still on them are dropped, which closes their sockets)
    /// and waits for their threads.
    pub(super) fn stop(self) {
        drop(self.stops);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
