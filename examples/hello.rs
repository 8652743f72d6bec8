//! Put and get a key on a running cluster.
//!
//! ```text
//! viewkv up                       # in one terminal
//! cargo run --example hello       # in another
//! ```

use viewkv::client::{ClientError, ClientOptions};
use viewkv::Client;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let monitors = std::env::var("VIEWKV_MONITORS")
        .unwrap_or_else(|_| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into())
        .split(',')
        .map(String::from)
        .collect();
    let mut client = Client::with_options(monitors, ClientOptions::default());
    client.put(b"greeting", b"hello").await?;
    client.append(b"greeting", b", world").await?;
    let value = client.get(b"greeting").await?.unwrap_or_default();
    println!("greeting = {}", String::from_utf8_lossy(&value));
    let previous = client.put_hash(b"counter", b"1").await?;
    println!("counter was {previous:?}, now the hash of it and \"1\"");
    Ok(())
}
