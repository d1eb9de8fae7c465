//! Puts the git commit into `silo --version` (env SILO_GIT_COMMIT at compile time).
//!
//! A build outside a git checkout (a source tarball) may set SILO_GIT_COMMIT itself;
//! otherwise the commit reads "unknown". Cargo reruns this only when HEAD or the branch it
//! points at moves, so a commit costs a rebuild of this crate and nothing else.

use std::{path::PathBuf, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SILO_GIT_COMMIT");
    let commit = std::env::var("SILO_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        // Worktrees keep HEAD in their own git dir and the refs in the common one. Only
        // files that exist are watched: cargo reruns a script whose watched file is missing
        // on every build.
        let mut watched = vec![];
        if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
            watched.push(PathBuf::from(dir).join("HEAD"));
        }
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
            let common = PathBuf::from(common);
            watched.push(common.join("packed-refs"));
            if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watched.push(common.join(head));
            }
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=SILO_GIT_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}
