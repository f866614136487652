//! Who may do what on the admin API: bearer tokens with roles, and secrets read from files.
//!
//! Three roles, each holding the rights of those before it:
//! - `read-only`: every read (`GET`), but not `/backup` (a copy of the whole image);
//! - `operator`: also proposes change sets as the operator, approves and rejects pending
//!   proposals, sets the SON policy (exclusions, approval) and tuning;
//! - `admin`: also membership and leadership, imports, snapshots and backups.
//!
//! The node's main token (`SONRAFT_TOKEN` or `token_file`) is an admin token, as the single
//! token was before roles; a tokens file adds more, one `ROLE TOKEN` a line. Secrets never come
//! from the command line, where every user of the machine can read them (`ps`): only from the
//! environment or from files.

use std::path::Path;

use anyhow::{Context, bail};
use axum::http::Method;

/// A token's rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    ReadOnly,
    Operator,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "read-only" | "readonly" | "read" => Some(Role::ReadOnly),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The role a route needs, by method and path template (see [`crate::api::ROUTES`]); `None`
/// for the open routes (health and metrics for probes and scrapers). A route not named here
/// needs `read-only` for a `GET` and `admin` for anything else, so a new write is closed until
/// it is given a role.
pub fn required_role(method: &Method, template: &str) -> Option<Role> {
    match (method.as_str(), template) {
        // The web view's page and assets hold no data (it asks for a token, then reads with
        // it): see `crate::api::ui`.
        (_, "/health" | "/readyz" | "/metrics") | ("GET", "/ui" | "/ui/app.js" | "/ui/app.css") => {
            None
        }
        ("GET", "/backup") => Some(Role::Admin),
        ("POST", "/image/changesets")
        | ("POST", "/son/pending/{id}/approve" | "/son/pending/{id}/reject")
        | ("PUT", "/son/policy" | "/son/tuning") => Some(Role::Operator),
        ("GET", _) => Some(Role::ReadOnly),
        _ => Some(Role::Admin),
    }
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 8;

/// The admin API's tokens and their roles.
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: Vec<(String, Role)>,
}

/// Roles only, never a token (see [`crate::config::Secret`]).
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|(_, role)| role))
            .finish()
    }
}

impl Tokens {
    /// The main token, an admin's.
    pub fn new(admin: String) -> Tokens {
        Tokens {
            tokens: vec![(admin, Role::Admin)],
        }
    }

    /// Adds the tokens of a tokens file's text: one `ROLE TOKEN` a line; blank lines and
    /// lines starting with `#` are skipped. `origin` names the file in errors, which never
    /// quote a token.
    pub fn add_lines(&mut self, text: &str, origin: &str) -> anyhow::Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{origin} line {}", n + 1);
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                bail!(
                    "{}: expected `ROLE TOKEN` (ROLE is read-only, operator or admin)",
                    at()
                );
            };
            let Some(role) = Role::parse(role) else {
                bail!(
                    "{}: unknown role {role:?} (read-only, operator or admin)",
                    at()
                );
            };
            if token.len() < MIN_TOKEN_LEN {
                bail!(
                    "{}: a token must be at least {MIN_TOKEN_LEN} characters",
                    at()
                );
            }
            if let Some((_, other)) = self.tokens.iter().find(|(t, _)| t == token) {
                if *other != role {
                    bail!(
                        "{}: this token is already given the role {}",
                        at(),
                        other.name()
                    );
                }
                continue;
            }
            self.tokens.push((token.to_string(), role));
        }
        Ok(())
    }

    /// The role of the token presented, if it is one of ours. Every token is compared in full,
    /// in time independent of where a wrong one differs.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (token, role) in &self.tokens {
            if same(presented.as_bytes(), token.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }

    /// How many tokens of each role, for the start-up log.
    pub fn counts(&self) -> [(Role, usize); 3] {
        [Role::ReadOnly, Role::Operator, Role::Admin]
            .map(|r| (r, self.tokens.iter().filter(|(_, x)| *x == r).count()))
    }
}

/// Compares secrets without stopping at the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A secret kept in a file: its content without surrounding white space (a trailing newline is
/// what editors and `echo` leave). An empty file is an error, as is a file other users may read
/// (a warning would be lost in the log; the fix is one `chmod`).
pub fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    check_private(path, what)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    if secret.lines().count() > 1 {
        bail!(
            "the {what} file {} holds more than one line; it must hold the {what} alone",
            path.display()
        );
    }
    Ok(secret.to_string())
}

/// Reads a tokens file (see [`Tokens::add_lines`]) into `tokens`.
pub fn read_tokens_file(path: &Path, tokens: &mut Tokens) -> anyhow::Result<()> {
    check_private(path, "tokens")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
    tokens.add_lines(&text, &path.display().to_string())
}

#[cfg(unix)]
fn check_private(path: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    // systemd hands credentials over root-owned, mode 0400, with an ACL that lets the service
    // user read them: `stat` then shows the ACL's mask as group read (0440). There, only
    // others' bits and group write mean another user can reach the secret.
    let in_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|dir| !dir.is_empty() && path.starts_with(dir));
    let forbidden = if in_credentials { 0o027 } else { 0o077 };
    if meta.permissions().mode() & forbidden != 0 {
        bail!(
            "the {what} file {} may be read by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _what: &str) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_the_role_the_readme_gives_it() {
        let mut table = Vec::new();
        for r in crate::api::ROUTES.iter() {
            let role = required_role(&r.method, r.path).map_or("open", Role::name);
            table.push(format!("{} {} {role}", r.method, r.path));
        }
        let writes_for_operators = [
            "POST /image/changesets operator",
            "PUT /son/policy operator",
            "PUT /son/tuning operator",
            "POST /son/pending/{id}/approve operator",
            "POST /son/pending/{id}/reject operator",
        ];
        for line in writes_for_operators {
            assert!(table.contains(&line.to_string()), "{line} in {table:#?}");
        }
        for line in [
            "GET /health open",
            "GET /metrics open",
            "GET /backup admin",
            "POST /cluster/voters admin",
            "DELETE /cluster/nodes/{id} admin",
            "POST /image/import admin",
            "POST /snapshot admin",
            "GET /image/cells read-only",
        ] {
            assert!(table.contains(&line.to_string()), "{line} in {table:#?}");
        }
        // No write is open to a read-only token.
        for r in crate::api::ROUTES
            .iter()
            .filter(|r| r.method != Method::GET)
        {
            assert!(
                required_role(&r.method, r.path) >= Some(Role::Operator),
                "{} {}",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn tokens_files_give_roles_and_refuse_what_they_cannot_read() {
        let mut t = Tokens::new("admin-token".into());
        t.add_lines(
            "# the NOC\nread-only  noc-wall-1\n\noperator shift-lead-7\n",
            "tokens",
        )
        .unwrap();
        assert_eq!(t.role_of("admin-token"), Some(Role::Admin));
        assert_eq!(t.role_of("noc-wall-1"), Some(Role::ReadOnly));
        assert_eq!(t.role_of("shift-lead-7"), Some(Role::Operator));
        assert_eq!(t.role_of("shift-lead-"), None);
        assert_eq!(t.role_of(""), None);
        for (bad, says) in [
            ("superuser abcdefgh", "unknown role"),
            ("operator short", "at least 8"),
            ("operator", "ROLE TOKEN"),
            ("operator a b c", "ROLE TOKEN"),
            ("read-only admin-token", "already given the role admin"),
        ] {
            let err = t.clone().add_lines(bad, "tokens").unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(err.contains("tokens line 1"), "{bad:?}: {err}");
            assert!(!err.contains("abcdefgh"), "an error quoted a token: {err}");
        }
    }

    #[test]
    fn secret_files_are_trimmed_and_must_be_private_and_non_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&path, "token").unwrap(), "s3cret-token");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&path, "token").unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, " \n").unwrap();
        let err = read_secret_file(&path, "token").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = read_secret_file(&dir.path().join("missing"), "token")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
