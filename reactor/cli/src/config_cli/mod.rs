//! The configuration file of `swarm up` and `swarm dev` (`swarm.toml`, or `--config FILE`),
//! layered under the command line: flags over the environment over the file over the defaults.
//!
//! The file's keys are the long flags of `up`, written without their dashes (`claim-idle = 30`;
//! `claim_idle` is read the same). The flag definitions stay the one source of truth: each
//! value of the file is checked by its flag's own parser, and a value that neither the command
//! line nor the environment sets is handed to clap as if it had been typed. So a setting is
//! named, checked and documented in one place, and `swarm config show` can say of each where it
//! came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;

mod show;
pub(crate) use show::{ConfigCommand, run};

/// The file read when neither `--config` nor `SWARM_CONFIG` names one, if it exists.
pub(crate) const DEFAULT_FILE: &str = "swarm.toml";

/// `--config FILE`, of every command that reads the file.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigFile {
    /// TOML file of settings: each key a long flag of `swarm up` without its dashes
    /// (`claim-idle = 30`). Flags and environment variables override it (default:
    /// `swarm.toml` in the current directory, if there is one).
    #[arg(
        long = "config",
        id = "config_file",
        env = "SWARM_CONFIG",
        value_name = "FILE"
    )]
    file: Option<PathBuf>,
}

impl ConfigFile {
    /// The file read: the one named, else `swarm.toml` here if it exists.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        chosen(self.file.as_ref())
    }
}

fn chosen(named: Option<&PathBuf>) -> Option<PathBuf> {
    match named {
        Some(file) => Some(file.clone()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|file| file.is_file()),
    }
}

/// The argument ids of `up` that are not settings.
const NOT_SETTINGS: &[&str] = &["help", "version", "config_file"];

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Flag,
    Env(String),
    File(PathBuf),
    Default,
    Unset,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("flag"),
            Self::Env(name) => write!(f, "env {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Default => f.write_str("default"),
            Self::Unset => f.write_str("unset"),
        }
    }
}

/// One setting as the command will run with it.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    /// The file key (the long flag without its dashes).
    pub key: String,
    pub values: Vec<String>,
    /// A switch (`--no-watch`): its value is `true` or `false`.
    pub switch: bool,
    /// A flag given once per value (`--dispatch`): an array in the file.
    pub repeatable: bool,
    pub source: Source,
}

/// Why the configuration cannot be used: a clap error (printed by clap, as for any bad
/// flag), or the file's problems, one line each.
#[derive(Debug)]
pub(crate) enum ConfigError {
    Clap(clap::Error),
    File(Vec<String>),
}

impl From<clap::Error> for ConfigError {
    fn from(error: clap::Error) -> Self {
        Self::Clap(error)
    }
}

/// Parses the process's arguments with the configuration file under them; exits with a clear
/// message (status 2, as for a bad flag) if either is wrong.
pub(crate) fn parse() -> Cli {
    match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(ConfigError::Clap(error)) => error.exit(),
        Err(ConfigError::File(problems)) => {
            for problem in problems {
                eprintln!("error: {problem}");
            }
            std::process::exit(2)
        }
    }
}

/// [`parse`] on given arguments and environment.
pub(crate) fn parse_from(argv: Vec<OsString>) -> Result<Cli, ConfigError> {
    let mut command = Cli::command();
    command.build();
    let first = command.clone().try_get_matches_from(&argv)?;
    let Some((path, sub_matches)) = configured(&first) else {
        return Ok(Cli::from_arg_matches(&first)?);
    };
    // The file holds the settings of `up` (and of `dev`, which adds its own): it is checked
    // against them whatever reads it, and each reader takes the settings it has.
    let schema_path: &[&str] = if path == ["dev"] { &["dev"] } else { &["up"] };
    let (Some(sub), Some(schema)) = (find(&command, &path), find(&command, schema_path)) else {
        return Ok(Cli::from_arg_matches(&first)?);
    };
    let file = chosen(sub_matches.get_one::<PathBuf>("config_file"));
    let injected = match &file {
        Some(file) => {
            let entries = read(file).map_err(|problem| ConfigError::File(vec![problem]))?;
            let from_file = check(&command, schema_path, schema, file, &entries)?;
            unset_by_flag_or_env(sub, sub_matches, &from_file)
        }
        None => Vec::new(),
    };
    let mut argv = argv;
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let added: Vec<OsString> = injected
        .iter()
        .flat_map(|(_, tokens)| tokens.iter().map(OsString::from))
        .collect();
    argv.splice(at..at, added);
    let matches = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|error| match (&file, error.kind()) {
            (Some(file), clap::error::ErrorKind::ArgumentConflict) => {
                ConfigError::File(vec![format!(
                    "{}: a setting of the file conflicts with a flag or variable: {}",
                    file.display(),
                    first_line(&error)
                )])
            }
            _ => ConfigError::Clap(error),
        })?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let file_keys: Vec<&str> = injected.iter().map(|(key, _)| key.as_str()).collect();
    let Some(final_sub) = sub_matches_at(&matches, &path) else {
        return Ok(cli);
    };
    cli.settings = settings(sub, final_sub, &file_keys, file.as_deref());
    Ok(cli)
}

/// The subcommand path that reads the file, and its matches: `up`, `dev`, `doctor` or
/// `config show`.
fn configured(matches: &ArgMatches) -> Option<(Vec<&'static str>, &ArgMatches)> {
    match matches.subcommand()? {
        ("up", sub) => Some((vec!["up"], sub)),
        ("dev", sub) => Some((vec!["dev"], sub)),
        ("doctor", sub) => Some((vec!["doctor"], sub)),
        ("config", sub) => match sub.subcommand()? {
            ("show", show) => Some((vec!["config", "show"], show)),
            _ => None,
        },
        _ => None,
    }
}

fn find<'c>(command: &'c Command, path: &[&str]) -> Option<&'c Command> {
    path.iter()
        .try_fold(command, |command, name| command.find_subcommand(name))
}

fn sub_matches_at<'m>(matches: &'m ArgMatches, path: &[&str]) -> Option<&'m ArgMatches> {
    path.iter().try_fold(matches, |matches, name| {
        matches
            .subcommand()
            .filter(|(found, _)| found == name)
            .map(|(_, sub)| sub)
    })
}

/// A key of the file and its values as text.
#[derive(Debug)]
struct Entry {
    key: String,
    values: Vec<String>,
    /// Written as a TOML array (several values).
    array: bool,
    /// Written as a TOML boolean.
    boolean: bool,
}

/// The file's entries, in its order; a file that is not TOML, or a value that is a table or
/// an array of arrays, is refused.
fn read(file: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(file).map_err(|error| {
        format!(
            "cannot read the configuration file {}: {error}",
            file.display()
        )
    })?;
    let document: toml_edit::DocumentMut =
        text.parse().map_err(|error: toml_edit::TomlError| {
            format!(
                "{} is not TOML: {}",
                file.display(),
                error.to_string().trim_end().replace('\n', " ")
            )
        })?;
    let mut entries = Vec::new();
    for (key, item) in document.as_table() {
        let Some(value) = item.as_value() else {
            return Err(format!(
                "{}: `{key}` is a table; settings are keys at the top level (`claim-idle = 30`)",
                file.display()
            ));
        };
        let (values, array) = match value.as_array() {
            Some(array) => (
                array
                    .iter()
                    .map(|value| scalar(value).ok_or_else(|| nested(file, key)))
                    .collect::<Result<Vec<_>, _>>()?,
                true,
            ),
            None => (vec![scalar(value).ok_or_else(|| nested(file, key))?], false),
        };
        entries.push(Entry {
            key: key.to_owned(),
            values,
            array,
            boolean: value.is_bool(),
        });
    }
    Ok(entries)
}

fn nested(file: &Path, key: &str) -> String {
    format!(
        "{}: `{key}` must be a string, a number, a boolean or an array of those",
        file.display()
    )
}

fn scalar(value: &toml_edit::Value) -> Option<String> {
    match value {
        toml_edit::Value::String(s) => Some(s.value().clone()),
        toml_edit::Value::Integer(i) => Some(i.value().to_string()),
        toml_edit::Value::Float(f) => Some(f.value().to_string()),
        toml_edit::Value::Boolean(b) => Some(b.value().to_string()),
        toml_edit::Value::Datetime(d) => Some(d.value().to_string()),
        toml_edit::Value::Array(_) | toml_edit::Value::InlineTable(_) => None,
    }
}

/// A checked value of the file, as the flag's tokens.
#[derive(Debug)]
struct FromFile {
    id: String,
    key: String,
    tokens: Vec<String>,
}

/// Checks every entry against the flags of the subcommand at `path`: each unknown key, and
/// each value its flag's parser refuses, is one problem, and all of them are reported at once.
fn check(
    command: &Command,
    path: &[&str],
    sub: &Command,
    file: &Path,
    entries: &[Entry],
) -> Result<Vec<FromFile>, ConfigError> {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    let settings: Vec<&clap::Arg> = sub
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
        .filter(|arg| arg.get_long().is_some())
        .collect();
    for entry in entries {
        let key = entry.key.replace('_', "-");
        let Some(arg) = settings
            .iter()
            .find(|arg| arg.get_long() == Some(key.as_str()))
        else {
            let closest = settings
                .iter()
                .filter_map(|arg| arg.get_long())
                .map(|long| (strsim::jaro_winkler(&key, long), long))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            problems.push(match closest {
                Some((_, long)) => format!(
                    "{}: unknown key `{}` (did you mean `{long}`?)",
                    file.display(),
                    entry.key
                ),
                None => format!(
                    "{}: unknown key `{}` (`swarm config show` lists the settings)",
                    file.display(),
                    entry.key
                ),
            });
            continue;
        };
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        if switch && !entry.boolean {
            problems.push(format!(
                "{}: `{}` is a switch: write `{key} = true` or `{key} = false`",
                file.display(),
                entry.key
            ));
            continue;
        }
        if entry.array && !repeatable {
            problems.push(format!(
                "{}: `{}` takes one value, not an array",
                file.display(),
                entry.key
            ));
            continue;
        }
        let tokens: Vec<String> = if switch {
            match entry.values.first().map(String::as_str) {
                Some("true") => vec![format!("--{key}")],
                _ => Vec::new(),
            }
        } else {
            entry
                .values
                .iter()
                .map(|value| format!("--{key}={value}"))
                .collect()
        };
        // Each value through its flag's own parser, alone on a command line of its own.
        let mut alone: Vec<String> = vec!["swarm".to_owned()];
        alone.extend(path.iter().map(|name| (*name).to_owned()));
        alone.extend(tokens.iter().cloned());
        if let Err(error) = command.clone().try_get_matches_from(&alone) {
            use clap::error::ErrorKind;
            if !matches!(
                error.kind(),
                ErrorKind::MissingRequiredArgument | ErrorKind::ArgumentConflict
            ) {
                problems.push(format!(
                    "{}: `{}`: {}",
                    file.display(),
                    entry.key,
                    first_line(&error)
                ));
                continue;
            }
        }
        checked.push(FromFile {
            id: arg.get_id().to_string(),
            key,
            tokens,
        });
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(ConfigError::File(problems))
    }
}

/// The first line of a clap error without its `error: ` prefix.
fn first_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The file's values for the settings `sub` has that neither a flag nor the environment set,
/// as tokens to add to the command line: (key, tokens).
fn unset_by_flag_or_env(
    sub: &Command,
    matches: &ArgMatches,
    from_file: &[FromFile],
) -> Vec<(String, Vec<String>)> {
    from_file
        .iter()
        .filter(|setting| {
            sub.get_arguments()
                .any(|arg| arg.get_id() == setting.id.as_str())
        })
        .filter(|setting| {
            !matches!(
                matches.value_source(&setting.id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(|setting| (setting.key.clone(), setting.tokens.clone()))
        .collect()
}

/// Every setting of `sub` as the final matches hold it, with where it came from.
fn settings(
    sub: &Command,
    matches: &ArgMatches,
    file_keys: &[&str],
    file: Option<&Path>,
) -> Vec<Setting> {
    let mut by_key = BTreeMap::new();
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(key) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => match file {
                Some(file) if file_keys.contains(&key) => Source::File(file.to_owned()),
                _ => Source::Flag,
            },
            Some(ValueSource::EnvVariable) => Source::Env(
                arg.get_env()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Some(ValueSource::DefaultValue) => Source::Default,
            Some(_) | None => Source::Unset,
        };
        by_key.insert(
            key.to_owned(),
            Setting {
                key: key.to_owned(),
                values,
                switch,
                repeatable: matches!(arg.get_action(), ArgAction::Append),
                source,
            },
        );
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `swarm ARGS...` with `text` as its configuration file (settings without an environment
    /// variable, so the test's environment cannot change them).
    fn parse_with(text: &str, args: &[&str]) -> Result<Vec<Setting>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("swarm.toml");
        std::fs::write(&file, text).unwrap();
        let mut argv: Vec<OsString> = vec!["swarm".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push(format!("--config={}", file.display()).into());
        parse_from(argv).map(|cli| cli.settings)
    }

    fn setting<'s>(settings: &'s [Setting], key: &str) -> &'s Setting {
        settings.iter().find(|s| s.key == key).unwrap()
    }

    fn problems(result: Result<Vec<Setting>, ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::File(problems)) => problems,
            Err(ConfigError::Clap(error)) => panic!("a clap error, not the file's: {error}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn the_file_fills_what_no_flag_sets_and_a_flag_wins() {
        let text = "claim-idle = 12.5\nconcurrency = 8\nno_watch = true\n\
                    dispatch = [\"a.*=fan_out\", \"b=top_k:2\"]\n";
        let settings = parse_with(text, &["up", "--concurrency", "3"]).unwrap();
        let claim = setting(&settings, "claim-idle");
        assert_eq!(claim.values, ["12.5"]);
        assert!(matches!(claim.source, Source::File(_)), "{claim:?}");
        let concurrency = setting(&settings, "concurrency");
        assert_eq!(
            (concurrency.values.as_slice(), &concurrency.source),
            (&["3".to_owned()][..], &Source::Flag)
        );
        assert_eq!(setting(&settings, "no-watch").values, ["true"]);
        assert_eq!(
            setting(&settings, "dispatch").values,
            ["a.*=fan_out", "b=top_k:2"]
        );
        let breaker = setting(&settings, "breaker-failures");
        assert_eq!(
            (breaker.values.as_slice(), &breaker.source),
            (&["20".to_owned()][..], &Source::Default)
        );
        assert_eq!(setting(&settings, "feed").source, Source::Unset);
    }

    #[test]
    fn dev_and_doctor_read_the_same_file() {
        let text = "claim-idle = 2\nrelease = true\n";
        let dev = parse_with(text, &["dev"]).unwrap();
        assert_eq!(setting(&dev, "release").values, ["true"]);
        // `release` is a setting of `dev`, not of `up`.
        let up = problems(parse_with(text, &["up"]));
        assert_eq!(up.len(), 1, "{up:?}");
        assert!(up[0].contains("unknown key `release`"), "{up:?}");
        // doctor checks every key of `up` and takes those it has.
        assert!(parse_with("claim-idle = 2\nrate-limit = 5\n", &["doctor"]).is_ok());
        let doctor = problems(parse_with("rate-limits = 5\n", &["doctor"]));
        assert!(
            doctor[0].contains("did you mean `rate-limit`?"),
            "{doctor:?}"
        );
    }

    #[test]
    fn every_bad_key_and_value_is_named_at_once() {
        let text = "claim-idel = 3\nconcurrency = \"many\"\nno-watch = \"yes\"\n\
                    claim-idle = [1, 2]\nexploration = 1.5\nwhatever = 1\n";
        let problems = problems(parse_with(text, &["up"]));
        assert_eq!(problems.len(), 6, "{problems:#?}");
        let expected = [
            "unknown key `claim-idel` (did you mean `claim-idle`?)",
            "`concurrency`: invalid value 'many' for '--concurrency",
            "`no-watch` is a switch",
            "`claim-idle` takes one value, not an array",
            "`exploration`: invalid value '1.5' for '--exploration",
            "unknown key `whatever` (`swarm config show` lists the settings)",
        ];
        for (problem, expected) in problems.iter().zip(expected) {
            assert!(problem.contains("swarm.toml: "), "{problem}");
            assert!(problem.contains(expected), "`{expected}` in {problem}");
        }
    }

    #[test]
    fn files_that_are_not_flat_toml_are_refused() {
        let not_toml = problems(parse_with("claim-idle = = 3", &["up"]));
        assert!(not_toml[0].contains("is not TOML"), "{not_toml:?}");
        let table = problems(parse_with("[http]\nrate-limit = 3\n", &["up"]));
        assert!(table[0].contains("`http` is a table"), "{table:?}");
        let nested = problems(parse_with("dispatch = [[\"a=fan_out\"]]\n", &["up"]));
        assert!(
            nested[0].contains("must be a string, a number"),
            "{nested:?}"
        );
        let missing = parse_from(vec![
            "swarm".into(),
            "up".into(),
            "--config=/nonexistent/swarm.toml".into(),
        ]);
        let missing = problems(missing.map(|cli| cli.settings));
        assert!(
            missing[0].contains("cannot read the configuration file"),
            "{missing:?}"
        );
    }
}
