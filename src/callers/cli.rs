//! `qpien-rest keys add | list | revoke`: managing the keys file without editing it by
//! hand. The new key goes to stdout and nowhere else (so `> key.txt` or a secret store's
//! stdin can take it); everything said to the operator goes to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::file::parse_share;
use super::{Replaced, Scopes, add_key, check_id, read_key_file, revoke_key};

pub const USAGE: &str = "\
  keys add --file F --id NAME --scopes read|write|read,write [--per-minute N]\n\
               create a caller key, add its hash to F (created with mode 0600; an existing\n\
               file is replaced in one rename and keeps its owner and mode) and print the\n\
               key on stdout, once: it is stored nowhere\n\
  keys list --file F    the ids, scopes and shares in F (never keys or hashes)\n\
  keys revoke --file F --id NAME   remove the key NAME from F; a running service drops it\n\
               within a second (or at once on SIGHUP)\n";

/// Runs `keys …`: 0 on success, 1 when the file refuses, 2 for a usage mistake.
pub fn run(args: &[String]) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprint!("qpien-rest keys: {why}\nusage:\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::File(why)) => {
            eprintln!("qpien-rest keys: {why}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    File(String),
}

#[derive(Default)]
struct Options {
    file: Option<PathBuf>,
    id: Option<String>,
    scopes: Option<Scopes>,
    per_minute: Option<u32>,
}

fn options(args: &[String], allowed: &[&str]) -> Result<Options, Failure> {
    let mut options = Options::default();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let flag = flag.as_str();
        if !allowed.contains(&flag) {
            return Err(Failure::Usage(format!("unexpected argument {flag:?}")));
        }
        let value = rest
            .next()
            .ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))?;
        match flag {
            "--file" => options.file = Some(PathBuf::from(value)),
            "--id" => {
                check_id(value).map_err(Failure::Usage)?;
                options.id = Some(value.clone());
            }
            "--scopes" => options.scopes = Some(Scopes::parse(value).map_err(Failure::Usage)?),
            "--per-minute" => {
                options.per_minute = Some(parse_share(value).map_err(Failure::Usage)?)
            }
            _ => unreachable!("only allowed flags get here"),
        }
    }
    Ok(options)
}

fn required<T>(value: Option<T>, flag: &str) -> Result<T, Failure> {
    value.ok_or_else(|| Failure::Usage(format!("{flag} is required")))
}

fn run_inner(args: &[String]) -> Result<(), Failure> {
    let file_error = |e: super::KeyFileError| Failure::File(e.to_string());
    match args.split_first() {
        Some((command, rest)) if command == "add" => {
            let o = options(rest, &["--file", "--id", "--scopes", "--per-minute"])?;
            let file = required(o.file, "--file")?;
            let id = required(o.id, "--id")?;
            let scopes = required(o.scopes, "--scopes")?;
            let (key, replaced) = add_key(&file, &id, scopes, o.per_minute).map_err(file_error)?;
            println!("{}", key.expose());
            warn_if_wide(&file, replaced);
            let share = o
                .per_minute
                .map_or_else(String::new, |n| format!(", {n} requests a minute"));
            eprintln!(
                "added key {id:?} ({scopes}{share}) to {}. The key above is shown once and stored nowhere: hand it to the caller now.",
                file.display()
            );
            Ok(())
        }
        Some((command, rest)) if command == "list" => {
            let o = options(rest, &["--file"])?;
            let file = required(o.file, "--file")?;
            let set = read_key_file(&file).map_err(file_error)?;
            let width = set
                .keys()
                .iter()
                .map(|k| k.id.len())
                .max()
                .unwrap_or(2)
                .max(2);
            println!("{:width$}  {:10}  per-minute", "id", "scopes");
            for key in set.keys() {
                let share = key.per_minute.map_or("-".to_owned(), |n| n.to_string());
                println!("{:width$}  {:10}  {share}", key.id, key.scopes.to_string());
            }
            Ok(())
        }
        Some((command, rest)) if command == "revoke" => {
            let o = options(rest, &["--file", "--id"])?;
            let file = required(o.file, "--file")?;
            let id = required(o.id, "--id")?;
            let replaced = revoke_key(&file, &id).map_err(file_error)?;
            warn_if_wide(&file, replaced);
            eprintln!(
                "revoked key {id:?} in {}; a running service drops it within a second.",
                file.display()
            );
            Ok(())
        }
        Some((command, _)) => Err(Failure::Usage(format!("unknown keys command {command:?}"))),
        None => Err(Failure::Usage("add, list or revoke?".to_owned())),
    }
}

/// The file keeps the mode it had (the service may read it through its group), but
/// anyone besides its owner reading the key ids and hashes is worth a word.
fn warn_if_wide(file: &Path, replaced: Replaced) {
    if let Some(mode) = replaced.too_wide() {
        eprintln!(
            "warning: {} has mode {mode:04o}, wider than 0600: other users can read it. Run: chmod 600 {} (or chmod 640 if the service reads it through its group)",
            file.display(),
            file.display()
        );
    }
}
