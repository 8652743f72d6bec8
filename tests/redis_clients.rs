//! Clients no one here wrote, against a `viewkv up` cluster (3 monitors, 3 kv servers, each
//! with a Redis-protocol port): Debian's `redis-cli` (one command per run, and its
//! interactive mode through a pipe), `redis-benchmark`, and the Python `redis` package (a
//! connection pool, a pipeline, RESP2 and RESP3) — on servers that are not the primary too,
//! and through a `kill -9` of the primary without losing an acknowledged write.
//!
//! `.ci/run` installs `redis-tools` and the Python package.

#[path = "common/procs.rs"]
mod procs;
#[path = "common/up.rs"]
mod up;

use std::process::{Command, Stdio};

use procs::{run, viewkv, wait_for};
use up::Up;

#[test]
fn redis_cli_runs_the_string_commands_against_any_server() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = Up::start(dir.path());
    let (primary, _) = up.roles();
    let idle = up.idle_port();
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "PONG"),
        (&["ECHO", "hi there"], "hi there"),
        (&["SET", "k", "v"], "OK"),
        (&["GET", "k"], "v"),
        (&["SET", "k", "v2", "NX"], ""),
        (&["SET", "k", "v3", "XX", "GET"], "v"),
        (&["SETNX", "k", "x"], "0"),
        (&["GETSET", "k", "y"], "v3"),
        (&["GETDEL", "k"], "y"),
        (&["GET", "k"], ""),
        (&["APPEND", "a", "hello"], "5"),
        (&["APPEND", "a", " world"], "11"),
        (&["STRLEN", "a"], "11"),
        (&["INCR", "n"], "1"),
        (&["INCRBY", "n", "41"], "42"),
        (&["DECR", "n"], "41"),
        (&["DECRBY", "n", "1"], "40"),
        (
            &["INCR", "a"],
            "ERR value is not an integer or out of range",
        ),
        (&["MSET", "x", "1", "y", "2"], "OK"),
        (&["MGET", "x", "y", "nope"], "1\n2"),
        (&["MGET", "x", "nope", "x"], "1\n\n1"),
        (&["EXISTS", "x", "x", "nope"], "2"),
        (&["EXISTS", "x", "y", "nope"], "2"),
        (&["DEL", "x", "y", "nope"], "2"),
        (&["UNLINK", "x", "x"], "0"),
        (
            &["MGET"],
            "ERR wrong number of arguments for 'mget' command",
        ),
        (&["TYPE", "a"], "string"),
        (&["TYPE", "nope"], "none"),
        (&["DBSIZE"], "2"),
        (&["SELECT", "0"], "OK"),
        (&["PUTHASH", "h", "v"], ""),
        (&["SET", "huge", "v"], "OK"),
        (&["PEXPIRE", "huge", "9223372036854775807"], "1"),
        (&["TTL", "huge"], "9223372036854775"),
        (&["DEL", "huge"], "1"),
        (&["MSETNX", "m1", "1", "m2", "2"], "1"),
        (&["MSETNX", "m2", "x", "m3", "3"], "0"),
        (&["MGET", "m1", "m2", "m3"], "1\n2"),
        (&["INCRBYFLOAT", "fl", "10.5"], "10.5"),
        (&["INCRBYFLOAT", "fl", "0.1"], "10.6"),
        (&["INCRBYFLOAT", "a", "1"], "ERR value is not a valid float"),
        (
            &["FROB", "x"],
            "ERR unknown command 'FROB', with args beginning with: 'x'",
        ),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
    ];
    for (args, want) in cases {
        let (code, out) = up.cli(idle, args);
        assert_eq!(code, 0, "{args:?}");
        assert_eq!(out.trim_end_matches('\n').trim_end(), *want, "{args:?}");
    }
    // The same data on every server's port, the primary's included.
    for port in up.resp.values() {
        assert_eq!(up.cli(*port, &["GET", "a"]).1.trim(), "hello world");
    }
    // KEYS and SCAN (redis-cli's own --scan loop, pages of 10) see every key once.
    let mut mset = vec!["MSET".to_string()];
    for i in 0..250 {
        mset.extend([format!("scan:{i}"), i.to_string()]);
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(up.cli(idle, &mset).1.trim(), "OK");
    let sorted = |out: String| {
        let mut keys: Vec<String> = out.lines().map(str::to_string).collect();
        keys.sort();
        keys
    };
    let mut expected: Vec<String> = (0..250).map(|i| format!("scan:{i}")).collect();
    expected.sort();
    let scanned = up.cli(idle, &["--scan", "--pattern", "scan:*"]);
    assert_eq!(scanned.0, 0, "redis-cli --scan");
    assert_eq!(sorted(scanned.1), expected, "redis-cli --scan");
    let ones: Vec<String> = expected
        .iter()
        .filter(|k| k.starts_with("scan:1"))
        .cloned()
        .collect();
    assert_eq!(sorted(up.cli(idle, &["KEYS", "scan:1*"]).1), ones, "KEYS");
    assert_eq!(up.cli(idle, &["KEYS", "nothing*"]).1.trim(), "");
    let (_, bad) = up.cli(idle, &["SCAN", "12345"]);
    assert_eq!(bad.trim(), "ERR invalid cursor");
    let (_, info) = up.cli(idle, &["INFO", "replication"]);
    assert!(info.contains("role:master"), "{info}");
    assert!(
        info.contains(&format!("viewkv_primary:{primary}")),
        "{info}"
    );
    // Without the secret: refused.
    let (_, out, _) = run("redis-cli", &["-p", &idle.to_string(), "GET", "a"]);
    assert!(out.contains("NOAUTH"), "{out}");
    // Interactive mode through a pipe: one command per line, answered in order (what
    // redis-cli prints for Redis 7 given the same lines).
    let input = "SET piped 1\nINCR piped\nGET piped\nMGET piped nope piped\n\
                 EXISTS piped piped nope\nDEL piped piped nope\nMGET piped\nQUIT\n";
    assert_eq!(up.piped(idle, input), "OK\n2\n2\n2\n\n2\n2\n1\n\n");
    // A pipeline of multi-key commands read at once, answered byte for byte as Redis 7
    // answers the same bytes, on a server that forwards and on the primary.
    let commands: &[&[&str]] = &[
        &["MSET", "p1", "a", "p2", "b"],
        &["MGET", "p1", "nope", "p2", "p1"],
        &["EXISTS", "p1", "p1", "nope"],
        &["DEL", "p1", "p1", "nope"],
        &["MGET", "p1", "p2"],
        &["UNLINK", "p2", "p3"],
        &["EXISTS", "p2"],
        &["MGET"],
        &["DEL"],
        &["GET", "p2"],
    ];
    let redis: &[u8] = b"+OK\r\n*4\r\n$1\r\na\r\n$-1\r\n$1\r\nb\r\n$1\r\na\r\n:2\r\n:1\r\n\
        *2\r\n$-1\r\n$1\r\nb\r\n:1\r\n:0\r\n\
        -ERR wrong number of arguments for 'mget' command\r\n\
        -ERR wrong number of arguments for 'del' command\r\n$-1\r\n";
    for port in [idle, up.resp[&primary]] {
        let answer = up.pipelined(port, commands, redis);
        assert_eq!(
            String::from_utf8_lossy(&answer),
            String::from_utf8_lossy(redis),
            "port {port}"
        );
    }
    // Expiry: a key with a time to live is gone once it passes, from every port.
    assert_eq!(
        up.cli(idle, &["SET", "brief", "v", "PX", "300"]).1.trim(),
        "OK"
    );
    let number = |args: &[&str]| -> i64 { up.cli(idle, args).1.trim().parse().expect("a number") };
    assert_eq!(
        up.cli(idle, &["SET", "mid", "v", "PX", "600000"]).1.trim(),
        "OK"
    );
    let pttl = number(&["PTTL", "mid"]);
    assert!((1..=600_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(up.cli(idle, &["SETEX", "long", "100", "v"]).1.trim(), "OK");
    let ttl = number(&["TTL", "long"]);
    assert!((1..=100).contains(&ttl), "TTL {ttl}");
    assert_eq!(up.cli(idle, &["EXPIRE", "long", "50", "GT"]).1.trim(), "0");
    assert_eq!(up.cli(idle, &["EXPIRE", "long", "500", "GT"]).1.trim(), "1");
    assert_eq!(up.cli(idle, &["EXPIRE", "long", "600", "NX"]).1.trim(), "0");
    assert_eq!(up.cli(idle, &["PERSIST", "long"]).1.trim(), "1");
    assert_eq!(up.cli(idle, &["TTL", "long"]).1.trim(), "-1");
    assert_eq!(up.cli(idle, &["TTL", "nothing"]).1.trim(), "-2");
    assert_eq!(up.cli(idle, &["EXPIRE", "long", "0"]).1.trim(), "1");
    assert_eq!(up.cli(idle, &["EXISTS", "long"]).1.trim(), "0");
    wait_for("the key with PX 300 to expire", || {
        let gone = |port: &u16| up.cli(*port, &["GET", "brief"]).1.trim().is_empty();
        up.resp.values().all(gone).then_some(())
    });
    // FLUSHDB empties the service, as seen from every port.
    assert_eq!(up.cli(idle, &["FLUSHDB"]).1.trim(), "OK");
    for port in up.resp.values() {
        assert_eq!(up.cli(*port, &["DBSIZE"]).1.trim(), "0");
    }
}

#[test]
fn redis_cli_reads_the_command_docs_and_the_connection_describes_itself() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = Up::start(dir.path());
    // Six processes share the machine: `viewkv up` sizes each one's runtime to a share of it
    // (unless TOKIO_WORKER_THREADS sizes them all).
    let sized_by_env = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    for (server, pid) in up.pids.iter().filter(|_| !sized_by_env) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("a command line");
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        assert!(
            args.windows(2)
                .any(|w| w[0] == b"--worker-threads" && w[1] != b"0"),
            "server {server} started without --worker-threads: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    let (primary, backup) = up.roles();
    let port = up.idle_port();
    // COMMAND: the table of what is served.
    let count: usize = up
        .cli(port, &["COMMAND", "COUNT"])
        .1
        .trim()
        .parse()
        .expect("a count");
    let (_, list) = up.cli(port, &["COMMAND", "LIST"]);
    assert_eq!(list.lines().count(), count, "{list}");
    for name in ["get", "mget", "del", "client", "reset", "puthash"] {
        assert!(list.lines().any(|l| l == name), "{name} in {list}");
    }
    let (_, info) = up.cli(port, &["COMMAND", "INFO", "mget", "nosuch"]);
    assert!(
        info.starts_with("mget\n-2\nreadonly\nfast\n1\n-1\n1\n"),
        "{info}"
    );
    let (_, docs) = up.cli(port, &["COMMAND", "DOCS", "mget"]);
    for line in [
        "mget",
        "summary",
        "since",
        "1.0.0",
        "group",
        "string",
        "complexity",
        "arguments",
        "multiple",
    ] {
        assert!(docs.lines().any(|l| l == line), "{line} in {docs}");
    }
    // redis-cli on a terminal reads COMMAND DOCS when it starts and builds `help` (and its
    // hints) from it: the summary it prints is viewkv's.
    let (_, summary) = up.cli(port, &["COMMAND", "DOCS", "mget"]);
    let summary = summary.lines().nth(2).expect("the summary").to_string();
    let mut terminal = Command::new("script")
        .args([
            "-qec",
            &format!("redis-cli -p {port} -a {} --no-auth-warning", up.secret),
            "/dev/null",
        ])
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    {
        use std::io::Write as _;
        let mut stdin = terminal.stdin.take().expect("stdin");
        stdin
            .write_all(b"help MGET\nhelp SET\nhelp CLIENT SETNAME\nquit\n")
            .expect("write");
    }
    let out = terminal.wait_with_output().expect("redis-cli ends");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    for shown in [
        summary.as_str(),
        "key [key ...]",
        "key value [NX|XX] [GET] [EX seconds|PX milliseconds|KEEPTTL]",
        "connection-name",
    ] {
        assert!(screen.contains(shown), "{shown:?} in {screen}");
    }
    // INFO: every section, the view as this server knows it.
    let (_, info) = up.cli(port, &["INFO"]);
    for line in [
        "# Server",
        "redis_version:7.0.0",
        "# Replication",
        "role:master",
        "viewkv_role:idle",
        &format!("viewkv_primary:{primary}"),
        &format!("viewkv_backup:{backup}"),
        "# Memory",
        "# Keyspace",
    ] {
        assert!(
            info.lines().any(|l| l.trim_end() == line),
            "{line} in {info}"
        );
    }
    assert!(
        info.contains("viewkv_view:") && info.contains("used_memory_rss:"),
        "{info}"
    );
    assert_eq!(up.cli(port, &["SET", "k", "v"]).1.trim(), "OK");
    let (_, keyspace) = up.cli(port, &["INFO", "keyspace"]);
    assert!(keyspace.contains("db0:keys=1,"), "{keyspace}");
    // CLIENT and RESET, on one connection: its name, its line, READONLY's flag, and RESET
    // back to a new connection (unauthenticated again, since the cluster has a secret).
    let input = "CLIENT SETNAME app\nCLIENT GETNAME\nCLIENT ID\nCLIENT INFO\nREADONLY\n\
                 CLIENT LIST\nCLIENT SETNAME \"a b\"\nRESET\nCLIENT GETNAME\nGET k\n\
                 AUTH {secret}\nCLIENT INFO\nGET k\nQUIT\n";
    let out = up.piped(port, &input.replace("{secret}", &up.secret));
    // What redis-cli prints for these replies: a line each, an error followed by an empty
    // one, and nil as an empty line.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 16, "{out}");
    assert_eq!(lines[..2], ["OK", "app"], "{out}");
    let id: u64 = lines[2].parse().expect("an id");
    let fields = |line: &str, want: &[String]| {
        for field in want {
            assert!(line.contains(field.as_str()), "{field:?} in {line}");
        }
    };
    fields(
        lines[3],
        &[
            format!("id={id} "),
            format!(" laddr=127.0.0.1:{port} "),
            " name=app ".into(),
            " flags=N ".into(),
            " cmd=client|info ".into(),
            " resp=2".into(),
        ],
    );
    assert_eq!(lines[4], "OK", "{out}");
    fields(
        lines[5],
        &[
            format!("id={id} "),
            " flags=r ".into(),
            " cmd=client|list ".into(),
        ],
    );
    // After RESET the connection is a new one: with the cluster's secret, unauthenticated.
    assert_eq!(
        lines[6..14],
        [
            "ERR Client names cannot contain spaces, newlines or special characters.",
            "",
            "RESET",
            "NOAUTH Authentication required.",
            "",
            "NOAUTH Authentication required.",
            "",
            "OK",
        ],
        "{out}"
    );
    fields(
        lines[14],
        &[format!("id={id} "), " name= ".into(), " flags=N ".into()],
    );
    assert_eq!(lines[15], "v", "{out}");
    // Only this connection is listed: another id lists nothing.
    assert_eq!(
        up.cli(port, &["CLIENT", "LIST", "ID", "999999"]).1.trim(),
        ""
    );
}

#[test]
fn python_redis_with_a_pool_a_pipeline_and_both_protocols() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = Up::start(dir.path());
    let program = r#"
import os, threading, redis
port, secret = int(os.environ["PORT"]), os.environ["SECRET"]
for protocol in (2, 3):
    pool = redis.ConnectionPool(host="127.0.0.1", port=port, password=secret, protocol=protocol)
    r = redis.Redis(connection_pool=pool)
    key = lambda name: f"{port}:{name}{protocol}"
    assert r.ping()
    assert r.set(key("p"), "one")
    assert r.get(key("p")) == b"one"
    assert r.set(key("p"), "two", nx=True) is None
    assert r.incr(key("n")) == 1
    # READONLY: this connection's reads are stale reads from a replica's own state; an
    # acknowledged write is on the backup, so it is there to see.
    one = redis.Redis(host="127.0.0.1", port=port, password=secret, protocol=protocol,
                      single_connection_client=True)
    assert one.readonly() and one.get(key("p")) == b"one"
    assert one.readwrite() and one.get(key("p")) == b"one"
    one.close()
    pipe = r.pipeline(transaction=False)
    pipe.set(key("a"), "1").incr(key("c")).get(key("a")).getdel(key("a"))
    assert pipe.execute() == [True, 1, b"1", b"1"], "pipeline"
    # A long pipeline on one key runs in order: each INCR sees the one before it, the SETs
    # land in order and a GET sees the last of them.
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.incr(key("order"))
    for i in range(30):
        pipe.set(key("last"), i)
    pipe.get(key("last")).get(key("order"))
    assert pipe.execute() == list(range(1, 101)) + [True] * 30 + [b"29", b"100"], "in order"
    def writer():
        for i in range(50):
            r.incr(key("shared"))
    threads = [threading.Thread(target=writer) for t in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert r.get(key("shared")) == b"400", r.get(key("shared"))
    assert r.info("replication")["role"] == "master"
    assert r.set(key("ttl"), "v", ex=100) and 1 <= r.ttl(key("ttl")) <= 100
    assert r.persist(key("ttl")) and r.ttl(key("ttl")) == -1
    r.delete(key("ttl"))
    mine = key("*")
    scanned = sorted(r.scan_iter(match=mine, count=2))
    assert scanned == sorted(r.keys(mine)) and len(scanned) == 6, scanned
print(r.dbsize())
"#;
    // On a server that is not the primary, then on the primary: 6 keys per protocol each.
    let (primary, _) = up.roles();
    assert_eq!(up.python(up.idle_port(), program).trim(), "12");
    assert_eq!(up.python(up.resp[&primary], program).trim(), "24");
}

#[test]
fn transactions_are_atomic_and_all_or_nothing_for_redis_py_and_redis_cli() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = Up::start(dir.path());
    // redis-py's default pipeline is a MULTI/EXEC transaction. Writers increment two keys in
    // one transaction while readers read both in one: were a transaction not applied as one
    // operation, a reader would see them differ.
    let program = r#"
import os, threading, redis
port, secret = int(os.environ["PORT"]), os.environ["SECRET"]
for protocol in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=port, password=secret, protocol=protocol)
    key = lambda name: f"{port}:{name}{protocol}"
    pipe = r.pipeline()
    pipe.set(key("s"), "v").incr(key("n")).get(key("s")).mget(key("s"), key("none"))
    assert pipe.execute() == [True, 1, b"v", [b"v", None]], "one transaction"
    assert r.pipeline().execute() == [], "an empty transaction"
    pipe = r.pipeline()
    pipe.set(key("t"), "text").incr(key("t")).set(key("after"), "ran")
    replies = pipe.execute(raise_on_error=False)
    assert isinstance(replies[1], redis.ResponseError), replies
    assert replies[0] is True and replies[2] is True, replies
    assert r.get(key("after")) == b"ran", "an error at run time does not stop the others"
    seen, stop = [], threading.Event()
    def writer():
        for i in range(100):
            r.pipeline().incr(key("a")).incr(key("b")).execute()
    def reader():
        while not stop.is_set():
            a, b = r.pipeline().get(key("a")).get(key("b")).execute()
            seen.append((a, b))
    writers = [threading.Thread(target=writer) for _ in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    [t.start() for t in writers + readers]
    [t.join() for t in writers]
    stop.set()
    [t.join() for t in readers]
    torn = [pair for pair in seen if pair[0] != pair[1]]
    assert not torn and len(seen) > 0, (torn[:5], len(seen))
    assert r.mget(key("a"), key("b")) == [b"400", b"400"]
print("ok")
"#;
    let (primary, _) = up.roles();
    for port in [up.idle_port(), up.resp[&primary]] {
        assert_eq!(up.python(port, program).trim(), "ok", "through port {port}");
    }
    // A command that cannot be queued discards the transaction: nothing in it runs.
    let port = up.idle_port();
    let out = up.piped(
        port,
        "MULTI\nSET cli:x 1\nINCR\nKEYS *\nEXEC\nEXISTS cli:x\nMULTI\nSET cli:y 1\nDISCARD\nEXISTS cli:y\n\
         EXEC\nMULTI\nMULTI\nINCR cli:n\nINCR cli:n\nEXEC\n",
    );
    // redis-cli writes an empty line after each error.
    let mut lines: Vec<&str> = Vec::new();
    for line in out.lines() {
        let after_error = lines
            .last()
            .is_some_and(|l| l.starts_with("ERR") || l.starts_with("EXECABORT"));
        if !(line.is_empty() && after_error) {
            lines.push(line);
        }
    }
    assert_eq!(lines[0], "OK", "{out}");
    assert_eq!(lines[1], "QUEUED", "{out}");
    assert!(lines[2].contains("wrong number of arguments"), "{out}");
    assert!(lines[3].contains("KEYS cannot be queued"), "{out}");
    assert!(lines[4].starts_with("EXECABORT"), "{out}");
    assert_eq!(lines[5], "0", "the discarded SET did not run: {out}");
    assert_eq!(&lines[6..9], ["OK", "QUEUED", "OK"], "{out}");
    assert_eq!(lines[9], "0", "DISCARD drops the queue: {out}");
    assert!(lines[10].contains("EXEC without MULTI"), "{out}");
    assert_eq!(lines[11], "OK", "{out}");
    assert!(lines[12].contains("can not be nested"), "{out}");
    assert_eq!(&lines[13..], ["QUEUED", "QUEUED", "1", "2"], "{out}");
}

#[test]
fn with_tls_the_redis_ports_speak_only_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = viewkv::testkit::TestCa::new("resp");
    let files = ca.issue("node");
    let path =
        |p: &Option<std::path::PathBuf>| p.as_ref().expect("an issued file").display().to_string();
    let (cert, key, ca_file) = (path(&files.cert), path(&files.key), path(&files.ca));
    let settings = format!("tls_cert = {cert:?}\ntls_key = {key:?}\ntls_ca = {ca_file:?}\n");
    let up = Up::start_with(dir.path(), &settings);
    let (primary, _) = up.roles();
    let tls_cli = |port: u16, args: &[&str], with_cert: bool| {
        let port = port.to_string();
        let mut all = vec!["--tls", "--cacert", &ca_file];
        if with_cert {
            all.extend_from_slice(&["--cert", &cert, "--key", &key]);
        }
        all.extend_from_slice(&["-p", &port, "-a", &up.secret, "--no-auth-warning"]);
        all.extend_from_slice(args);
        let (code, out, err) = run("redis-cli", &all);
        (code, format!("{out}{err}"))
    };
    for port in [up.resp[&primary], up.idle_port()] {
        let set = tls_cli(port, &["SET", "secure", "yes"], true);
        assert_eq!(
            set.1.trim(),
            "OK",
            "SET over TLS through port {port}: {set:?}"
        );
        let get = tls_cli(port, &["GET", "secure"], true);
        assert_eq!(get.1.trim(), "yes", "GET over TLS through port {port}");
        // In clear, or without a client certificate, nothing gets through.
        let plain = up.cli(port, &["SET", "secure", "no"]);
        assert!(
            !plain.1.contains("OK"),
            "a plain client got through: {plain:?}"
        );
        let anonymous = tls_cli(port, &["SET", "secure", "no"], false);
        assert!(
            !anonymous.1.contains("OK"),
            "a client without a certificate got through: {anonymous:?}"
        );
    }
    assert_eq!(
        tls_cli(up.idle_port(), &["GET", "secure"], true).1.trim(),
        "yes"
    );
    let program = format!(
        r#"
import os, redis
r = redis.Redis(host="127.0.0.1", port=int(os.environ["PORT"]), password=os.environ["SECRET"],
                ssl=True, ssl_ca_certs={ca_file:?}, ssl_certfile={cert:?}, ssl_keyfile={key:?})
pipe = r.pipeline()
pipe.incr("py").get("secure")
print(pipe.execute())
"#
    );
    assert_eq!(up.python(up.idle_port(), &program).trim(), "[1, b'yes']");
}

#[test]
fn redis_benchmark_runs_and_a_kill_9_of_the_primary_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = Up::start(dir.path());
    let port = up.idle_port().to_string();
    for pipeline in ["1", "16"] {
        let (code, out, err) = run(
            "redis-benchmark",
            &[
                "-p",
                &port,
                "-a",
                &up.secret,
                "-t",
                "set,get,incr,mset",
                "-c",
                "50",
                "-n",
                "2000",
                "-d",
                "100",
                "-P",
                pipeline,
                "--csv",
            ],
        );
        assert_eq!(code, 0, "{err}");
        for test in ["\"SET\"", "\"GET\"", "\"INCR\"", "\"MSET (10 keys)\""] {
            assert!(out.contains(test), "-P {pipeline}: no {test} row in {out}");
        }
        println!("redis-benchmark -P {pipeline}:\n{out}");
    }

    // A Python client writes key after key through a server that is not the primary, keeping
    // the ones acknowledged, while the primary is killed; every acknowledged one must be read
    // back afterwards.
    let writer = r#"
import os, sys, redis
r = redis.Redis(host="127.0.0.1", port=int(os.environ["PORT"]), password=os.environ["SECRET"],
                socket_timeout=30)
acked = 0
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 600):
    try:
        if r.set(f"w{i}", f"v{i}"):
            acked += 1
            print(f"w{i}", flush=True)
    except redis.exceptions.RedisError as err:
        print(f"unknown w{i}: {err}", file=sys.stderr, flush=True)
"#;
    let mut child = Command::new("python3")
        .args(["-c", writer])
        .env("PORT", &port)
        .env("SECRET", &up.secret)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    // Kill the primary once the writer is under way.
    let (primary, _) = up.roles();
    wait_for("the writer to get going", || {
        let (_, out) = up.cli(up.resp[&primary], &["EXISTS", "w50"]);
        (out.trim() == "1").then_some(())
    });
    let (code, _, err) = run("kill", &["-9", &up.pids[&primary]]);
    assert_eq!(code, 0, "{err}");
    assert!(child.wait().expect("the writer ends").success());
    let acked = reader.join().expect("the writer's output");
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    let (now_primary, _) = wait_for("a new primary", || {
        let roles = up.roles();
        (roles.0 != primary).then_some(roles)
    });
    let read = format!(
        "import os, redis\nr = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), \
         password=os.environ['SECRET'])\nkeys = {acked:?}\nvalues = r.mget(keys)\n\
         print(sum(1 for k, v in zip(keys, values) if v == ('v' + k[1:]).encode()))"
    );
    let out = up.python(up.resp[&now_primary], &read);
    assert_eq!(
        out.trim(),
        acked.len().to_string(),
        "acknowledged writes were lost"
    );
    println!(
        "{} writes acknowledged across the kill of {primary}",
        acked.len()
    );
}

#[test]
fn viewkv_bench_load_runs_against_the_cluster_the_redis_port_and_an_echo() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = Up::start(dir.path());
    let redis = format!("127.0.0.1:{}", up.idle_port());
    let common = [
        "--duration",
        "2s",
        "--clients",
        "4",
        "--keys",
        "100",
        "--json",
    ];
    let runs: [Vec<&str>; 3] = [
        vec!["bench", "load", "--config", &up.config],
        vec![
            "bench",
            "load",
            "--config",
            &up.config,
            "--against-redis",
            &redis,
            "--pipeline",
            "8",
        ],
        vec!["bench", "load", "--echo"],
    ];
    for mut args in runs {
        args.extend(common);
        let doc = bench_json(&args);
        assert_eq!(doc["errors"], 0, "{args:?}: {doc}");
        assert!(
            doc["ops"].as_u64().is_some_and(|n| n > 0),
            "{args:?}: {doc}"
        );
        let fields = [
            "ops_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
        ];
        for field in fields {
            assert!(doc[field].is_number(), "{args:?}: no {field} in {doc}");
        }
    }
    // The writes went to the cluster: the keys are there, through any port.
    let (_, keys) = up.cli(up.idle_port(), &["KEYS", "bench:*"]);
    assert!(keys.lines().count() > 10, "{keys}");
    // The native client pipelines too: four sessions' operations in flight per load client.
    let doc = bench_json(&[
        "bench",
        "load",
        "--config",
        &up.config,
        "--pipeline",
        "4",
        "--duration",
        "1s",
        "--json",
    ]);
    assert_eq!(doc["errors"], 0, "{doc}");
    assert_eq!(doc["pipeline"], 4, "{doc}");
    assert!(doc["ops"].as_u64().is_some_and(|n| n > 0), "{doc}");
    // The load generator shares the machine with the cluster it loads: it takes a node's share
    // of the cores unless told otherwise.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default = match std::env::var("TOKIO_WORKER_THREADS") {
        Ok(threads) => threads.parse().expect("TOKIO_WORKER_THREADS is a number"),
        Err(_) => (cores / 3).max(1),
    };
    assert_eq!(doc["worker_threads"], default, "{doc}");
    let doc = bench_json(&[
        "--worker-threads",
        "3",
        "bench",
        "load",
        "--echo",
        "--duration",
        "1s",
        "--clients",
        "2",
        "--json",
    ]);
    assert_eq!(doc["worker_threads"], 3, "{doc}");
}

/// Run `viewkv ARGS` (a `bench load ... --json`), expect success, and parse its report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = viewkv(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).expect("one JSON object")
}
