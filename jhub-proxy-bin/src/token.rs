//! The token JupyterHub sends: given as a value (`--auth-token`), or read from a file
//! (`--auth-token-file`, a mounted Secret) and read again every [`FILE_POLL`], so that a rotated
//! Secret is taken without a restart.
//!
//! Kubernetes updates a mounted Secret by writing a new folder and swapping the `..data`
//! symlink the file's own symlink goes through; the file is read by its path each time, so
//! the swap is seen like any other change. A read that fails (the file gone, empty, unreadable,
//! or holding no valid token) keeps the last good token, logs a warning once per kind of
//! failure, and counts in `auth_token_reloads_total{outcome}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::metrics::AuthMetrics;
use crate::{Error, Result};

/// How often the token file is read again. Reading a few bytes a second costs nothing, and the
/// kubelet takes up to a minute to update a mounted Secret anyway.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// One token, kept as its SHA-256 digest: comparing two digests of the same length in constant
/// time tells an attacker neither where a guess went wrong nor how long the token is.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    /// The token `token`.
    pub fn new(token: &str) -> Token {
        Token { digest: Sha256::digest(token.as_bytes()).into() }
    }

    /// Whether `presented` is this token, in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The token in force now, shared by every connection; a file's reader replaces it.
#[derive(Debug, Clone)]
pub struct Tokens(watch::Receiver<Token>);

impl Tokens {
    /// Always `token`.
    pub fn fixed(token: &str) -> Tokens {
        Tokens(watch::channel(Token::new(token)).1)
    }

    /// The token in `path`, read now (an error names what is wrong with the file) and again
    /// every `poll` for as long as a clone of the result lives. Needs a tokio runtime.
    pub fn from_file(path: &Path, poll: Duration, metrics: AuthMetrics) -> Result<Tokens> {
        let token = read(path)?;
        let (sender, receiver) = watch::channel(token);
        tokio::spawn(reread(path.to_owned(), poll, sender, metrics));
        Ok(Tokens(receiver))
    }

    /// Whether `presented` is the token in force, in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.borrow().matches(presented)
    }
}

/// What can be wrong with a token file, as a metric label and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileProblem {
    /// There is no file at the path (or a dangling symlink).
    Missing,
    /// The file exists but cannot be read: permissions, a folder, an I/O error.
    Unreadable,
    /// The file holds nothing but white space.
    Empty,
    /// The file holds white space inside the token, or bytes that are not UTF-8 text: nothing
    /// an `Authorization` header carries as one token.
    Invalid,
}

impl FileProblem {
    /// The problem as the `outcome` label of `auth_token_reloads_total`.
    pub fn label(self) -> &'static str {
        match self {
            FileProblem::Missing => "missing",
            FileProblem::Unreadable => "unreadable",
            FileProblem::Empty => "empty",
            FileProblem::Invalid => "invalid",
        }
    }
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileProblem::Missing => "does not exist",
            FileProblem::Unreadable => "cannot be read",
            FileProblem::Empty => "is empty; JupyterHub's proxy token is required",
            FileProblem::Invalid => {
                "does not hold one token: it has white space inside, or is not UTF-8 text"
            }
        })
    }
}

/// The token in the file at `path`. White space around it is dropped: `kubectl create secret
/// --from-file` and editors leave a final newline.
fn read(path: &Path) -> Result<Token> {
    let error = |problem, source| Error::TokenFile { path: path.to_owned(), problem, source };
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => error(FileProblem::Missing, Some(source)),
        _ => error(FileProblem::Unreadable, Some(source)),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| error(FileProblem::Invalid, None))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(error(FileProblem::Empty, None));
    }
    if token.chars().any(char::is_whitespace) {
        return Err(error(FileProblem::Invalid, None));
    }
    Ok(Token::new(token))
}

/// Reads `path` every `poll` and sends each new token, until no [`Tokens`] is left.
async fn reread(path: PathBuf, poll: Duration, sender: watch::Sender<Token>, metrics: AuthMetrics) {
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut failing = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = sender.closed() => return,
        }
        match read(&path) {
            Ok(token) => {
                if failing.take().is_some() {
                    tracing::info!(path = %path.display(), "the auth token file is readable again");
                }
                if *sender.borrow() != token {
                    sender.send_replace(token);
                    metrics.token_reloaded("rotated");
                    tracing::info!(path = %path.display(), "the auth token file changed: the new token is in force");
                }
            }
            Err(error) => {
                let problem = match &error {
                    Error::TokenFile { problem, .. } => *problem,
                    _ => FileProblem::Unreadable,
                };
                metrics.token_reloaded(problem.label());
                // Once per kind of failure: the file is read every second.
                if failing.replace(problem) != Some(problem) {
                    let cause = std::error::Error::source(&error).map(ToString::to_string);
                    tracing::warn!(%error, cause, "the last good auth token stays in force");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only() {
        let token = Token::new("s3cret");
        assert!(token.matches(b"s3cret"));
        for wrong in [&b"s3cre"[..], b"s3cret ", b"S3cret", b"", b"s3cret-and-more"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    fn problem(path: &Path) -> FileProblem {
        match read(path) {
            Err(Error::TokenFile { problem, .. }) => problem,
            other => panic!("{path:?}: {other:?}"),
        }
    }

    #[test]
    fn a_file_gives_its_token_without_the_surrounding_white_space_or_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert!(read(&file).unwrap().matches(b"s3cret"));
        assert_eq!(problem(&dir.path().join("absent")), FileProblem::Missing);
        assert_eq!(problem(dir.path()), FileProblem::Unreadable);
        std::fs::write(&file, " \n").unwrap();
        assert_eq!(problem(&file), FileProblem::Empty);
        std::fs::write(&file, "two words").unwrap();
        assert_eq!(problem(&file), FileProblem::Invalid);
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(problem(&file), FileProblem::Invalid);
        let message = read(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(message.starts_with("--auth-token-file (env CONFIGPROXY_AUTH_TOKEN_FILE) "), "{message}");
        assert!(message.ends_with("absent does not exist"), "{message}");
    }
}
