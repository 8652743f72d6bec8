//! Cluster files: one TOML file describing the monitors, the kv servers, timings and limits,
//! accepted by every command as `--config FILE` (flags given on the command line win).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A cluster file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The monitor group.
    #[serde(default, rename = "monitor")]
    pub monitors: Vec<MonitorEntry>,
    /// The kv servers.
    #[serde(default, rename = "server")]
    pub servers: Vec<ServerEntry>,
    /// Where monitors keep their Raft data (`<data_dir>/monitor-<id>`) unless an entry says.
    pub data_dir: Option<PathBuf>,
    /// Protocol timings.
    #[serde(default)]
    pub timings: TimingsEntry,
    /// Size limits and session expiry.
    #[serde(default)]
    pub limits: LimitsEntry,
    /// Client behaviour.
    #[serde(default)]
    pub client: ClientEntry,
    /// Servers that must hold a write before it is acknowledged: 2 (default) or 1.
    pub min_copies: Option<u32>,
    /// Whether a primary answers reads alone under its read lease (default true).
    pub read_lease: Option<bool>,
    /// A file holding the cluster secret every RPC must prove (`--secret-file` wins).
    pub secret_file: Option<PathBuf>,
    /// This node's (or client's) TLS certificate chain, PEM (`--tls-cert` wins).
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`, PEM (`--tls-key` wins).
    pub tls_key: Option<PathBuf>,
    /// The CA that signs every node's certificate; given, listeners require client
    /// certificates it signed (`--tls-ca` wins).
    pub tls_ca: Option<PathBuf>,
}

/// One monitor node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorEntry {
    /// Raft id.
    pub id: u64,
    /// Advertised address.
    pub addr: String,
    /// Its data directory, if not under the file's `data_dir`.
    pub data_dir: Option<PathBuf>,
}

/// One kv server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// Advertised address.
    pub addr: String,
    /// Stable name (default: the address).
    pub id: Option<String>,
    /// Where it also serves the Redis protocol, if anywhere.
    pub resp: Option<String>,
}

/// `[timings]`: every field optional; absent ones take the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimingsEntry {
    /// How often kv servers ping.
    #[serde(default, with = "humantime_serde")]
    pub ping_interval: Option<Duration>,
    /// Missed pings that make a server dead.
    pub dead_pings: Option<u32>,
    /// Raft heartbeat.
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
    /// Raft election timeout, low end of the random part.
    #[serde(default, with = "humantime_serde")]
    pub election_min: Option<Duration>,
    /// Raft election timeout, high end of the random part.
    #[serde(default, with = "humantime_serde")]
    pub election_max: Option<Duration>,
    /// Snapshot the monitors' state after this many decisions.
    pub snapshot_every: Option<u64>,
}

/// `[limits]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsEntry {
    /// Largest key or value, in bytes.
    pub max_value: Option<usize>,
    /// Idle client sessions are forgotten after this long.
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    /// Most sessions holding a saved reply in the duplicate table.
    pub max_sessions: Option<usize>,
    /// Most bytes of saved replies in the duplicate table.
    pub max_session_bytes: Option<usize>,
}

/// `[client]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// How long one operation may take, retries included.
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
}

/// A cluster file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid cluster file; the message names the line and the field.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's explanation (line, column, field).
        message: String,
    },
}

impl ClusterFile {
    /// Read and check a cluster file.
    pub fn load(path: &Path) -> Result<ClusterFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterFile::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse and check the text of a cluster file.
    pub fn parse(text: &str) -> Result<ClusterFile, String> {
        let file: ClusterFile = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut ids: Vec<u64> = file.monitors.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("monitor ids must be distinct: {ids:?}"));
        }
        file.timings().validate()?;
        if let Some(deadline) = file.client.deadline {
            file.check_deadline(deadline)?;
        }
        if let Some(copies) = file.min_copies.filter(|c| !(1..=2).contains(c)) {
            return Err(format!("min_copies must be 1 or 2, not {copies}"));
        }
        Ok(file)
    }

    /// The ping interval and dead pings the file gives, defaults for the rest.
    pub fn timings(&self) -> crate::view::Timings {
        let defaults = crate::view::Timings::default();
        crate::view::Timings {
            ping_interval: self.timings.ping_interval.unwrap_or(defaults.ping_interval),
            dead_pings: self.timings.dead_pings.unwrap_or(defaults.dead_pings),
        }
    }

    /// The session TTL in force (the file's, else the default).
    pub fn session_ttl(&self) -> Duration {
        self.limits
            .session_ttl
            .unwrap_or(crate::kv::Limits::default().session_ttl)
    }

    /// Refuse a client deadline that is not shorter than the session TTL: a retry could then
    /// outlive the duplicate-table entry that makes it at-most-once.
    pub fn check_deadline(&self, deadline: Duration) -> Result<(), String> {
        check_deadline(deadline, self.session_ttl())
    }

    /// The monitors' addresses, by id.
    pub fn monitor_addrs(&self) -> Vec<String> {
        let mut monitors = self.monitors.clone();
        monitors.sort_by_key(|m| m.id);
        monitors.into_iter().map(|m| m.addr).collect()
    }
}

/// A client deadline must be shorter than the session TTL; the error names both values.
pub fn check_deadline(deadline: Duration, session_ttl: Duration) -> Result<(), String> {
    if deadline.is_zero() {
        return Err("the client deadline must be longer than zero".into());
    }
    if deadline >= session_ttl {
        return Err(format!(
            "the client deadline ({}) must be shorter than the session TTL ({}): a retry could \
             otherwise outlive the duplicate-table entry that keeps it from applying twice",
            humantime::format_duration(deadline),
            humantime::format_duration(session_ttl)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../config/local.toml");
        let file = ClusterFile::parse(text).expect("config/local.toml is valid");
        assert_eq!(file.monitors.len(), 3);
        assert_eq!(file.servers.len(), 3);
        assert_eq!(file.timings.ping_interval, Some(Duration::from_millis(100)));
        assert_eq!(file.min_copies, Some(2));
        assert_eq!(file.limits.max_sessions, Some(100_000));
        assert_eq!(
            file.monitor_addrs(),
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
        );
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let text = "[timings]\nping_interval = \"100ms\"\ndead_pings = \"five\"\n";
        let err = ClusterFile::parse(text).expect_err("a string is not a count");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("dead_pings"), "{err}");
        let err = ClusterFile::parse("[timings]\nping_intervall = \"1s\"\n").expect_err("typo");
        assert!(
            err.contains("line 2") && err.contains("ping_intervall"),
            "{err}"
        );
        let err =
            ClusterFile::parse("[timings]\nheartbeat = \"soon\"\n").expect_err("bad duration");
        assert!(err.contains("line 2") && err.contains("heartbeat"), "{err}");
        let err = ClusterFile::parse("[timings]\nping_interval = \"0s\"\n").expect_err("zero");
        assert!(err.contains("ping_interval"), "{err}");
        let err = ClusterFile::parse("[timings]\ndead_pings = 0\n").expect_err("zero");
        assert!(err.contains("dead_pings"), "{err}");
        let text = "[limits]\nsession_ttl = \"5s\"\n[client]\ndeadline = \"10s\"\n";
        let err = ClusterFile::parse(text).expect_err("deadline over the TTL");
        assert!(err.contains("10s") && err.contains("5s"), "{err}");
        let err = ClusterFile::parse("min_copies = 3\n").expect_err("three copies");
        assert!(err.contains("min_copies"), "{err}");
        let twice = "[[monitor]]\nid = 1\naddr = \"a:1\"\n[[monitor]]\nid = 1\naddr = \"b:1\"\n";
        assert!(ClusterFile::parse(twice).is_err());
    }
}
