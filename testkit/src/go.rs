//! Building the tools the tests need with the machine's Go: the API server, the routing
//! oracle, Traefik, Helm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Builds the Go program in `source` (relative to the workspace) with `go build` into
/// `<target dir>/<bin>`, unless the binary is newer than every `.go`, `go.mod` and `go.sum`
/// there. Returns the binary's path, or why `what` could not be built.
pub(crate) fn build_if_stale(source: &str, bin: &str, what: &str) -> Result<PathBuf, String> {
    build_if_stale_with(source, bin, what, |_| Ok(()))
}

/// [`build_if_stale`], with `prepare` adding to the `go build` command (flags, environment)
/// before it runs; it is called only when a build is needed.
pub(crate) fn build_if_stale_with(
    source: &str,
    bin: &str,
    what: &str,
    prepare: impl FnOnce(&mut Command) -> Result<(), String>,
) -> Result<PathBuf, String> {
    build_package_if_stale(source, ".", bin, what, prepare)
}

/// [`build_if_stale_with`] for `package`, a package of the module in `source` or of one it
/// requires, such as a program whose source is all in a module it pins.
pub(crate) fn build_package_if_stale(
    source: &str,
    package: &str,
    bin: &str,
    what: &str,
    prepare: impl FnOnce(&mut Command) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let source = crate::workspace_root().join(source);
    let bin = crate::target_dir().join(bin);
    std::fs::create_dir_all(bin.parent().expect("a folder"))
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let newest_source = std::fs::read_dir(&source)
        .map_err(|e| format!("{}: {e}", source.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "go" || e == "mod" || e == "sum"))
        .filter_map(|path| modified(&path))
        .max()
        .ok_or_else(|| format!("{} has no Go sources", source.display()))?;
    if modified(&bin).is_none_or(|b| b < newest_source) {
        // Build next to the binary, then rename, so another process never runs half a file.
        let name = bin.file_name().expect("a file name").to_string_lossy();
        let partial = bin.with_file_name(format!("{name}.{}.partial", std::process::id()));
        let mut go = Command::new("go");
        go.arg("build").current_dir(&source);
        prepare(&mut go)?;
        go.arg("-o").arg(&partial).arg(package);
        build(go, &format!("{what} in {}", source.display()))?;
        std::fs::rename(&partial, &bin).map_err(|e| format!("moving {what} into place: {e}"))?;
    }
    Ok(bin)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs a prepared `go` command that builds `what`. The error says why, with go's output:
/// Go missing, or the build (or the module download) failing.
pub(crate) fn build(mut command: Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run `go` to build {what} (install Go; see .ci/run): {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`go` failed to build {what} ({}; is the Go module proxy reachable? GOPROXY={:?}):\n{}{}",
        output.status,
        std::env::var("GOPROXY").unwrap_or_default(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_go_or_a_failed_build_says_what_and_why() {
        let missing = build(Command::new("/nonexistent/go"), "a tool").unwrap_err();
        assert!(missing.starts_with("cannot run `go` to build a tool (install Go"), "{missing}");

        let mut failing = Command::new("go");
        failing.args(["build", "./no-such-package"]).current_dir(std::env::temp_dir());
        let failed = build(failing, "a tool").unwrap_err();
        assert!(failed.starts_with("`go` failed to build a tool (exit status"), "{failed}");
        assert!(failed.contains("go.mod file not found"), "go's own output follows: {failed}");
    }
}
