//! `INFO`: the server's status in Redis's `# Section` / `field:value` text.

use super::REDIS_VERSION;

/// The `INFO` text for `section` (all sections if `None`), from the server's status document,
/// the service's key count (if the primary answered) and this process's resident memory (if
/// known).
pub fn info(
    status: &serde_json::Value,
    keys: Option<u64>,
    rss: Option<u64>,
    section: Option<&str>,
) -> String {
    let wanted = |name: &str| {
        section.is_none_or(|s| s == name || s == "all" || s == "default" || s == "everything")
    };
    let text = |field: &str| status[field].as_str().unwrap_or("").to_string();
    let number = |field: &str| status[field].as_u64().unwrap_or(0);
    let view = &status["view"];
    let name = |slot: &str| view[slot].as_str().unwrap_or("").to_string();
    let mut out = String::new();
    if wanted("server") {
        out.push_str("# Server\r\n");
        out.push_str(&format!("redis_version:{REDIS_VERSION}\r\n"));
        out.push_str(&format!("viewkv_version:{}\r\n", env!("CARGO_PKG_VERSION")));
        out.push_str("redis_mode:standalone\r\n");
        out.push_str(&format!("viewkv_server:{}\r\n", text("id")));
        out.push_str("\r\n");
    }
    if wanted("replication") {
        let role = text("role");
        out.push_str("# Replication\r\n");
        // Every server takes writes (forwarding them to the primary), which is what a Redis
        // client reads `role:master` as; viewkv's own role follows.
        out.push_str("role:master\r\n");
        out.push_str(&format!("viewkv_role:{role}\r\n"));
        out.push_str(&format!(
            "viewkv_view:{}\r\n",
            view["num"].as_u64().unwrap_or(0)
        ));
        out.push_str(&format!("viewkv_primary:{}\r\n", name("primary")));
        out.push_str(&format!("viewkv_backup:{}\r\n", name("backup")));
        let backup = u8::from(!name("backup").is_empty() && role == "primary");
        out.push_str(&format!("connected_slaves:{backup}\r\n"));
        out.push_str("\r\n");
    }
    if wanted("memory") {
        out.push_str("# Memory\r\n");
        if let Some(rss) = rss {
            out.push_str(&format!("used_memory_rss:{rss}\r\n"));
        }
        out.push_str(&format!("viewkv_data_bytes:{}\r\n", number("bytes")));
        out.push_str("\r\n");
    }
    if wanted("keyspace") {
        out.push_str("# Keyspace\r\n");
        if let Some(keys) = keys.filter(|k| *k > 0) {
            out.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_say_role_view_and_keys() {
        let status = serde_json::json!({
            "id": "s1", "role": "primary", "bytes": 12,
            "view": {"num": 4, "primary": "s1", "backup": "s2"},
        });
        let all = info(&status, Some(3), Some(4096), None);
        for line in [
            "role:master",
            "viewkv_view:4",
            "viewkv_backup:s2",
            "connected_slaves:1",
            "db0:keys=3,expires=0,avg_ttl=0",
            "viewkv_data_bytes:12",
            "used_memory_rss:4096",
        ] {
            assert!(all.contains(line), "{line} in {all}");
        }
        let replication = info(&status, Some(3), None, Some("replication"));
        assert!(replication.starts_with("# Replication") && !replication.contains("Keyspace"));
        let backup = serde_json::json!({"role": "backup", "view": {"num": 4}});
        let replication = info(&backup, None, None, Some("replication"));
        assert!(replication.contains("role:master") && replication.contains("viewkv_role:backup"));
    }
}
