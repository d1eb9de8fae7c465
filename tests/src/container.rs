//! Containers of the test environment: Silo's images, run with podman (or docker) on the
//! host network, as the install suite and an image-based simulator need them.
//!
//! ## Guarantee
//! A container is removed (`rm -f`) when its [`Container`] is dropped. Containers left by a
//! test process that died (the kernel kills the engine's client, not the container) carry
//! the dead process's id in a label and are removed by the next [`Container::run`].
//!
//! Nothing is skipped: without a container engine, or without the image, starting fails with
//! what to run.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::process::Process;

const OWNER_LABEL: &str = "dev.silo.testenv.pid";

/// The container engine to use: `$CONTAINER_ENGINE`, else podman, else docker with a
/// running daemon. Fails with what to install.
pub fn engine() -> Result<String> {
    if let Ok(engine) = std::env::var("CONTAINER_ENGINE")
        && !engine.is_empty()
    {
        return Ok(engine);
    }
    let works = |cmd: &str, arg: &str| {
        Command::new(cmd).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if works("podman", "--version") {
        return Ok("podman".into());
    }
    if works("docker", "info") {
        return Ok("docker".into());
    }
    bail!(
        "no container engine: podman is not installed and no Docker daemon answers. Run `make tools` as root \
         (it installs podman and runc), or `apt-get install -y podman runc`"
    )
}

/// Arguments that make `run` work with this engine on these machines: podman with runc.
pub fn runtime_args(engine: &str) -> Vec<&'static str> {
    if engine.ends_with("podman") { vec!["--runtime", "runc"] } else { vec![] }
}

/// Fails with what to run when `image` is not in the engine's store.
pub fn require_image(engine: &str, image: &str) -> Result<()> {
    let found = Command::new(engine)
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("run {engine}"))?;
    if !found.success() {
        bail!("the image {image} is missing from {engine}'s store: run `make image`");
    }
    Ok(())
}

/// A label of the image (`org.opencontainers.image.revision`, ...), empty when unset.
pub fn image_label(engine: &str, image: &str, label: &str) -> Result<String> {
    let out = Command::new(engine)
        .args(["image", "inspect", "--format", &format!("{{{{index .Config.Labels \"{label}\"}}}}"), image])
        .output()?;
    if !out.status.success() {
        bail!("{engine} image inspect {image}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("<no value>").to_string())
}

/// A running container.
pub struct Container {
    pub name: String,
    engine: String,
    process: Process,
}

impl Container {
    /// Runs `image` attached (its output goes to `log`), named `name`, on the host network,
    /// with `run_args` before the image and `args` after it.
    pub fn run(
        engine: &str,
        name: &str,
        image: &str,
        run_args: &[String],
        args: &[String],
        log: &Path,
    ) -> Result<Self> {
        remove_orphans(engine);
        remove(engine, name);
        let mut command = Command::new(engine);
        command
            .arg("run")
            .args(runtime_args(engine))
            .args(["--rm", "--name", name, "--network", "host"])
            .arg(format!("--label={OWNER_LABEL}={}", std::process::id()))
            .args(run_args)
            .arg(image)
            .args(args);
        let process = Process::start(name, command, log)?;
        Ok(Self { name: name.into(), engine: engine.into(), process })
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        remove(&self.engine, &self.name);
        self.process.kill();
    }
}

fn remove(engine: &str, name: &str) {
    let _ =
        Command::new(engine).args(["rm", "-f", "-t", "0", name]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Removes containers whose owning test process is gone.
fn remove_orphans(engine: &str) {
    let Ok(out) = Command::new(engine)
        .args(["ps", "-a", "--filter", &format!("label={OWNER_LABEL}")])
        .args(["--format", &format!("{{{{.Names}}}} {{{{index .Labels \"{OWNER_LABEL}\"}}}}")])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split_whitespace();
        if let (Some(name), Some(pid)) = (fields.next(), fields.next())
            && !Path::new("/proc").join(pid).exists()
        {
            remove(engine, name);
        }
    }
}
