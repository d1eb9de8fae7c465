//! Child processes of the test environment: started with their output in a log file, and
//! stopped by process id.
//!
//! ## Guarantee
//! Every process is stopped when its [`Process`] is dropped, and also when the process that
//! started it dies, however it dies: children are spawned from one thread that lives as long
//! as the test process, with `PR_SET_PDEATHSIG` set to SIGKILL (Linux delivers it when the
//! spawning *thread* exits, so spawning from short-lived test threads would kill them early).

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
        mpsc::{Sender, channel},
    },
};

use anyhow::{Context as _, Result, bail};

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

/// The long-lived thread that spawns every child.
fn spawner() -> &'static std::sync::Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<std::sync::Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel never closes while the process lives; park to keep children alive.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the spawner thread");
        std::sync::Mutex::new(tx)
    })
}

/// A running child process.
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    state: Arc<State>,
}

/// What a [`Process`] shares with those who watch it ([`crate::checks::Watchdog`]).
struct State {
    name: String,
    log: PathBuf,
    child: Mutex<Child>,
    /// Set when the test stops the process itself: its end is then no failure.
    stopped: AtomicBool,
}

/// A weak hold on a [`Process`]: tells whether it ended by itself, and lapses when the test
/// kills or drops the process.
#[derive(Clone)]
pub struct Watch(Weak<State>);

impl Watch {
    /// Fails with the end of the log if the process exited without the test stopping it.
    /// A process the test killed or dropped is no failure.
    pub fn check(&self) -> Result<()> {
        match self.0.upgrade() {
            Some(state) if !state.stopped.load(Ordering::SeqCst) => state.check_running(),
            _ => Ok(()),
        }
    }
}

impl State {
    fn check_running(&self) -> Result<()> {
        let status = self.child.lock().unwrap_or_else(PoisonError::into_inner).try_wait()?;
        if let Some(status) = status
            && !self.stopped.load(Ordering::SeqCst)
        {
            bail!("{} exited ({status}); last lines of {}:\n{}", self.name, self.log.display(), tail(&self.log, 30));
        }
        Ok(())
    }
}

impl Process {
    /// Starts `command`, with stdout and stderr appended to `log`.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out =
            File::options().create(true).append(true).open(log).with_context(|| format!("open {}", log.display()))?;
        command.stdout(out.try_clone()?).stderr(out).stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = channel();
        spawner().lock().expect("spawner lock").send((command, tx)).context("spawner thread is gone")?;
        let child = rx.recv().context("spawner thread is gone")?.with_context(|| format!("start {name}"))?;
        let state = Arc::new(State {
            name: name.into(),
            log: log.into(),
            child: Mutex::new(child),
            stopped: AtomicBool::new(false),
        });
        Ok(Self { name: name.into(), log: log.into(), state })
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.state.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hold on this process for a [`crate::checks::Watchdog`].
    pub fn watch(&self) -> Watch {
        Watch(Arc::downgrade(&self.state))
    }

    /// Fails with the end of the log if the process has exited (unless the test killed it).
    pub fn check_running(&self) -> Result<()> {
        self.state.check_running()
    }

    /// Waits up to `timeout` for the process to exit by itself, and returns its status.
    pub async fn wait_exit(&mut self, timeout: std::time::Duration) -> Result<std::process::ExitStatus> {
        let every = std::time::Duration::from_millis(100);
        crate::checks::eventually_every(
            timeout,
            every,
            || Ok(()),
            || async { self.child().try_wait()?.context("still running") },
        )
        .await
        .with_context(|| {
            format!("{} still runs; last lines of {}:\n{}", self.name, self.log.display(), tail(&self.log, 30))
        })
    }

    /// Sends SIGKILL and reaps the process. Its end is the test's doing: no failure.
    pub fn kill(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `probe` until it yields a value. Fails with the end of the process's log if the
/// process exits first or `timeout` passes.
pub async fn wait_until<T, Fut>(
    process: &mut Process,
    what: &str,
    timeout: std::time::Duration,
    probe: impl FnMut() -> Fut,
) -> Result<T>
where
    Fut: Future<Output = Option<T>>,
{
    let every = std::time::Duration::from_millis(100);
    let process = &*process;
    match crate::checks::eventually_every(timeout, every, || process.check_running(), probe).await {
        Ok(value) => Ok(value),
        Err(err) if process.check_running().is_err() => Err(err),
        Err(_) => {
            bail!("{what} within {timeout:?}; last lines of {}:\n{}", process.log.display(), tail(&process.log, 30))
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (released before use; the window for a race is tiny).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
