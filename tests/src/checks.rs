//! Checks that can fail.
//!
//! - [`eventually`]: a probe holds within a timeout (the first time it holds, it returns).
//! - [`consistently`]: a probe holds on every look for a whole duration; the first look that
//!   fails ends the check. It replaces "sleep, then look once", which passes when the thing
//!   happened and went away again, or when nothing could have happened at all.
//! - [`Watchdog`]: what a test relies on to keep running (in-process controller tasks,
//!   `silo run` processes). Both checks ask it on every round, so a dead controller fails the
//!   check with its cause (the panic message, the end of the process's log) instead of
//!   passing a "nothing happened" check.
//!
//! A probe is an async closure returning `bool`, `Option<T>` or `Result<T, E>` ([`Verdict`]):
//! `false`, `None` and `Err` mean "does not hold", and an `Err` says why (use
//! `anyhow::ensure!` to say what was seen).

use std::{
    future::Future,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Result, anyhow, bail};
use futures::FutureExt as _;
use tokio::{task::JoinHandle, time::Instant};

use crate::process::{Process, Watch};

/// How long the checks wait between two looks.
pub const POLL: Duration = Duration::from_millis(250);

/// How long a negative check keeps looking after the controller reached a state it should
/// stay in (Stalled, say): long enough for the reconcile that wrote that state, and the one
/// its own status write triggers, to have done anything they were going to do.
pub const AFTERWARDS: Duration = Duration::from_secs(2);

/// What a probe's answer means: holds (with a value) or not (with why).
pub trait Verdict {
    type Value;
    fn verdict(self) -> Result<Self::Value>;
}

impl Verdict for bool {
    type Value = ();
    fn verdict(self) -> Result<()> {
        if self { Ok(()) } else { bail!("the probe returned false") }
    }
}

impl<T> Verdict for Option<T> {
    type Value = T;
    fn verdict(self) -> Result<T> {
        self.ok_or_else(|| anyhow!("the probe returned None"))
    }
}

impl<T, E: Into<anyhow::Error>> Verdict for Result<T, E> {
    type Value = T;
    fn verdict(self) -> Result<T> {
        self.map_err(Into::into)
    }
}

/// Looks with `probe` until it holds, and returns its value. Fails with the probe's last
/// answer when `timeout` passes first, and at once when `alive` fails (a controller died).
pub async fn eventually<V, Fut>(
    timeout: Duration,
    alive: impl Fn() -> Result<()>,
    probe: impl FnMut() -> Fut,
) -> Result<V::Value>
where
    V: Verdict,
    Fut: Future<Output = V>,
{
    eventually_every(timeout, POLL, alive, probe).await
}

/// [`eventually`], looking every `every` instead of every [`POLL`] (for a probe that records
/// what it sees on the way, and must not miss a short state).
pub async fn eventually_every<V, Fut>(
    timeout: Duration,
    every: Duration,
    alive: impl Fn() -> Result<()>,
    mut probe: impl FnMut() -> Fut,
) -> Result<V::Value>
where
    V: Verdict,
    Fut: Future<Output = V>,
{
    let started = Instant::now();
    loop {
        alive()?;
        let last = match probe().await.verdict() {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        // A controller that died during the look is the cause, not what the probe saw.
        alive()?;
        if started.elapsed() >= timeout {
            return Err(last.context(format!("did not hold within {timeout:?}")));
        }
        tokio::time::sleep(every).await;
    }
}

/// Looks with `probe` for the whole `duration` (the first look at once, the last at or after
/// the end), and fails at the first look where it does not hold, or when `alive` fails.
pub async fn consistently<V, Fut>(
    duration: Duration,
    alive: impl Fn() -> Result<()>,
    mut probe: impl FnMut() -> Fut,
) -> Result<()>
where
    V: Verdict,
    Fut: Future<Output = V>,
{
    let started = Instant::now();
    let end = started + duration;
    loop {
        alive()?;
        if let Err(err) = probe().await.verdict() {
            alive()?;
            return Err(err.context(format!("stopped holding after {:?} of {duration:?}", started.elapsed())));
        }
        let now = Instant::now();
        if now >= end {
            return alive();
        }
        tokio::time::sleep(POLL.min(end - now)).await;
    }
}

/// What a test relies on to keep running: in-process controller tasks and `silo run`
/// processes. [`Watchdog::check`] fails, naming the cause, once any of them has ended by
/// itself; a process the test killed or dropped is no failure.
#[derive(Default)]
pub struct Watchdog {
    watched: Mutex<Vec<Watched>>,
}

enum Watched {
    Task { name: String, handle: Option<JoinHandle<()>>, ended: Option<String> },
    Process(Watch),
}

impl Watchdog {
    /// Runs `task` on the runtime, watched: its panic or its return fails every later check.
    pub fn spawn(&self, name: &str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.lock().push(Watched::Task { name: name.into(), handle: Some(handle), ended: None });
    }

    /// Watches a process the test expects to keep running until it kills or drops it.
    pub fn watch(&self, process: &Process) {
        self.lock().push(Watched::Process(process.watch()));
    }

    /// Fails if a watched task has ended (with its panic message when it panicked) or a
    /// watched process exited by itself (with the end of its log).
    pub fn check(&self) -> Result<()> {
        let mut watched = self.lock();
        for entry in watched.iter_mut() {
            match entry {
                Watched::Task { name, handle, ended } => {
                    if let Some(finished) = handle.take_if(|h| h.is_finished()) {
                        *ended = Some(match finished.now_or_never() {
                            Some(Ok(())) => "returned, though nothing asked it to stop".into(),
                            Some(Err(err)) if err.is_panic() => format!("panicked: {}", panic_message(err)),
                            Some(Err(err)) => format!("ended: {err}"),
                            None => "ended".into(),
                        });
                    }
                    if let Some(how) = ended {
                        bail!("the in-process {name} {how}");
                    }
                }
                Watched::Process(watch) => watch.check()?,
            }
        }
        Ok(())
    }

    /// Stops every watched task (processes stop when the test drops them).
    pub fn abort_all(&self) {
        for entry in self.lock().iter() {
            if let Watched::Task { handle: Some(handle), .. } = entry {
                handle.abort();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    let payload = err.into_panic();
    if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else {
        "(a panic without a message)".into()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    const SHORT: Duration = Duration::from_millis(800);

    fn fine() -> Result<()> {
        Ok(())
    }

    #[tokio::test]
    async fn eventually_returns_the_value_once_the_probe_holds() {
        let looks = AtomicUsize::new(0);
        let value = eventually(SHORT * 4, fine, || async { (looks.fetch_add(1, Ordering::SeqCst) >= 2).then_some(7) })
            .await
            .unwrap();
        assert_eq!(value, 7);
        assert_eq!(looks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn eventually_fails_with_the_probes_last_answer() {
        let err = eventually(SHORT, fine, || async {
            anyhow::ensure!(1 + 1 == 3, "saw 2");
            Ok(())
        })
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("did not hold within") && text.contains("saw 2"), "{text}");
    }

    #[tokio::test]
    async fn consistently_passes_when_the_probe_holds_throughout_and_looks_until_the_end() {
        let looks = AtomicUsize::new(0);
        let started = Instant::now();
        consistently(SHORT, fine, || async {
            looks.fetch_add(1, Ordering::SeqCst);
            true
        })
        .await
        .unwrap();
        assert!(started.elapsed() >= SHORT, "it looked for the whole duration");
        assert!(looks.load(Ordering::SeqCst) >= 3, "more than one look: {looks:?}");
    }

    #[tokio::test]
    async fn consistently_fails_at_the_first_look_that_does_not_hold() {
        let looks = AtomicUsize::new(0);
        let started = Instant::now();
        let err =
            consistently(SHORT * 10, fine, || async { looks.fetch_add(1, Ordering::SeqCst) < 2 }).await.unwrap_err();
        assert!(started.elapsed() < SHORT * 5, "failed at once, not at the end");
        assert_eq!(looks.load(Ordering::SeqCst), 3);
        assert!(format!("{err:#}").contains("stopped holding"), "{err:#}");
    }

    #[tokio::test]
    async fn a_panicking_task_fails_eventually_with_the_panic_message() {
        let watchdog = Watchdog::default();
        watchdog.spawn("controller", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("controller failed: the cache never synced");
        });
        let err = eventually(SHORT * 10, || watchdog.check(), || async { false }).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("in-process controller panicked: controller failed: the cache never synced"), "{text}");
        assert!(!text.contains("did not hold"), "the death is the cause, not the timeout: {text}");
        // And every later check says so too.
        assert!(watchdog.check().is_err());
    }

    #[tokio::test]
    async fn a_panicking_task_fails_consistently_although_the_probe_holds() {
        let watchdog = Watchdog::default();
        watchdog.spawn("controller", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("boom");
        });
        let err = consistently(SHORT * 10, || watchdog.check(), || async { true }).await.unwrap_err();
        assert!(format!("{err:#}").contains("panicked: boom"), "{err:#}");
    }

    #[tokio::test]
    async fn a_task_that_returns_fails_the_check() {
        let watchdog = Watchdog::default();
        watchdog.spawn("controller", async {});
        let err = eventually(SHORT, || watchdog.check(), || async { false }).await.unwrap_err();
        assert!(format!("{err:#}").contains("returned, though nothing asked it to stop"), "{err:#}");
    }

    #[tokio::test]
    async fn a_running_task_passes_and_an_aborted_one_is_stopped() {
        let watchdog = Watchdog::default();
        let running = Arc::new(AtomicUsize::new(0));
        let counter = running.clone();
        watchdog.spawn("controller", async move {
            loop {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        consistently(Duration::from_millis(300), || watchdog.check(), || async { true }).await.unwrap();
        assert!(running.load(Ordering::SeqCst) > 0);
        watchdog.abort_all();
    }

    #[tokio::test]
    async fn a_process_that_exits_by_itself_fails_the_check_and_a_killed_one_does_not() {
        let dir = std::env::temp_dir().join(format!("silo-checks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "echo giving up; exit 3"]);
        let quitter = Process::start("quitter", command, &dir.join("quitter.log")).unwrap();
        let mut command = std::process::Command::new("sleep");
        command.arg("60");
        let mut sleeper = Process::start("sleeper", command, &dir.join("sleeper.log")).unwrap();
        let watchdog = Watchdog::default();
        watchdog.watch(&quitter);
        watchdog.watch(&sleeper);
        let err = eventually(SHORT * 10, || watchdog.check(), || async { false }).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("quitter exited") && text.contains("giving up"), "{text}");
        drop(quitter);
        sleeper.kill();
        watchdog.check().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
