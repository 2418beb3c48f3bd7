//! Records the commit the binary is built from, for `--version` and the `build_info` metric.
//!
//! `JHUB_PROXY_COMMIT` at build time wins (container builds have no `.git`); otherwise
//! `git rev-parse --short HEAD`; otherwise `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=JHUB_PROXY_COMMIT");
    let commit = match std::env::var("JHUB_PROXY_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => {
            watch_git_head();
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=JHUB_PROXY_BUILD_COMMIT={commit}");
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout) and the branch it points at (a
/// commit). The paths come from git, because in a worktree `.git` is a file and the branch
/// lives in the main repository's git directory; a packed ref lives in `packed-refs`.
fn watch_git_head() {
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) =
        git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|r| r.starts_with("refs/"))
    {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The trimmed output of a successful git command, run in this crate's directory.
fn git(args: &[&str]) -> Option<String> {
    let output =
        Command::new("git").args(args).current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}
