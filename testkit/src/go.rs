//! Building the tools the tests need with the machine's Go: the API server, Helm.

use std::process::Command;

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
