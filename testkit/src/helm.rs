//! Helm, to render the chart in `deploy/helm` as a cluster would get it.
//!
//! Built once with the machine's `go` from the Go module proxy (`go install
//! helm.sh/helm/v3/cmd/helm@<VERSION>`, or by CI beforehand) into
//! `<cargo target dir>/testkit-helm/helm`, and reused while the stamp next to it names that
//! version. When it cannot be built, the test panics with why: these tests never skip.
//!
//! ```no_run
//! let yaml = testkit::helm::template("deploy/helm/jupyterhub-istio-proxy".as_ref(), "jhub", &[]);
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Helm release built and used.
pub const VERSION: &str = "v3.22.0";

/// Builds Helm if the cached binary is missing or another version, once per process. Returns
/// its path. Panics, with go's output, when it cannot be built.
pub fn build() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_if_stale).clone()
}

fn build_if_stale() -> PathBuf {
    let dir = crate::target_dir().join("testkit-helm");
    let bin = dir.join("helm");
    // Helm built with `go install` reports only `v3.22`, so a stamp says which release it is.
    let stamp = dir.join("helm.version");
    let current = std::fs::read_to_string(&stamp).is_ok_and(|v| v.trim() == VERSION) && runs(&bin);
    if !current {
        // Install into a folder of our own, then rename, so another process never runs half a file.
        let partial = dir.join(format!("partial-{}", std::process::id()));
        // `go install` makes GOBIN itself.
        let mut go = Command::new("go");
        go.args(["install", &format!("helm.sh/helm/v3/cmd/helm@{VERSION}")]).env("GOBIN", &partial);
        if let Err(e) =
            crate::go::build(go, &format!("Helm {VERSION}, which the tests need to render the chart"))
        {
            let _ = std::fs::remove_dir_all(&partial);
            panic!("{e}");
        }
        std::fs::rename(partial.join("helm"), &bin).expect("moving the built Helm into place");
        let _ = std::fs::remove_dir(&partial);
        assert!(runs(&bin), "the Helm just built at {} does not run", bin.display());
        std::fs::write(&stamp, VERSION).expect("the stamp of the built Helm");
    }
    bin
}

/// Whether `helm version` runs.
fn runs(bin: &Path) -> bool {
    Command::new(bin).arg("version").output().is_ok_and(|o| o.status.success())
}

/// `helm template` of the chart at `chart` into `namespace`, with `--set` values such as
/// `config.HOST_ROUTING=true`: the rendered YAML documents. Panics with Helm's output when it
/// fails.
pub fn template(chart: &Path, namespace: &str, set: &[&str]) -> String {
    let mut args = vec!["template", "release", path_str(chart), "--namespace", namespace];
    for value in set {
        args.extend(["--set", value]);
    }
    run(&args)
}

/// `helm lint --strict` of the chart at `chart`: its output. Panics with it when it fails.
pub fn lint(chart: &Path) -> String {
    run(&["lint", "--strict", path_str(chart)])
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Runs Helm with `args`; its standard output. Panics with its output when it fails.
pub fn run(args: &[&str]) -> String {
    let helm = build();
    // Helm's caches and settings go under the target dir, never the user's home.
    let home = crate::target_dir().join("testkit-helm/home");
    let mut command = Command::new(&helm);
    command.args(args);
    for (var, sub) in
        [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")]
    {
        command.env(var, home.join(sub));
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", helm.display()));
    if !output.status.success() {
        panic!(
            "`helm {}` failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).expect("Helm writes UTF-8")
}
