//! A Python virtualenv with JupyterHub from PyPI, made once and reused.
//!
//! The venv lives in `<cargo target dir>/testkit/venv`, so a CI that keeps its target dir keeps
//! the venv too, and is rebuilt when `testkit/python/requirements.txt` changes.
//! `TESTKIT_PYTHON` names an interpreter to use instead (one that already has the requirements).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The folder of the Python scripts that drive the proxy.
pub fn scripts_dir() -> PathBuf {
    crate::workspace_root().join("testkit/python")
}

/// The Python interpreter of a venv that has JupyterHub, making the venv when needed. Panics,
/// with pip's output, when it cannot be made: tests that need JupyterHub never skip silently.
pub fn jupyterhub_python() -> PathBuf {
    if let Some(python) = std::env::var_os("TESTKIT_PYTHON") {
        return PathBuf::from(python);
    }
    // Tests of one binary run on threads; let one of them build the venv.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _guard = BUILDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);

    let requirements_path = scripts_dir().join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path).expect("testkit/python/requirements.txt");
    let venv = target_dir().join("testkit/venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == requirements) && python.exists() {
        return python;
    }
    let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&system_python).args(["-m", "venv", "--clear"]).arg(&venv));
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements_path));
    std::fs::write(&stamp, requirements).expect("write the venv stamp");
    python
}

/// The cargo target dir this test binary was built into (`<target>/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| crate::workspace_root().join("target"))
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a script from [`scripts_dir`] with the JupyterHub venv, returning its exit status and
/// combined output.
pub fn run_script(script: &str, args: &[&str]) -> (bool, String) {
    let python = jupyterhub_python();
    let output = Command::new(&python)
        .arg(Path::new(&scripts_dir()).join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script} with {}: {e}", python.display()));
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}
