//! Serves the UI over a throw-away store filled with an hour of synthetic
//! data plus the demo workload, for working on the page by hand:
//!
//! ```text
//! cargo run -p web --example demo [ADDR]      # default 127.0.0.1:7070
//! ```

use std::sync::Arc;
use store::testdata::{demo_profile, Rng, Synthetic};
use store::{Store, StoreConfig, BUCKET_NS};

const S: u64 = 1_000_000_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| web::DEFAULT_LISTEN.to_string());
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let end = store.now_unix_ns() / BUCKET_NS * BUCKET_NS;
    let gen = Synthetic {
        stacks: 400,
        ..Synthetic::default()
    };
    let pool = gen.stack_pool();
    let mut rng = Rng::new(1);
    for i in 0..360u64 {
        let start = end - 3600 * S + i * 10 * S;
        store.ingest(&gen.profile(&pool, &mut rng, "demo-host", start, 10 * S, 500))?;
        store.ingest(&demo_profile("demo-host", start, 1 + i / 120))?;
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "serving http://{} (data in {})",
        listener.local_addr()?,
        dir.path().display()
    );
    axum::serve(listener, web::router(Arc::new(store))).await?;
    Ok(())
}
