//! The command-line options of the host's capabilities: grants and limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use swarm_reactor::HostConfig;
use swarm_schemas::{Capability, validate_unit_name};

#[derive(Debug, Args)]
pub(crate) struct HostArgs {
    /// Grant a unit host capabilities its manifest declares: `UNIT=CAP[,CAP…]` with CAP one of
    /// marks, kv, http (repeatable). Logging needs no grant; everything else is denied.
    #[arg(long = "grant", value_name = "UNIT=CAPS", value_parser = parse_grant)]
    grants: Vec<(String, BTreeSet<Capability>)>,
    /// Seconds a mark takes to evaporate to half its value. Every reactor on one mesh must use
    /// the same: the field refuses another.
    #[arg(long, default_value_t = 60.0)]
    marks_half_life: f64,
    /// Seconds an HTTP request of a unit may take, connection included.
    #[arg(long, default_value_t = 10.0)]
    http_timeout: f64,
    /// Largest HTTP response body a unit gets, in bytes; a larger one fails the call.
    #[arg(long, default_value_t = 1 << 20)]
    http_max_bytes: usize,
}

/// `UNIT=CAP[,CAP…]` of `--grant`.
fn parse_grant(text: &str) -> Result<(String, BTreeSet<Capability>), String> {
    let (unit, capabilities) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not UNIT=CAP[,CAP…]"))?;
    validate_unit_name(unit).map_err(|e| e.to_string())?;
    let capabilities = capabilities
        .split(',')
        .map(|c| c.trim().parse::<Capability>())
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok((unit.to_owned(), capabilities))
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{flag} must be a positive number of seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

impl HostArgs {
    /// The configuration these options describe.
    pub(crate) fn config(&self) -> anyhow::Result<HostConfig> {
        let mut grants: BTreeMap<String, BTreeSet<Capability>> = BTreeMap::new();
        for (unit, capabilities) in &self.grants {
            grants
                .entry(unit.clone())
                .or_default()
                .extend(capabilities.iter().copied());
        }
        Ok(HostConfig {
            grants,
            marks_half_life: seconds("--marks-half-life", self.marks_half_life)?,
            http_timeout: seconds("--http-timeout", self.http_timeout)?,
            http_max_bytes: self.http_max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_grant;
    use swarm_schemas::Capability;

    #[test]
    fn grants_parse_or_say_why_not() {
        let (unit, caps) = parse_grant("forager=marks, kv").expect("grant");
        assert_eq!(unit, "forager");
        assert_eq!(
            caps.into_iter().collect::<Vec<_>>(),
            [Capability::Marks, Capability::Kv]
        );
        for (bad, says) in [
            ("forager", "UNIT=CAP"),
            ("Forager=marks", "invalid"),
            ("forager=disk", "unknown capability `disk`"),
        ] {
            let error = parse_grant(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
