//! The HTTP/JSON API (`/v1/kv`, `/v1/openapi.json`) driven by `curl`, an HTTP client no one
//! here wrote, against a server that is not the primary (it forwards) and against the primary.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use viewkv::testkit::{self, Cluster, ClusterOptions};

/// One `curl` call: (HTTP status, body).
async fn curl(method: &str, url: String, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
    let method = method.to_string();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new("curl");
        command.args(["-sS", "-X", &method, "-w", "\n%{http_code}", &url]);
        if body.is_some() {
            command.args(["--data-binary", "@-"]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs (apt-get install curl)");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(body) = body {
            stdin.write_all(&body).expect("write the body");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("curl ends");
        assert!(out.status.success(), "curl {method} {url} failed");
        let split = out
            .stdout
            .iter()
            .rposition(|b| *b == b'\n')
            .expect("a status");
        let status = String::from_utf8_lossy(&out.stdout[split + 1..]);
        (
            status.parse().expect("a status code"),
            out.stdout[..split].to_vec(),
        )
    })
    .await
    .expect("the curl task")
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_writes_and_lists_through_any_server() {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    cluster.start_server().await;
    cluster.start_server().await;
    let view = cluster.wait_ready(Duration::from_secs(60)).await;
    let primary = view.primary.clone().expect("a primary").addr;
    let backup = view.backup.clone().expect("a backup").addr;
    for server in [backup, primary] {
        let url = |path: &str| format!("http://{server}{path}");
        let (status, body) = curl("PUT", url("/v1/kv/greeting"), Some(b"hello".to_vec())).await;
        assert_eq!((status, json(&body)), (200, json!({"ok": true})));
        assert_eq!(
            curl("GET", url("/v1/kv/greeting"), None).await,
            (200, b"hello".to_vec())
        );
        let (status, body) = curl(
            "POST",
            url("/v1/kv/greeting/append"),
            Some(b", you".to_vec()),
        )
        .await;
        assert_eq!((status, json(&body)), (200, json!({"length": 10})));
        assert_eq!(
            curl("GET", url("/v1/kv/greeting"), None).await,
            (200, b"hello, you".to_vec())
        );
        // Any bytes make a key: percent-encoded in the path.
        let binary = vec![0u8, 0xff, b'/'];
        curl("PUT", url("/v1/kv/bin%00%FF%2F"), Some(binary.clone())).await;
        assert_eq!(
            curl("GET", url("/v1/kv/bin%00%FF%2F"), None).await,
            (200, binary)
        );
        let (status, body) = curl("DELETE", url("/v1/kv/bin%00%FF%2F"), None).await;
        assert_eq!((status, json(&body)), (200, json!({"deleted": true})));
        let (status, body) = curl("DELETE", url("/v1/kv/bin%00%FF%2F"), None).await;
        assert_eq!((status, json(&body)), (200, json!({"deleted": false})));
        let (status, body) = curl("GET", url("/v1/kv/nothing"), None).await;
        assert_eq!(
            (status, json(&body)["code"].clone()),
            (404, json!("not_found"))
        );
        curl("DELETE", url("/v1/kv/greeting"), None).await;
    }
    let server = view.backup.clone().expect("a backup").addr;
    let url = |path: &str| format!("http://{server}{path}");
    for i in 0..25 {
        let value = format!("v{i}").into_bytes();
        curl("PUT", url(&format!("/v1/kv/list:{i:02}")), Some(value)).await;
    }
    curl("PUT", url("/v1/kv/other"), Some(b"x".to_vec())).await;
    // Paged: every key with the prefix once, in order, values with them.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/v1/kv?prefix=list%3A&limit=10{after}");
        let (status, body) = curl("GET", url(&path), None).await;
        assert_eq!(status, 200);
        let page = json(&body);
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() <= 10);
        for item in &items {
            let key = item["key"].as_str().expect("a key").to_string();
            let value = format!(
                "v{}",
                key["list:".len()..].parse::<u32>().expect("a number")
            );
            assert_eq!(item["value"], json!(value), "{item}");
            seen.push(key);
        }
        if page["more"] == json!(false) {
            break;
        }
        after = format!("&after={}", page["next"].as_str().expect("next"));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("list:{i:02}")).collect();
    assert_eq!(seen, expected);
    // Stale reads: this server (the backup) answers from its own state, where every
    // acknowledged write already is.
    assert_eq!(
        curl("GET", url("/v1/kv/list:07?consistency=stale"), None).await,
        (200, b"v7".to_vec())
    );
    let (status, body) = curl("GET", url("/v1/kv?prefix=list%3A0&consistency=stale"), None).await;
    assert_eq!(
        (status, json(&body)["items"].as_array().map(Vec::len)),
        (200, Some(10))
    );
    let (status, body) = curl("GET", url("/v1/kv/list:07?consistency=eventual"), None).await;
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (400, json!("bad_request"))
    );
    let (_, body) = curl("GET", url("/v1/kv?keys_only=true&limit=1"), None).await;
    let page = json(&body);
    assert_eq!(page["items"], json!([{"key": "list:00"}]));
    assert_eq!(
        (page["more"].clone(), page["next"].clone()),
        (json!(true), json!("list:00"))
    );
    // Errors: JSON with a stable code; a wrong method names the right ones.
    let (status, body) = curl("GET", url("/v1/kv?limit=0"), None).await;
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (400, json!("bad_request"))
    );
    let (status, body) = curl("GET", url("/v1/kv?colour=red"), None).await;
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (400, json!("bad_request"))
    );
    let (status, body) = curl("PATCH", url("/v1/kv/k"), None).await;
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (405, json!("method_not_allowed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_openapi_document_is_served() {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    let server = cluster.start_server().await;
    cluster.start_server().await;
    cluster.wait_ready(Duration::from_secs(60)).await;
    let (status, body) = curl("GET", format!("http://{server}/v1/openapi.json"), None).await;
    assert_eq!(status, 200);
    let doc = json(&body);
    assert_eq!(doc["openapi"], json!("3.0.3"));
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 4, "{paths:?}");
    for (path, item) in paths {
        let concrete = path.replace("{key}", "doc-key");
        for method in item.as_object().expect("a path item").keys() {
            if method == "parameters" {
                continue;
            }
            let body = ["put", "post"]
                .contains(&method.as_str())
                .then(|| b"v".to_vec());
            let url = format!("http://{server}{concrete}");
            let (status, reply) = curl(&method.to_uppercase(), url, body).await;
            let documented = item[method]["responses"]
                .as_object()
                .expect("responses")
                .contains_key(&status.to_string());
            assert!(
                documented && status < 500,
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
}
