//! Put and get a key on a running cluster.
//!
//! ```text
//! viewkv up                                   # in one terminal; it prints its secret file
//! export VIEWKV_SECRET_FILE=/tmp/viewkv-up-4242/secret
//! cargo run --example hello                   # in another
//! ```

use std::path::Path;

use viewkv::client::ClientOptions;
use viewkv::net::Secret;
use viewkv::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let monitors = std::env::var("VIEWKV_MONITORS")
        .unwrap_or_else(|_| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into())
        .split(',')
        .map(String::from)
        .collect();
    // A cluster with a secret (`viewkv up` makes one) refuses requests that do not prove it.
    let secret = match std::env::var("VIEWKV_SECRET_FILE") {
        Ok(path) => Some(Secret::load(Path::new(&path))?),
        Err(_) => None,
    };
    let mut client = Client::with_secret(monitors, ClientOptions::default(), secret);
    client.put(b"greeting", b"hello").await?;
    client.append(b"greeting", b", world").await?;
    let value = client.get(b"greeting").await?.unwrap_or_default();
    println!("greeting = {}", String::from_utf8_lossy(&value));
    let previous = client.put_hash(b"counter", b"1").await?;
    println!("counter was {previous:?}, now the hash of it and \"1\"");
    Ok(())
}
