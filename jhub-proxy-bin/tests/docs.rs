//! The documentation of the options against the binary: every option of the binary is in
//! `docs/configuration.md` with its variable and default, and nothing else is (so are
//! configurable-http-proxy's flags, and each of those the binary ignores or refuses is in the
//! table that says so); the Helm chart's `values.yaml` has every variable with the binary's
//! default, and the manifests set only variables the binary reads.

use std::collections::BTreeMap;

use clap::CommandFactory;
use jhub_proxy_bin::config::Config;
use serde_json::Value;

/// An option as documented or as the binary defines it: its variable and default.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Option_ {
    env: Option<String>,
    default: Option<String>,
}

/// Every long flag of the binary and of its subcommands, with clap's built-in `--help` and
/// `--version`.
fn binary_options() -> BTreeMap<String, Option_> {
    let mut command = Config::command();
    command.build();
    let mut options = BTreeMap::new();
    for command in std::iter::once(&command).chain(command.get_subcommands()) {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let defaults: Vec<String> =
                arg.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
            let option = Option_ {
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                default: (!defaults.is_empty()).then(|| defaults.join(",")),
            };
            if let Some(other) = options.insert(format!("--{long}"), option.clone()) {
                // Subcommands repeat `--help`; any other flag must mean one thing.
                assert_eq!(other, option, "--{long} is defined twice, differently");
            }
        }
    }
    options
}

/// The rows of a document's tables that start with a flag:
/// `` | `--flag` | `VARIABLE` | `default` | what it does | ``. A default that is not one code
/// span (such as "none: ...") means the binary has none.
fn documented_options(document: &str) -> BTreeMap<String, Option_> {
    let path = testkit::workspace_root().join(document);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{document}: {e}"));
    let code = |cell: &str| {
        let cell = cell.trim();
        (cell.len() >= 2 && cell.starts_with('`') && cell.ends_with('`') && cell.matches('`').count() == 2)
            .then(|| cell[1..cell.len() - 1].to_owned())
    };
    let mut options = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert!(cells.len() >= 4, "a row of flag, variable, default and meaning: {line}");
        let flag = code(cells[0]).unwrap_or_else(|| panic!("one flag per row: {line}"));
        let option = Option_ { env: code(cells[1]), default: code(cells[2]) };
        assert!(options.insert(flag.clone(), option).is_none(), "{flag} is documented twice");
    }
    options
}

#[test]
fn every_option_is_documented_with_its_variable_and_default_and_nothing_else() {
    let binary = binary_options();
    let documented = documented_options("docs/configuration.md");
    let mut wrong = Vec::new();
    for (flag, option) in &binary {
        match documented.get(flag) {
            None => wrong.push(format!("{flag} ({option:?}) is not in docs/configuration.md")),
            Some(doc) if doc != option => {
                wrong.push(format!("{flag}: the binary has {option:?}, docs/configuration.md {doc:?}"))
            }
            Some(_) => {}
        }
    }
    for flag in documented.keys().filter(|flag| !binary.contains_key(*flag)) {
        wrong.push(format!("{flag} is documented but the binary has no such option"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The flags of the table in `docs/configuration.md` whose header's last cell is `header`.
fn table_flags(header: &str) -> Vec<String> {
    let text = std::fs::read_to_string(testkit::workspace_root().join("docs/configuration.md")).unwrap();
    let mut lines = text.lines().skip_while(|line| !line.ends_with(&format!("| {header} |")));
    assert!(lines.next().is_some(), "no table headed {header:?} in docs/configuration.md");
    lines
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .map(|line| line.split('`').nth(1).unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn configurable_http_proxys_ignored_and_refused_flags_are_documented_as_such() {
    use jhub_proxy_bin::chp::{NOT_APPLYING, REFUSED};
    let names = |flags: &[jhub_proxy_bin::chp::Inert]| -> Vec<String> {
        flags.iter().map(|flag| format!("--{}", flag.name)).collect()
    };
    assert_eq!(table_flags("why it is ignored"), names(NOT_APPLYING));
    assert_eq!(table_flags("why it is refused"), names(REFUSED));
}

fn values() -> Value {
    let path = testkit::workspace_root().join("deploy/helm/jupyterhub-istio-proxy/values.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("values.yaml is YAML")
}

#[test]
fn the_charts_values_have_every_variable_with_the_binarys_default() {
    // The token comes from a Secret (authToken), never from a value; so not from a file either.
    let binary: BTreeMap<String, Option<String>> = binary_options()
        .into_values()
        .filter_map(|option| Some((option.env?, option.default)))
        .filter(|(env, _)| !env.starts_with("CONFIGPROXY_AUTH_TOKEN"))
        .collect();
    let values = values();
    let config: BTreeMap<String, Option<String>> = values["config"]
        .as_object()
        .expect("values.yaml has config")
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(_) | Value::Number(_) => value.to_string(),
                other => panic!("config.{name} is {other}, not a scalar"),
            };
            // An empty value leaves the variable unset: the binary's own default applies.
            (name.clone(), (!text.is_empty()).then_some(text))
        })
        .collect();
    assert_eq!(config, binary, "values.yaml's config (left) against the binary's variables and defaults");
    assert!(values["authToken"]["secretName"].is_string() && values["authToken"]["secretKey"].is_string());
}

#[test]
fn the_manifests_set_only_variables_the_binary_reads() {
    let variables: Vec<String> = binary_options().into_values().filter_map(|option| option.env).collect();
    let path = testkit::workspace_root().join("deploy/kubernetes/deployment.yaml");
    let deployment: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(!env.is_empty());
    for var in env {
        let name = var["name"].as_str().unwrap();
        assert!(
            variables.iter().any(|v| v == name),
            "deployment.yaml sets {name}, which the binary does not read"
        );
    }
}
