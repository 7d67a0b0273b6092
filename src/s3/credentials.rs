//! Where credentials come from: an explicit file (which must not be readable
//! by others), the AWS environment variables, or a profile of the shared
//! `~/.aws/credentials` file.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::sign::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "credentials file {path} is readable or writable by others (mode {mode:04o}); run: chmod 600 {path}"
    )]
    InsecureFile { path: String, mode: u32 },
    #[error("cannot read credentials file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("profile [{profile}] not found in {path}")]
    NoProfile { profile: String, path: String },
    #[error("profile [{profile}] in {path} lacks {field}")]
    Incomplete {
        profile: String,
        path: String,
        field: &'static str,
    },
    #[error(
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --profile or --credentials-file"
    )]
    NotFound,
}

/// Where to look, in the order tried by [`load`].
#[derive(Debug, Clone, Default)]
pub struct CredentialsSource {
    /// A file in the shared-credentials format, mode 0600 or stricter.
    pub file: Option<PathBuf>,
    /// The profile in that file or the shared file; else AWS_PROFILE, else
    /// `default`.
    pub profile: Option<String>,
}

/// Resolves credentials: an explicit file first; then, unless a profile was
/// named, the environment; then the shared credentials file
/// (AWS_SHARED_CREDENTIALS_FILE or `~/.aws/credentials`).
pub fn load(source: &CredentialsSource) -> Result<Credentials, CredentialsError> {
    load_with_env(source, |name| std::env::var(name).ok())
}

fn load_with_env(
    source: &CredentialsSource,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, CredentialsError> {
    let profile = source
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_string());
    if let Some(path) = &source.file {
        check_private(path)?;
        return from_file(path, &profile);
    }
    if source.profile.is_none()
        && let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        let creds = Credentials::new(id, secret);
        return Ok(match env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()) {
            Some(token) => creds.with_session_token(token),
            None => creds,
        });
    }
    let shared = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    match shared {
        Some(path) if path.exists() => from_file(&path, &profile),
        _ if source.profile.is_some() => Err(CredentialsError::NoProfile {
            profile,
            path: "~/.aws/credentials".to_string(),
        }),
        _ => Err(CredentialsError::NotFound),
    }
}

fn check_private(path: &Path) -> Result<(), CredentialsError> {
    let meta = std::fs::metadata(path).map_err(|source| CredentialsError::Unreadable {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialsError::InsecureFile {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

fn from_file(path: &Path, profile: &str) -> Result<Credentials, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Unreadable {
        path: path.display().to_string(),
        source,
    })?;
    let sections = parse_ini(&text);
    let shown = path.display().to_string();
    let section = sections
        .get(profile)
        .ok_or_else(|| CredentialsError::NoProfile {
            profile: profile.to_string(),
            path: shown.clone(),
        })?;
    let field = |name: &'static str| {
        section
            .get(name)
            .cloned()
            .ok_or_else(|| CredentialsError::Incomplete {
                profile: profile.to_string(),
                path: shown.clone(),
                field: name,
            })
    };
    let creds = Credentials::new(field("aws_access_key_id")?, field("aws_secret_access_key")?);
    Ok(match section.get("aws_session_token") {
        Some(token) if !token.is_empty() => creds.with_session_token(token.clone()),
        _ => creds,
    })
}

/// The shared-credentials format: `[profile]` sections (also `[profile x]`
/// as in `~/.aws/config`) of `key = value` lines, `#`/`;` comments.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = name.strip_prefix("profile ").unwrap_or(name).trim();
            current = Some(name.to_string());
            out.entry(name.to_string()).or_default();
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AK1\naws_secret_access_key = SK1\n\n[profile other]\naws_access_key_id=AK2\naws_secret_access_key=SK2\naws_session_token=T2\n";

    #[test]
    fn explicit_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let open = write_file(dir.path(), "open", FILE, 0o644);
        let err = load_with_env(
            &CredentialsSource {
                file: Some(open),
                profile: None,
            },
            |_| None,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            CredentialsError::InsecureFile { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));

        let private = write_file(dir.path(), "private", FILE, 0o600);
        let creds = load_with_env(
            &CredentialsSource {
                file: Some(private),
                profile: Some("other".into()),
            },
            |_| None,
        )
        .unwrap();
        assert_eq!(creds.access_key_id, "AK2");
        assert_eq!(creds.secret_access_key.expose(), "SK2");
        assert_eq!(creds.session_token.as_ref().unwrap().expose(), "T2");
    }

    #[test]
    fn environment_then_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let shared = write_file(dir.path(), "credentials", FILE, 0o644);
        let shared_s = shared.display().to_string();
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("ENVKEY".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("ENVSECRET".to_string()),
            "AWS_SHARED_CREDENTIALS_FILE" => Some(shared_s.clone()),
            _ => None,
        };
        let creds = load_with_env(&CredentialsSource::default(), env).unwrap();
        assert_eq!(creds.access_key_id, "ENVKEY");
        assert!(creds.session_token.is_none());
        // A named profile wins over the environment.
        let creds = load_with_env(
            &CredentialsSource {
                file: None,
                profile: Some("default".into()),
            },
            env,
        )
        .unwrap();
        assert_eq!(creds.access_key_id, "AK1");
        // AWS_PROFILE picks the profile when only the shared file is there.
        let env2 = |name: &str| match name {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(shared_s.clone()),
            "AWS_PROFILE" => Some("other".to_string()),
            _ => None,
        };
        let creds = load_with_env(&CredentialsSource::default(), env2).unwrap();
        assert_eq!(creds.access_key_id, "AK2");
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "c", "[default]\naws_access_key_id=A\n", 0o600);
        let err = load_with_env(
            &CredentialsSource {
                file: Some(path.clone()),
                profile: None,
            },
            |_| None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("lacks aws_secret_access_key"),
            "{err}"
        );
        let err = load_with_env(
            &CredentialsSource {
                file: Some(path),
                profile: Some("nope".into()),
            },
            |_| None,
        )
        .unwrap_err();
        assert!(matches!(err, CredentialsError::NoProfile { .. }));
        let err = load_with_env(&CredentialsSource::default(), |_| None).unwrap_err();
        assert!(matches!(err, CredentialsError::NotFound));
    }
}
