//! What `COMMAND` and the `HELP` subcommands answer, read from the command table
//! (`table.rs`): `COMMAND INFO`'s rows (name, arity, flags, key positions, ACL categories),
//! `COMMAND DOCS`'s maps (summary, since, group, complexity, arguments — what redis-cli 7
//! builds its hints and `help` from), the names and their count. Replies are RESP2: a map is a
//! flat array of keys and values, which clients accept from either protocol.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::table::{find, Arg, Kind, Spec, COMMANDS};

fn text(s: &'static str) -> BytesFrame {
    BytesFrame::BulkString(Bytes::from_static(s.as_bytes()))
}

fn status(s: &'static str) -> BytesFrame {
    BytesFrame::SimpleString(Bytes::from_static(s.as_bytes()))
}

/// The commands `names` asks about (every command if it is empty): `None` for a name the
/// table does not know.
fn wanted(names: &[Bytes]) -> Vec<Option<&'static Spec>> {
    if names.is_empty() {
        return COMMANDS.iter().map(Some).collect();
    }
    names.iter().map(|name| find(name)).collect()
}

/// `COMMAND INFO names...` (and `COMMAND`): a row per name, nil for an unknown one.
pub fn info(names: &[Bytes]) -> BytesFrame {
    let rows = wanted(names)
        .into_iter()
        .map(|spec| spec.map_or(BytesFrame::Null, row))
        .collect();
    BytesFrame::Array(rows)
}

/// One command's `COMMAND INFO` row.
fn row(spec: &'static Spec) -> BytesFrame {
    let (first, last, step) = spec.keys;
    let statuses =
        |words: Vec<&'static str>| BytesFrame::Array(words.into_iter().map(status).collect());
    BytesFrame::Array(vec![
        text(spec.name),
        BytesFrame::Integer(spec.arity),
        statuses(spec.flags.to_vec()),
        BytesFrame::Integer(first),
        BytesFrame::Integer(last),
        BytesFrame::Integer(step),
        statuses(spec.categories()),
        // Tips and key specifications: none.
        BytesFrame::Array(Vec::new()),
        BytesFrame::Array(Vec::new()),
        BytesFrame::Array(spec.subcommands.iter().map(row).collect()),
    ])
}

/// `COMMAND DOCS names...`: each known command's name, then its docs (unknown names are left
/// out, as Redis does).
pub fn docs(names: &[Bytes]) -> BytesFrame {
    let mut out = Vec::new();
    for spec in wanted(names).into_iter().flatten() {
        out.push(text(spec.name));
        out.push(doc(spec));
    }
    BytesFrame::Array(out)
}

/// One command's docs, as a flat map.
fn doc(spec: &'static Spec) -> BytesFrame {
    let mut map = vec![
        text("summary"),
        text(spec.summary),
        text("since"),
        text(spec.since),
        text("group"),
        text(spec.group),
        text("complexity"),
        text(spec.complexity),
    ];
    if !spec.arguments.is_empty() {
        map.push(text("arguments"));
        map.push(arguments(spec.arguments));
    }
    if !spec.subcommands.is_empty() {
        map.push(text("subcommands"));
        let mut subs = Vec::new();
        for sub in spec.subcommands {
            subs.push(text(sub.name));
            subs.push(doc(sub));
        }
        map.push(BytesFrame::Array(subs));
    }
    BytesFrame::Array(map)
}

fn arguments(args: &'static [Arg]) -> BytesFrame {
    BytesFrame::Array(args.iter().map(argument).collect())
}

/// One argument's docs, as a flat map.
fn argument(arg: &'static Arg) -> BytesFrame {
    let mut map = vec![
        text("name"),
        text(arg.name),
        text("type"),
        text(arg.kind.name()),
    ];
    if let Some(token) = arg.token {
        map.push(text("token"));
        map.push(text(token));
    }
    let flags: Vec<BytesFrame> = [(arg.optional, "optional"), (arg.multiple, "multiple")]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, flag)| status(flag))
        .collect();
    if !flags.is_empty() {
        map.push(text("flags"));
        map.push(BytesFrame::Array(flags));
    }
    if let Kind::OneOf(inner) | Kind::Block(inner) = &arg.kind {
        map.push(text("arguments"));
        map.push(arguments(inner));
    }
    BytesFrame::Array(map)
}

/// `COMMAND LIST`: every command's name.
pub fn list() -> BytesFrame {
    BytesFrame::Array(COMMANDS.iter().map(|spec| text(spec.name)).collect())
}

/// `COMMAND COUNT`.
pub fn count() -> BytesFrame {
    BytesFrame::Integer(COMMANDS.len() as i64)
}

/// `CLIENT HELP` and the like: a line of usage and one of summary per subcommand of
/// `container`.
pub fn help(container: &str) -> BytesFrame {
    let Some(spec) = find(container.as_bytes()) else {
        return BytesFrame::Array(Vec::new());
    };
    let upper = spec.name.to_uppercase();
    let mut lines = vec![format!(
        "{upper} <subcommand> [<arg> ...]. Subcommands are:"
    )];
    for sub in spec.subcommands {
        let word = sub.name.split('|').nth(1).unwrap_or(sub.name);
        lines.push(
            format!("{} {}", word.to_uppercase(), usage(sub.arguments))
                .trim_end()
                .to_string(),
        );
        lines.push(format!("    {}", sub.summary));
    }
    BytesFrame::Array(
        lines
            .into_iter()
            .map(|line| BytesFrame::SimpleString(line.into()))
            .collect(),
    )
}

/// Arguments as a usage line writes them: `[EX seconds|PX milliseconds]`, `key [key ...]`.
pub fn usage(args: &[Arg]) -> String {
    let one = |arg: &Arg| -> String {
        let body = match &arg.kind {
            Kind::PureToken => arg.token.unwrap_or(arg.name).to_string(),
            Kind::OneOf(inner) => inner
                .iter()
                .map(|a| usage(std::slice::from_ref(a)))
                .collect::<Vec<_>>()
                .join("|"),
            Kind::Block(inner) => usage(inner),
            _ => match arg.token {
                Some(token) => format!("{token} {}", arg.name),
                None => arg.name.to_string(),
            },
        };
        let body = if arg.multiple {
            format!("{body} [{body} ...]")
        } else {
            body
        };
        if arg.optional {
            format!("[{body}]")
        } else {
            body
        }
    };
    args.iter().map(one).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat map's value for `key`.
    fn field<'a>(map: &'a BytesFrame, key: &str) -> Option<&'a BytesFrame> {
        let BytesFrame::Array(items) = map else {
            return None;
        };
        items
            .chunks(2)
            .find(|pair| pair[0] == BytesFrame::BulkString(Bytes::copy_from_slice(key.as_bytes())))
            .map(|pair| &pair[1])
    }

    #[test]
    fn docs_are_flat_maps_of_what_the_table_says() {
        let BytesFrame::Array(all) = docs(&[]) else {
            panic!("an array");
        };
        assert_eq!(all.len(), 2 * COMMANDS.len());
        let BytesFrame::Array(set) = docs(&["SET".into(), "nosuch".into()]) else {
            panic!("an array");
        };
        assert_eq!(set[0], text("set"));
        assert_eq!(set.len(), 2, "an unknown name is left out");
        assert_eq!(field(&set[1], "group"), Some(&text("string")));
        let Some(BytesFrame::Array(args)) = field(&set[1], "arguments") else {
            panic!("SET has arguments");
        };
        assert_eq!(field(&args[0], "type"), Some(&text("key")));
        let get = &args[3];
        assert_eq!(field(get, "type"), Some(&text("pure-token")));
        assert_eq!(field(get, "token"), Some(&text("GET")));
        assert_eq!(
            field(get, "flags"),
            Some(&BytesFrame::Array(vec![status("optional")]))
        );
        let client = docs(&["client".into()]);
        let BytesFrame::Array(client) = client else {
            panic!("an array");
        };
        assert!(field(&client[1], "subcommands").is_some());
    }

    #[test]
    fn info_rows_have_arity_flags_and_key_positions() {
        let BytesFrame::Array(rows) = info(&["mset".into(), "nosuch".into(), "client|id".into()])
        else {
            panic!("an array");
        };
        let BytesFrame::Array(mset) = &rows[0] else {
            panic!("a row");
        };
        assert_eq!(mset.len(), 10);
        assert_eq!(mset[0], text("mset"));
        assert_eq!(
            mset[1..6].to_vec(),
            vec![
                BytesFrame::Integer(-3),
                BytesFrame::Array(vec![status("write"), status("denyoom")]),
                BytesFrame::Integer(1),
                BytesFrame::Integer(-1),
                BytesFrame::Integer(2),
            ]
        );
        assert_eq!(rows[1], BytesFrame::Null);
        assert!(matches!(&rows[2], BytesFrame::Array(r) if r[0] == text("client|id")));
        assert_eq!(count(), BytesFrame::Integer(COMMANDS.len() as i64));
    }

    #[test]
    fn usage_lines_read_like_redis_help() {
        let set = find(b"set").expect("set");
        assert_eq!(
            usage(set.arguments),
            "key value [NX|XX] [GET] [EX seconds|PX milliseconds|KEEPTTL]"
        );
        assert_eq!(usage(find(b"del").expect("del").arguments), "key [key ...]");
        let BytesFrame::Array(lines) = help("client") else {
            panic!("an array");
        };
        assert!(lines.contains(&BytesFrame::SimpleString("SETNAME connection-name".into())));
    }
}
