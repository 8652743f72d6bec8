//! The Redis commands viewkv serves, one row each: what parsing checks (the name and its
//! arity) and what `COMMAND`, `COMMAND INFO` and `COMMAND DOCS` tell clients (flags, key
//! positions, summary, arguments — redis-cli builds its hints and `help` from the docs).
//! Parsing a command's arguments into a [`super::Command`] is `command.rs`'s; the rows are
//! the one list of names both read.

/// One command (or one subcommand of `CLIENT`, `COMMAND` or `CONFIG`).
#[derive(Debug)]
pub struct Spec {
    /// The name in lower case; a subcommand's is `container|sub`, as Redis writes it.
    pub name: &'static str,
    /// Redis's arity, counting the name: `n` is exactly `n` words, `-n` at least `n`.
    pub arity: i64,
    /// Redis's command flags (`readonly`, `write`, `fast`, ...).
    pub flags: &'static [&'static str],
    /// The first key's position, the last's (negative: counted from the end) and the step
    /// between keys; zeros for a command without keys.
    pub keys: (i64, i64, i64),
    /// Redis's command group (`string`, `generic`, `connection`, `server`, `cluster`).
    pub group: &'static str,
    /// The Redis version that introduced the command (viewkv's own version for its own).
    pub since: &'static str,
    /// The time it takes.
    pub complexity: &'static str,
    /// What it does, in a line.
    pub summary: &'static str,
    /// Its arguments after the name (after the subcommand's, for a subcommand).
    pub arguments: &'static [Arg],
    /// Its subcommands, for a container command.
    pub subcommands: &'static [Spec],
}

/// One argument of a command, as `COMMAND DOCS` describes it.
#[derive(Debug)]
pub struct Arg {
    /// Its name in the docs.
    pub name: &'static str,
    /// What it is.
    pub kind: Kind,
    /// The word that introduces it (`EX`, `MATCH`), if any.
    pub token: Option<&'static str>,
    /// Whether it may be left out.
    pub optional: bool,
    /// Whether it may be repeated.
    pub multiple: bool,
}

/// What an argument is, in `COMMAND DOCS`'s words.
#[derive(Debug)]
pub enum Kind {
    /// A key.
    Key,
    /// Any string.
    String,
    /// An integer.
    Integer,
    /// A floating-point number.
    Double,
    /// A glob-style pattern.
    Pattern,
    /// Only its token.
    PureToken,
    /// One of these.
    OneOf(&'static [Arg]),
    /// All of these, in order.
    Block(&'static [Arg]),
}

impl Kind {
    /// The type's name in `COMMAND DOCS`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Double => "double",
            Kind::Pattern => "pattern",
            Kind::PureToken => "pure-token",
            Kind::OneOf(_) => "oneof",
            Kind::Block(_) => "block",
        }
    }
}

const fn arg(name: &'static str, kind: Kind) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        optional: false,
        multiple: false,
    }
}

/// A word that is the argument (`NX`).
const fn word(name: &'static str, token: &'static str) -> Arg {
    arg(name, Kind::PureToken).token(token)
}

impl Arg {
    const fn token(self, token: &'static str) -> Arg {
        Arg {
            token: Some(token),
            ..self
        }
    }

    const fn optional(self) -> Arg {
        Arg {
            optional: true,
            ..self
        }
    }

    const fn multiple(self) -> Arg {
        Arg {
            multiple: true,
            ..self
        }
    }
}

/// A command without subcommands.
#[allow(clippy::too_many_arguments)]
const fn cmd(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
    since: &'static str,
    complexity: &'static str,
    summary: &'static str,
    arguments: &'static [Arg],
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        group,
        since,
        complexity,
        summary,
        arguments,
        subcommands: &[],
    }
}

/// A container command: the name is followed by one of `subcommands`.
const fn container(
    name: &'static str,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    subcommands: &'static [Spec],
) -> Spec {
    Spec {
        subcommands,
        ..cmd(
            name,
            -2,
            &[],
            NO_KEYS,
            group,
            since,
            "Depends on the subcommand.",
            summary,
            &[],
        )
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const FIRST: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);
const READ: &[&str] = &["readonly", "fast"];
const SLOW_READ: &[&str] = &["readonly"];
const WRITE: &[&str] = &["write", "denyoom", "fast"];
const REMOVE: &[&str] = &["write", "fast"];
const OPEN: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth"];
const LOCAL: &[&str] = &["noscript", "loading", "stale"];
const KEY: Arg = arg("key", Kind::Key);
const KEYS: Arg = arg("key", Kind::Key).multiple();
const VALUE: Arg = arg("value", Kind::String);
const STRING: &str = "string";
const GENERIC: &str = "generic";
const CONNECTION: &str = "connection";
const SERVER: &str = "server";
const TRANSACTIONS: &str = "transactions";
const TRANSACTION: &[&str] = &["noscript", "loading", "stale", "fast"];
const O1: &str = "O(1)";
const PER_KEY: &str = "O(N), N the number of keys given.";
const ALL_KEYS: &str = "O(N), N the number of keys stored.";
const WHEN: Arg = arg(
    "condition",
    Kind::OneOf(&[word("nx", "NX"), word("xx", "XX")]),
)
.optional();
const EXPIRE_WHEN: Arg = arg(
    "condition",
    Kind::OneOf(&[
        word("nx", "NX"),
        word("xx", "XX"),
        word("gt", "GT"),
        word("lt", "LT"),
    ]),
)
.optional();
const FLUSH_MODE: Arg = arg(
    "flush-type",
    Kind::OneOf(&[word("async", "ASYNC"), word("sync", "SYNC")]),
)
.optional();
const EXPIRATION: Arg = arg(
    "expiration",
    Kind::OneOf(&[
        arg("seconds", Kind::Integer).token("EX"),
        arg("milliseconds", Kind::Integer).token("PX"),
        word("keepttl", "KEEPTTL"),
    ]),
)
.optional();
const NAMES: Arg = arg("command-name", Kind::String).optional().multiple();

/// `CLIENT`'s subcommands.
#[rustfmt::skip]
const CLIENT: &[Spec] = &[
    cmd("client|getname", 2, LOCAL, NO_KEYS, CONNECTION, "2.6.9", O1, "The name this connection was given, or nil.", &[]),
    cmd("client|help", 2, LOCAL, NO_KEYS, CONNECTION, "5.0.0", O1, "What CLIENT's subcommands do.", &[]),
    cmd("client|id", 2, LOCAL, NO_KEYS, CONNECTION, "5.0.0", O1, "This connection's number.", &[]),
    cmd("client|info", 2, LOCAL, NO_KEYS, CONNECTION, "6.2.0", O1, "This connection, described in one line of field=value pairs.", &[]),
    cmd("client|list", -2, LOCAL, NO_KEYS, CONNECTION, "2.4.0", O1, "The connections of this client: this one's line (each connection is its own session).", &[
        arg("client-type", Kind::OneOf(&[word("normal", "NORMAL"), word("master", "MASTER"), word("replica", "REPLICA"), word("pubsub", "PUBSUB")])).token("TYPE").optional(),
        arg("client-id", Kind::Integer).token("ID").optional().multiple(),
    ]),
    cmd("client|no-evict", 3, LOCAL, NO_KEYS, CONNECTION, "7.0.0", O1, "Accepted and ignored: viewkv never evicts a connection for its memory.", &[
        arg("enabled", Kind::OneOf(&[word("on", "ON"), word("off", "OFF")])),
    ]),
    cmd("client|setinfo", 4, LOCAL, NO_KEYS, CONNECTION, "7.2.0", O1, "Accepted and ignored (client libraries send their name and version).", &[
        arg("attr", Kind::OneOf(&[arg("libname", Kind::String).token("LIB-NAME"), arg("libver", Kind::String).token("LIB-VER")])),
    ]),
    cmd("client|setname", 3, LOCAL, NO_KEYS, CONNECTION, "2.6.9", O1, "Name this connection (no spaces), as CLIENT INFO shows it.", &[
        arg("connection-name", Kind::String),
    ]),
];

/// `COMMAND`'s subcommands.
#[rustfmt::skip]
const COMMAND: &[Spec] = &[
    cmd("command|count", 2, LOCAL, NO_KEYS, SERVER, "2.8.13", O1, "How many commands viewkv serves.", &[]),
    cmd("command|docs", -2, LOCAL, NO_KEYS, SERVER, "7.0.0", "O(N), N the number of commands asked about.", "Summary, arguments and more of the commands named (all if none).", &[NAMES]),
    cmd("command|help", 2, LOCAL, NO_KEYS, SERVER, "5.0.0", O1, "What COMMAND's subcommands do.", &[]),
    cmd("command|info", -2, LOCAL, NO_KEYS, SERVER, "2.8.13", "O(N), N the number of commands asked about.", "Arity, flags and key positions of the commands named (all if none).", &[NAMES]),
    cmd("command|list", 2, LOCAL, NO_KEYS, SERVER, "7.0.0", "O(N), N the number of commands.", "The names of the commands viewkv serves.", &[]),
];

/// `CONFIG`'s subcommands.
#[rustfmt::skip]
const CONFIG: &[Spec] = &[
    cmd("config|get", -3, LOCAL, NO_KEYS, SERVER, "2.0.0", O1, "Always empty: viewkv's settings live in its cluster file, not in Redis parameters.", &[
        arg("parameter", Kind::String).multiple(),
    ]),
    cmd("config|help", 2, LOCAL, NO_KEYS, SERVER, "5.0.0", O1, "What CONFIG's subcommands do.", &[]),
];

/// Every command served, in name order.
#[rustfmt::skip]
pub static COMMANDS: &[Spec] = &[
    cmd("append", 3, WRITE, FIRST, STRING, "2.0.0", O1, "Append to a key's value (a missing key counts as empty); the new length.", &[KEY, VALUE]),
    cmd("auth", -2, OPEN, NO_KEYS, CONNECTION, "1.0.0", "O(N), N the length of the password.", "Prove the cluster secret (any user name is accepted).", &[
        arg("username", Kind::String).optional(), arg("password", Kind::String),
    ]),
    container("client", CONNECTION, "2.4.0", "This connection's name, number and description.", CLIENT),
    // Alone, COMMAND answers what COMMAND INFO does for every command.
    Spec { arity: -1, ..container("command", SERVER, "2.8.13", "What viewkv knows of its commands (alone: COMMAND INFO of all).", COMMAND) },
    container("config", SERVER, "2.0.0", "Redis's configuration parameters, of which viewkv has none.", CONFIG),
    cmd("dbsize", 1, READ, NO_KEYS, SERVER, "1.0.0", O1, "How many keys the service holds.", &[]),
    cmd("decr", 2, WRITE, FIRST, STRING, "1.0.0", O1, "Subtract one from a key's integer value (missing: 0); the result.", &[KEY]),
    cmd("decrby", 3, WRITE, FIRST, STRING, "1.0.0", O1, "Subtract an amount from a key's integer value (missing: 0); the result.", &[KEY, arg("decrement", Kind::Integer)]),
    cmd("del", -2, &["write"], ALL, GENERIC, "1.0.0", PER_KEY, "Remove the keys in one operation; how many existed.", &[KEYS]),
    cmd("discard", 1, TRANSACTION, NO_KEYS, TRANSACTIONS, "2.0.0", "O(N), N the number of commands queued.", "Drop the commands queued since MULTI.", &[]),
    cmd("echo", 2, &["fast"], NO_KEYS, CONNECTION, "1.0.0", O1, "Answer with the message.", &[arg("message", Kind::String)]),
    cmd("exec", 1, &["noscript", "loading", "stale"], NO_KEYS, TRANSACTIONS, "1.2.0", "Depends on the commands queued.", "Run the commands queued since MULTI as one operation, nothing in between; their replies.", &[]),
    cmd("exists", -2, READ, ALL, GENERIC, "1.0.0", PER_KEY, "Count, in one operation, how many of the keys exist (a repeated key each time).", &[KEYS]),
    cmd("expire", -3, REMOVE, FIRST, GENERIC, "1.0.0", O1, "Make a key expire after a number of seconds (0 or less: remove it); 1 if set.", &[KEY, arg("seconds", Kind::Integer), EXPIRE_WHEN]),
    cmd("flushall", -1, &["write"], NO_KEYS, SERVER, "1.0.0", ALL_KEYS, "Remove every key (the service has one database).", &[FLUSH_MODE]),
    cmd("flushdb", -1, &["write"], NO_KEYS, SERVER, "1.0.0", ALL_KEYS, "Remove every key.", &[FLUSH_MODE]),
    cmd("get", 2, READ, FIRST, STRING, "1.0.0", O1, "A key's value, or nil if it is missing.", &[KEY]),
    cmd("getdel", 2, REMOVE, FIRST, STRING, "6.2.0", O1, "Remove a key and answer the value it had.", &[KEY]),
    cmd("getset", 3, WRITE, FIRST, STRING, "1.0.0", O1, "Set a key's value and answer the one it replaced.", &[KEY, VALUE]),
    cmd("hello", -1, OPEN, NO_KEYS, CONNECTION, "6.0.0", O1, "Choose the protocol (2 or 3), authenticate and name the connection in one go.", &[
        arg("arguments", Kind::Block(&[
            arg("protover", Kind::Integer),
            arg("auth", Kind::Block(&[arg("username", Kind::String), arg("password", Kind::String)])).token("AUTH").optional(),
            arg("clientname", Kind::String).token("SETNAME").optional(),
        ])).optional(),
    ]),
    cmd("incr", 2, WRITE, FIRST, STRING, "1.0.0", O1, "Add one to a key's integer value (missing: 0); the result.", &[KEY]),
    cmd("incrby", 3, WRITE, FIRST, STRING, "1.0.0", O1, "Add an amount to a key's integer value (missing: 0); the result.", &[KEY, arg("increment", Kind::Integer)]),
    cmd("incrbyfloat", 3, WRITE, FIRST, STRING, "2.6.0", O1, "Add a decimal amount to a key's number (missing: 0); the result.", &[KEY, arg("increment", Kind::Double)]),
    cmd("info", -1, LOCAL, NO_KEYS, SERVER, "1.0.0", O1, "This server and the service: sections server, replication (the view), memory and keyspace.", &[
        arg("section", Kind::String).optional().multiple(),
    ]),
    cmd("keys", 2, SLOW_READ, NO_KEYS, GENERIC, "1.0.0", ALL_KEYS, "Every key matching a glob-style pattern.", &[arg("pattern", Kind::Pattern)]),
    cmd("mget", -2, READ, ALL, STRING, "1.0.0", PER_KEY, "The values of the keys as of one moment (nil for a missing key).", &[KEYS]),
    cmd("mset", -3, &["write", "denyoom"], (1, -1, 2), STRING, "1.0.1", PER_KEY, "Set several keys in one operation: all of them or none.", &[
        arg("data", Kind::Block(&[KEY, VALUE])).multiple(),
    ]),
    cmd("msetnx", -3, &["write", "denyoom"], (1, -1, 2), STRING, "1.0.1", PER_KEY, "Set several keys in one operation only if none of them exists; 1 if set.", &[
        arg("data", Kind::Block(&[KEY, VALUE])).multiple(),
    ]),
    cmd("multi", 1, TRANSACTION, NO_KEYS, TRANSACTIONS, "1.2.0", O1, "Queue the commands that follow (one-operation data commands only) until EXEC or DISCARD.", &[]),
    cmd("persist", 2, REMOVE, FIRST, GENERIC, "2.2.0", O1, "Make a key live for ever again; 1 if it had a time to live.", &[KEY]),
    cmd("pexpire", -3, REMOVE, FIRST, GENERIC, "2.6.0", O1, "Make a key expire after a number of milliseconds (0 or less: remove it); 1 if set.", &[KEY, arg("milliseconds", Kind::Integer), EXPIRE_WHEN]),
    cmd("ping", -1, &["fast", "stale"], NO_KEYS, CONNECTION, "1.0.0", O1, "PONG, or the message given.", &[arg("message", Kind::String).optional()]),
    cmd("psetex", 4, &["write", "denyoom"], FIRST, STRING, "2.6.0", O1, "Set a key's value with a time to live in milliseconds.", &[KEY, arg("milliseconds", Kind::Integer), VALUE]),
    cmd("pttl", 2, READ, FIRST, GENERIC, "2.6.0", O1, "A key's time to live in milliseconds (-1: none, -2: no such key).", &[KEY]),
    cmd("puthash", 3, WRITE, FIRST, STRING, env!("CARGO_PKG_VERSION"), O1, "viewkv's own: store the FNV-1a hash of the old value and the given one; the old value.", &[KEY, VALUE]),
    cmd("quit", -1, OPEN, NO_KEYS, CONNECTION, "1.0.0", O1, "Close the connection once everything before it is answered.", &[]),
    cmd("readonly", 1, &["loading", "stale", "fast"], NO_KEYS, "cluster", "3.0.0", O1, "Let this connection's reads be stale: answered from one replica's own state.", &[]),
    cmd("readwrite", 1, &["loading", "stale", "fast"], NO_KEYS, "cluster", "3.0.0", O1, "Make this connection's reads linearizable again (the default).", &[]),
    cmd("reset", 1, OPEN, NO_KEYS, CONNECTION, "6.2.0", O1, "Return the connection to a new one's state: RESP2, no name, unauthenticated if the cluster has a secret, linearizable reads.", &[]),
    cmd("scan", -2, SLOW_READ, NO_KEYS, GENERIC, "2.8.0", "O(1) a call, O(N) a whole iteration, N the number of keys.", "Iterate over the keys, a page a call; a key present throughout is returned once.", &[
        arg("cursor", Kind::Integer),
        arg("pattern", Kind::Pattern).token("MATCH").optional(),
        arg("count", Kind::Integer).token("COUNT").optional(),
        arg("type", Kind::String).token("TYPE").optional(),
    ]),
    cmd("select", 2, &["loading", "stale", "fast"], NO_KEYS, CONNECTION, "1.0.0", O1, "Choose database 0, the only one.", &[arg("index", Kind::Integer)]),
    cmd("set", -3, &["write", "denyoom"], FIRST, STRING, "1.0.0", O1, "Set a key's value, if it exists (XX) or not (NX), with a time to live or keeping it.", &[
        KEY, VALUE, WHEN, word("get", "GET").optional(), EXPIRATION,
    ]),
    cmd("setex", 4, &["write", "denyoom"], FIRST, STRING, "2.0.0", O1, "Set a key's value with a time to live in seconds.", &[KEY, arg("seconds", Kind::Integer), VALUE]),
    cmd("setnx", 3, WRITE, FIRST, STRING, "1.0.0", O1, "Set a key's value only if it is missing; 1 if set.", &[KEY, VALUE]),
    cmd("strlen", 2, READ, FIRST, STRING, "2.2.0", O1, "The length of a key's value (0 if it is missing).", &[KEY]),
    cmd("ttl", 2, READ, FIRST, GENERIC, "1.0.0", O1, "A key's time to live in seconds (-1: none, -2: no such key).", &[KEY]),
    cmd("type", 2, READ, FIRST, GENERIC, "1.0.0", O1, "string, or none for a missing key: every value is a string.", &[KEY]),
    cmd("unlink", -2, REMOVE, ALL, GENERIC, "4.0.0", PER_KEY, "Remove the keys in one operation, as DEL does; how many existed.", &[KEYS]),
];

/// The command called `name` (any case).
pub fn command(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The command or subcommand called `name` (any case; a subcommand as `container|sub`).
pub fn find(name: &[u8]) -> Option<&'static Spec> {
    match name.iter().position(|b| *b == b'|') {
        Some(bar) => command(&name[..bar])?.sub(&name[bar + 1..]),
        None => command(name),
    }
}

impl Spec {
    /// The subcommand `sub` (any case) of this container command.
    pub fn sub(&self, sub: &[u8]) -> Option<&'static Spec> {
        let wanted = format!("{}|{}", self.name, String::from_utf8_lossy(sub));
        self.subcommands
            .iter()
            .find(|spec| spec.name.eq_ignore_ascii_case(&wanted))
    }

    /// Whether `words` words (the name included) suit the arity.
    pub fn fits(&self, words: usize) -> bool {
        let words = words as i64;
        if self.arity >= 0 {
            words == self.arity
        } else {
            words >= -self.arity
        }
    }

    /// The `@category` names Redis's ACLs would file the command under.
    pub fn categories(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.flags.contains(&"write") {
            out.push("@write");
        }
        if self.flags.contains(&"readonly") {
            out.push("@read");
        }
        match self.group {
            STRING => out.push("@string"),
            GENERIC => out.push("@keyspace"),
            CONNECTION | "cluster" => out.push("@connection"),
            _ => {}
        }
        out.push(if self.flags.contains(&"fast") {
            "@fast"
        } else {
            "@slow"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_lower_case_and_found_in_any_case() {
        let names: Vec<&str> = COMMANDS.iter().map(|spec| spec.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "in name order, once each");
        for spec in COMMANDS {
            assert_eq!(spec.name, spec.name.to_lowercase());
            assert!(find(spec.name.to_uppercase().as_bytes()).is_some());
            for sub in spec.subcommands {
                let (container, word) = sub.name.split_once('|').expect("container|sub");
                assert_eq!(container, spec.name);
                assert_eq!(
                    spec.sub(word.to_uppercase().as_bytes()).map(|s| s.name),
                    Some(sub.name)
                );
                assert_eq!(find(sub.name.as_bytes()).map(|s| s.name), Some(sub.name));
            }
        }
        assert!(find(b"frobnicate").is_none() && find(b"client|frob").is_none());
        assert!(
            command(b"client|id").is_none(),
            "a subcommand is no command"
        );
    }

    #[test]
    fn arity_counts_the_name() {
        let get = find(b"GET").expect("get");
        assert!(!get.fits(1) && get.fits(2) && !get.fits(3));
        let del = find(b"del").expect("del");
        assert!(!del.fits(1) && del.fits(2) && del.fits(9));
        assert_eq!(get.categories(), ["@read", "@string", "@fast"]);
        assert_eq!(
            find(b"flushdb").expect("flushdb").categories(),
            ["@write", "@slow"]
        );
    }
}
