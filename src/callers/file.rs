//! The keys file (`API_KEYS_FILE`): one key per line, so a change is a one-line diff, a
//! review sees exactly which key was added or revoked, and an operator can edit it by
//! hand. Plain whitespace-separated fields, in the spirit of `authorized_keys`:
//!
//! ```text
//! # id      hash of the key                                                          scopes      share
//! crm       sha256:3b1f0c0a8e54d0e6b3c5b0e1c2a4f6e8d0c2b4a6f8e0d2c4b6a8f0e2d4c6b8a0  read,write  per-minute=30
//! powerbi   sha256:9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9  read
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. Fields: the id, `sha256:` and the
//! hex SHA-256 of the key, the scopes (`read`, `write` or `read,write`), then optional
//! `name=value` settings, today only `per-minute=N` (the key's share of the upstream
//! budget). Anything else is an error naming the line, so a typo never silently widens
//! or drops access. Error messages never quote a line: it could hold a pasted key.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::{CallerKey, KeyDigest, KeySet, Scopes, check_id, generate_key};
use crate::settings::Secret;

/// Written at the top of a file `keys add` creates.
const HEADER: &str = "# qpien-rest caller keys (API_KEYS_FILE); see README, \"Caller keys\".\n\
# One key per line: <id> sha256:<SHA-256 of the key, hex> <read|write|read,write> [per-minute=N]\n\
# Add with `qpien-rest keys add`, remove a line (or `qpien-rest keys revoke`) to revoke.\n";

/// Why a keys file cannot be used.
#[derive(Debug)]
pub enum KeyFileError {
    /// The file cannot be read or written.
    Io { path: String, error: std::io::Error },
    /// The contents are wrong: line number (from 1; 0 for the file as a whole) and why.
    Invalid { line: usize, reason: String },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "{path}: {error}"),
            Self::Invalid { line: 0, reason } => f.write_str(reason),
            Self::Invalid { line, reason } => write!(f, "line {line}: {reason}"),
        }
    }
}

impl std::error::Error for KeyFileError {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |error| KeyFileError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// The keys of `text`, or the first thing wrong with it.
pub fn parse(text: &str) -> Result<KeySet, KeyFileError> {
    let mut keys = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let invalid = |reason: String| KeyFileError::Invalid {
            line: index + 1,
            reason,
        };
        keys.push(parse_line(line).map_err(invalid)?);
    }
    KeySet::new(keys).map_err(|reason| KeyFileError::Invalid { line: 0, reason })
}

fn parse_line(line: &str) -> Result<CallerKey, String> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(id), Some(hash), Some(scopes)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected <id> sha256:<hash> <scopes> [per-minute=N]".to_owned());
    };
    check_id(id)?;
    let digest = KeyDigest::parse(hash).ok_or_else(|| {
        format!("the hash of key {id:?} must be sha256: and 64 hexadecimal digits (keys themselves never go in this file)")
    })?;
    let scopes = Scopes::parse(scopes).map_err(|why| format!("key {id:?}: {why}"))?;
    let mut per_minute = None;
    for setting in fields {
        match setting.split_once('=') {
            Some(("per-minute", value)) if per_minute.is_none() => {
                per_minute = Some(parse_share(value).map_err(|why| format!("key {id:?}: {why}"))?);
            }
            Some(("per-minute", _)) => return Err(format!("key {id:?}: per-minute given twice")),
            _ => {
                return Err(format!(
                    "key {id:?}: unknown setting after the scopes; only per-minute=N is known"
                ));
            }
        }
    }
    Ok(CallerKey {
        id: id.to_owned(),
        scopes,
        per_minute,
        digest,
    })
}

/// A share of the upstream budget: 1 to 1000000 requests a minute, as
/// `QPIEN_RATE_LIMIT_PER_MINUTE`.
pub fn parse_share(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "per-minute must be a whole number from 1 to 1000000, got {value:?}"
        )),
    }
}

/// The line of one key, as `keys add` writes it.
pub fn format_line(key: &CallerKey) -> String {
    let mut line = format!("{} {} {}", key.id, key.digest, key.scopes);
    if let Some(n) = key.per_minute {
        line.push_str(&format!(" per-minute={n}"));
    }
    line.push('\n');
    line
}

/// Reads and parses the file at `path`. An empty file is refused: it is what a reload
/// sees while an editor rewrites the file in place, and taking it for "no keys" would
/// lock every caller out. A file with no keys says so with a comment line.
pub fn read_key_file(path: &Path) -> Result<KeySet, KeyFileError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    if text.is_empty() {
        return Err(KeyFileError::Invalid {
            line: 0,
            reason: "the file is empty; a file without keys holds at least a comment line"
                .to_owned(),
        });
    }
    parse(&text)
}

/// Generates a key, adds its line to `path` (created with a header if missing) and
/// returns the key, which exists nowhere else, with what `replace` found of the file.
pub fn add_key(
    path: &Path,
    id: &str,
    scopes: Scopes,
    per_minute: Option<u32>,
) -> Result<(Secret, Replaced), KeyFileError> {
    let invalid = |reason: String| KeyFileError::Invalid { line: 0, reason };
    check_id(id).map_err(invalid)?;
    refuse_symlink(path)?;
    let existing = match fs::read_to_string(path) {
        Ok(text) if text.is_empty() => None,
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(path)(e)),
    };
    if let Some(text) = &existing
        && parse(text)?.get(id).is_some()
    {
        return Err(invalid(format!(
            "a key with id {id:?} exists already; revoke it first or pick another id"
        )));
    }
    let key = generate_key().map_err(|e| invalid(format!("no randomness from the OS: {e}")))?;
    let line = format_line(&CallerKey {
        id: id.to_owned(),
        scopes,
        per_minute,
        digest: KeyDigest::of(key.expose()),
    });
    let mut text = existing.unwrap_or_else(|| HEADER.to_owned());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    let replaced = replace(path, &text)?;
    Ok((key, replaced))
}

/// Removes the line of key `id` from `path`, keeping every other line as it was.
pub fn revoke_key(path: &Path, id: &str) -> Result<Replaced, KeyFileError> {
    refuse_symlink(path)?;
    let text = fs::read_to_string(path).map_err(io(path))?;
    if parse(&text)?.get(id).is_none() {
        return Err(KeyFileError::Invalid {
            line: 0,
            reason: format!("no key with id {id:?} in {}", path.display()),
        });
    }
    let kept: String = text
        .split_inclusive('\n')
        .filter(|line| {
            let line = line.trim();
            line.starts_with('#') || line.split_ascii_whitespace().next() != Some(id)
        })
        .collect();
    replace(path, &kept)
}

/// What `replace` found of the file it replaced.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replaced {
    /// The permission bits of the file before, when there was one; kept as they were.
    pub previous_mode: Option<u32>,
}

impl Replaced {
    /// The previous mode, when it let anyone but the owner read or write the file.
    pub fn too_wide(&self) -> Option<u32> {
        self.previous_mode.filter(|mode| mode & 0o077 != 0)
    }
}

/// A renamed-over file would replace the link itself, not what it points to: the
/// operator's layout would change behind their back, so the commands ask for the target.
fn refuse_symlink(path: &Path) -> Result<(), KeyFileError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::read_link(path).map_err(io(path))?;
            Err(KeyFileError::Invalid {
                line: 0,
                reason: format!(
                    "{} is a symbolic link (to {}): give the file it points to",
                    path.display(),
                    target.display()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// The name `replace` writes to, beside the file: fixed, so two `keys` commands at once
/// cannot both rewrite the file and lose one's change (the second finds it taken).
fn temporary_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces the contents of `path` with `text` so that a reader (the service's reload)
/// sees the old file or the new one, never half of one, and a crash leaves one of the two:
/// a new file beside it, created exclusively (`O_EXCL`: never an existing file, never
/// through a symbolic link planted there), mode 0600 while written, synced, renamed over
/// `path`, and the directory synced so the rename itself survives a crash. The owner and
/// permission bits of the file replaced are kept, so the service can still read it.
fn replace(path: &Path, text: &str) -> Result<Replaced, KeyFileError> {
    let previous = match fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(path)(e)),
    };
    let temporary = temporary_path(path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Invalid {
                line: 0,
                reason: format!(
                    "{} exists: another `qpien-rest keys` command is writing {}, or one was interrupted; if none is running, remove it and run the command again",
                    temporary.display(),
                    path.display()
                ),
            }
        } else {
            io(&temporary)(error)
        }
    })?;
    let written = (|| {
        file.write_all(text.as_bytes())?;
        #[cfg(unix)]
        if let Some(meta) = &previous {
            keep_owner_and_mode(&file, meta)?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(io(path)(error));
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(io(directory))?;
    Ok(Replaced {
        previous_mode: previous.map(|meta| mode_of(&meta)),
    })
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
}

#[cfg(not(unix))]
fn mode_of(_: &fs::Metadata) -> u32 {
    0o600
}

/// Run by root (or another user than the file's owner), the new file would belong to
/// that user, and a service reading it as the old owner would be locked out of it.
#[cfg(unix)]
fn keep_owner_and_mode(file: &fs::File, old: &fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let new = file.metadata()?;
    if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
        std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot keep the file's owner {}:{} ({e}); run the command as that user",
                    old.uid(),
                    old.gid()
                ),
            )
        })?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode_of(old)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::Scope;

    const HASH: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn a_file_with_comments_blank_lines_and_shares_parses() {
        let text = format!(
            "# keys\n\ncrm {HASH} read,write per-minute=30\n  # indented comment\nbi\tsha256:{} read\n",
            "0".repeat(64)
        );

        let set = parse(&text).unwrap();

        assert_eq!(set.len(), 2);
        let crm = set.get("crm").unwrap();
        assert!(crm.scopes.contains(Scope::Write));
        assert_eq!(crm.per_minute, Some(30));
        assert_eq!(set.get("bi").unwrap().per_minute, None);
        assert_eq!(set.authenticate("abc").unwrap().id, "crm");
    }

    #[test]
    fn each_mistake_names_its_line_and_never_quotes_it() {
        let pasted = "qpk_Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV6cXV1enF1dXo";
        for (line, expected) in [
            (format!("crm {pasted} read"), "must be sha256:"),
            (format!("crm {HASH}"), "expected <id>"),
            (format!("crm {HASH} admin"), "unknown scope"),
            (format!("crm {HASH} read per-minute=0"), "from 1 to 1000000"),
            (
                format!("crm {HASH} read per-minute=5 per-minute=6"),
                "twice",
            ),
            (format!("crm {HASH} read burst=5"), "unknown setting"),
            (format!("crm/1 {HASH} read"), "key id"),
        ] {
            let text = format!("# header\n{line}\n");

            let error = parse(&text).unwrap_err().to_string();

            assert!(error.starts_with("line 2: "), "{error}");
            assert!(error.contains(expected), "{line}: {error}");
            assert!(
                !error.contains(pasted) && !error.contains(&HASH[7..]),
                "{error}"
            );
        }
    }

    #[test]
    fn an_empty_file_is_refused_but_a_file_of_comments_has_no_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        fs::write(&path, "").unwrap();
        let empty = read_key_file(&path);
        fs::write(&path, "# every key revoked\n").unwrap();
        let comments = read_key_file(&path);

        assert!(empty.unwrap_err().to_string().contains("empty"));
        assert!(comments.unwrap().is_empty());
    }

    #[test]
    fn a_repeated_id_is_an_error_of_the_whole_file() {
        let text = format!("crm {HASH} read\ncrm sha256:{} read\n", "1".repeat(64));

        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
    }

    #[test]
    fn add_creates_a_private_file_and_revoke_removes_only_that_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");

        let (crm, _) =
            add_key(&path, "crm", Scopes::parse("read,write").unwrap(), Some(30)).unwrap();
        let (bi, _) = add_key(&path, "bi", Scopes::parse("read").unwrap(), None).unwrap();
        let again = add_key(&path, "crm", Scopes::parse("read").unwrap(), None);

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# qpien-rest caller keys"));
        assert!(!text.contains(crm.expose()) && !text.contains(bi.expose()));
        assert!(again.unwrap_err().to_string().contains("exists already"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let set = read_key_file(&path).unwrap();
        assert_eq!(set.authenticate(crm.expose()).unwrap().per_minute, Some(30));

        revoke_key(&path, "crm").unwrap();

        let after = fs::read_to_string(&path).unwrap();
        let set = read_key_file(&path).unwrap();
        assert!(set.authenticate(crm.expose()).is_none());
        assert_eq!(set.authenticate(bi.expose()).unwrap().id, "bi");
        let expected: String = text
            .lines()
            .filter(|line| !line.starts_with("crm "))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(after, expected, "only the revoked line is gone");
        assert!(
            revoke_key(&path, "crm")
                .unwrap_err()
                .to_string()
                .contains("no key")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_temporary_name_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (key, _) = add_key(&path, "crm", Scopes::parse("read").unwrap(), None).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".keys.tmp")).unwrap();

        let added = add_key(&path, "bi", Scopes::parse("read").unwrap(), None);
        let revoked = revoke_key(&path, "crm");

        for refused in [added.map(|_| ()), revoked.map(|_| ())] {
            let error = refused.unwrap_err().to_string();
            assert!(error.contains(".keys.tmp exists"), "{error}");
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        let set = read_key_file(&path).unwrap();
        assert_eq!(set.authenticate(key.expose()).unwrap().id, "crm");
        assert!(set.get("bi").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_rewrite_keeps_the_mode_and_reports_it_when_wider_than_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (_, created) = add_key(&path, "crm", Scopes::parse("read").unwrap(), None).unwrap();
        let (_, private) = add_key(&path, "bi", Scopes::parse("read").unwrap(), None).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        let wide = revoke_key(&path, "crm").unwrap();

        assert_eq!(created.previous_mode, None);
        assert_eq!(private.previous_mode, Some(0o600));
        assert_eq!(private.too_wide(), None);
        assert_eq!(wide.too_wide(), Some(0o644));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "the operator's mode is kept");
        assert!(!dir.path().join(".keys.tmp").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_keys_file_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        add_key(&real, "crm", Scopes::parse("read").unwrap(), None).unwrap();
        let link = dir.path().join("keys");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let error = add_key(&link, "bi", Scopes::parse("read").unwrap(), None).unwrap_err();

        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
