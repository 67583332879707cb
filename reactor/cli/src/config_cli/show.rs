//! `swarm config show`: the effective settings as TOML, each with where it came from.

use super::{Setting, Source};

/// `swarm config show`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the settings `swarm up` runs with, given the same flags, environment and
    /// configuration file, each with where it came from (flag, env, file or default), as TOML
    /// that can be saved as a `swarm.toml`. Passwords in URLs are masked.
    Show(Box<crate::up_cli::UpArgs>),
}

pub(crate) fn run(command: &ConfigCommand, settings: &[Setting]) -> std::process::ExitCode {
    let ConfigCommand::Show(_) = command;
    print!("{}", render(settings));
    std::process::ExitCode::SUCCESS
}

/// The settings as TOML lines, each with its source as a comment; unset ones commented out.
fn render(settings: &[Setting]) -> String {
    let lines: Vec<(String, String)> = settings
        .iter()
        .map(|setting| {
            let assignment = match (&setting.source, setting.switch) {
                (Source::Unset, _) => format!("# {} =", setting.key),
                (_, true) => format!(
                    "{} = {}",
                    setting.key,
                    setting.values.first().is_some_and(|v| v == "true")
                ),
                (_, false) if setting.repeatable => {
                    let values: Vec<String> = setting
                        .values
                        .iter()
                        .map(|v| toml_value(&mask(v)))
                        .collect();
                    format!("{} = [{}]", setting.key, values.join(", "))
                }
                (_, false) => format!(
                    "{} = {}",
                    setting.key,
                    toml_value(&mask(setting.values.first().map_or("", String::as_str)))
                ),
            };
            (assignment, setting.source.to_string())
        })
        .collect();
    let width = lines.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    let mut out = String::from("# the settings of `swarm up`, and where each came from\n");
    for (assignment, source) in lines {
        out.push_str(&format!("{assignment:width$}  # {source}\n"));
    }
    out
}

/// A number if the text is one exactly as written, else a quoted TOML string.
fn toml_value(text: &str) -> String {
    let integer = text.parse::<i64>().ok().filter(|i| i.to_string() == text);
    let float = text
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && f.to_string() == text);
    match (integer, float) {
        (Some(i), _) => i.to_string(),
        (None, Some(f)) => f.to_string(),
        (None, None) => toml_edit::Value::from(text).to_string(),
    }
}

/// The text with the password of a URL's user info (`scheme://user:PASSWORD@host`) masked.
fn mask(text: &str) -> String {
    let Some(scheme_end) = text.find("://").map(|at| at + 3) else {
        return text.to_owned();
    };
    let rest = &text[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &text[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_prints_toml_with_sources_and_masks_passwords() {
        let settings = [
            Setting {
                key: "postgres".into(),
                values: vec!["postgres://swarm:s3cret@db:5432/swarm".into()],
                switch: false,
                repeatable: false,
                source: Source::Env("SWARM_DATABASE_URL".into()),
            },
            Setting {
                key: "claim-idle".into(),
                values: vec!["30".into()],
                switch: false,
                repeatable: false,
                source: Source::Default,
            },
            Setting {
                key: "consumer".into(),
                values: vec!["007".into()],
                switch: false,
                repeatable: false,
                source: Source::File("swarm.toml".into()),
            },
            Setting {
                key: "dispatch".into(),
                values: vec!["a=fan_out".into()],
                switch: false,
                repeatable: true,
                source: Source::Flag,
            },
            Setting {
                key: "no-watch".into(),
                values: vec!["false".into()],
                switch: true,
                repeatable: false,
                source: Source::Default,
            },
            Setting {
                key: "feed".into(),
                values: vec![],
                switch: false,
                repeatable: false,
                source: Source::Unset,
            },
        ];
        let shown = render(&settings);
        let lines: Vec<&str> = shown.lines().skip(1).map(str::trim_end).collect();
        let expected = [
            (
                "postgres = \"postgres://swarm:***@db:5432/swarm\"",
                "# env SWARM_DATABASE_URL",
            ),
            ("claim-idle = 30", "# default"),
            ("consumer = \"007\"", "# file swarm.toml"),
            ("dispatch = [\"a=fan_out\"]", "# flag"),
            ("no-watch = false", "# default"),
            ("# feed =", "# unset"),
        ];
        for (line, (assignment, source)) in lines.iter().zip(expected) {
            assert!(
                line.starts_with(assignment) && line.ends_with(source),
                "{line}"
            );
        }
        // What it prints reads back as TOML.
        assert!(shown.parse::<toml_edit::DocumentMut>().is_ok(), "{shown}");
        assert_eq!(mask("redis://:pw@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(mask("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(mask("postgres://user@host/db"), "postgres://user@host/db");
    }
}
