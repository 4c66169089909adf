//! The JSON API and the static assets, driven through the router with
//! `tower::ServiceExt::oneshot` (no socket).

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{fixture, Fixture};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn get(f: &Fixture, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = web::router(f.store.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn json(f: &Fixture, uri: &str) -> Value {
    let (status, _, body) = get(f, uri).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{uri}: {v}");
    v
}

async fn error(f: &Fixture, uri: &str) -> String {
    let (status, _, body) = get(f, uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["error"].as_str().unwrap().to_string()
}

fn child<'a>(n: &'a Value, name: &str) -> &'a Value {
    n["c"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["n"] == name))
        .unwrap_or_else(|| panic!("no child {name} in {}", n["n"]))
}

#[tokio::test]
async fn page_and_assets_are_self_contained() {
    let f = fixture();
    let (status, headers, body) = get(&f, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains(r#"<script src="/assets/app.js">"#));
    assert!(html.contains(r#"href="/assets/app.css""#));
    let (status, headers, js) = get(&f, "/assets/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let (_, headers, css) = get(&f, "/assets/app.css").await;
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    // No CDN, no external fetch: nothing points off the server.
    for text in [
        html.as_str(),
        std::str::from_utf8(&js).unwrap(),
        std::str::from_utf8(&css).unwrap(),
    ] {
        assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"));
        assert!(!text.contains("@import"));
    }
    assert_eq!(get(&f, "/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn flamegraph_merges_stacks_and_filters() {
    let f = fixture();
    // Default range: the last hour, which holds both profiles.
    let g = json(&f, "/api/flamegraph").await;
    assert_eq!(g["total"], f.total());
    let root = &g["root"];
    assert_eq!(root["n"], "all");
    let c = child(
        child(child(child(root, "main"), "chain_a"), "chain_b"),
        "chain_c",
    );
    assert_eq!(c["v"], 200 + 100, "100 per profile plus B's extra 100");
    assert_eq!(c["k"], "native");
    let vfs = child(
        child(
            child(
                child(
                    child(child(child(root, "main"), "chain_a"), "write"),
                    "entry_SYSCALL_64",
                ),
                "do_syscall_64",
            ),
            "ksys_write",
        ),
        "vfs_write",
    );
    assert_eq!(
        (vfs["k"].as_str(), vfs["v"].as_u64(), vfs["s"].as_u64()),
        (Some("kernel"), Some(40), Some(40))
    );
    let dumps = child(
        child(child(child(root, "main"), "serve"), "handle_query"),
        "dumps",
    );
    assert_eq!(dumps["k"], "interpreted");

    let (from, to) = Fixture::range_ms(&f.a);
    let g = json(&f, &format!("/api/flamegraph?from={from}&to={to}")).await;
    assert_eq!(g["total"], f.a.total_samples());
    assert_eq!(
        (g["from"].as_u64(), g["to"].as_u64()),
        (Some(from), Some(to))
    );

    let g = json(&f, "/api/flamegraph?process=db").await;
    assert_eq!(g["total"], 60);
    assert_eq!(
        child(&g["root"], "main")["c"].as_array().unwrap().len(),
        1,
        "only serve"
    );
    assert_eq!(
        json(&f, "/api/flamegraph?host=web-2").await["total"],
        f.b.total_samples()
    );
    assert_eq!(
        json(&f, "/api/flamegraph?container=c0ffee").await["total"],
        60
    );
    assert_eq!(json(&f, "/api/flamegraph?pid=200").await["total"], 60);
    assert_eq!(json(&f, "/api/flamegraph?thread=worker").await["total"], 80);
    assert_eq!(json(&f, "/api/flamegraph?tid=101").await["total"], 80);
    assert_eq!(
        json(&f, "/api/flamegraph?frame_type=kernel").await["total"],
        40
    );
    assert_eq!(
        json(&f, "/api/flamegraph?frame_type=error").await["total"],
        8
    );
    // Empty values mean "any".
    assert_eq!(
        json(&f, "/api/flamegraph?process=&pid=").await["total"],
        f.total()
    );

    // Pruning: with min=0.3 only nodes of at least 30% of the samples stay.
    let g = json(&f, "/api/flamegraph?min=0.3").await;
    let main = child(&g["root"], "main");
    let kept: Vec<&str> = main["c"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["n"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["chain_a"]);
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_message() {
    let f = fixture();
    assert!(error(&f, "/api/flamegraph?pid=abc").await.contains("pid"));
    assert!(error(&f, "/api/flamegraph?frame_type=bogus")
        .await
        .contains("bogus"));
    assert!(error(&f, "/api/flamegraph?from=10&to=5")
        .await
        .contains("before"));
    assert!(error(&f, "/api/flamegraph?from=1&to=99999999999999999999")
        .await
        .contains("to"));
    assert!(error(&f, "/api/flamegraph?min=2").await.contains("min"));
    assert!(error(&f, "/api/top?by=sideways").await.contains("by"));
    assert!(error(&f, "/api/top?n=-1").await.contains("n="));
    assert!(error(&f, "/api/diff?a_from=5&a_to=1")
        .await
        .contains("a_from"));
    assert!(error(&f, "/api/pprof?from=x").await.contains("from"));
    assert!(error(&f, "/api/filters?to=0").await.contains("before"));
}

#[tokio::test]
async fn error_frames_are_named_from_the_spec_on_the_page() {
    // The agent's error frames (no name, the code as data), 10 minutes ago.
    let dir = tempfile::tempdir().unwrap();
    let store = store::Store::open(dir.path(), store::StoreConfig::default()).unwrap();
    let mut p = profile::testdata::errors();
    p.start_unix_ns = store.now_unix_ns() / store::BUCKET_NS * store::BUCKET_NS - 600 * common::S;
    store.ingest(&p).unwrap();
    let f = Fixture {
        store: std::sync::Arc::new(store),
        _dir: dir,
        a: p,
        b: profile::Profile::default(),
    };
    let names = profile::testdata::ERROR_FRAME_NAMES;

    // What the page draws: main → one error leaf per code, named from the
    // spec (4000 is native_no_mapping), colored as errors.
    let g = json(&f, "/api/flamegraph").await;
    assert_eq!(g["total"], 6);
    let main = child(&g["root"], "main");
    for (name, count) in names.into_iter().zip(1..) {
        let leaf = child(main, name);
        assert_eq!(
            (leaf["k"].as_str(), leaf["v"].as_u64()),
            (Some("error"), Some(count))
        );
    }
    assert!(!g.to_string().contains("error code"), "{g}");
    let g = json(&f, "/api/flamegraph?frame_type=error").await;
    assert_eq!(g["total"], 6);

    // The top-functions table beside it.
    let t = json(&f, "/api/top").await;
    for name in names {
        assert!(
            t["functions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == name && r["kind"] == "error"),
            "{name} not in {t}"
        );
    }
}

#[tokio::test]
async fn top_functions_with_self_and_total() {
    let f = fixture();
    let t = json(&f, "/api/top?n=3").await;
    assert_eq!(t["total"], f.total());
    let rows: Vec<(String, u64, u64)> = t["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["self"].as_u64().unwrap(),
                r["total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("chain_c".to_string(), 312, 312),
            ("chain_b".to_string(), 80, 380),
            ("dumps".to_string(), 60, 60)
        ]
    );
    let t = json(&f, "/api/top?n=1&by=total").await;
    assert_eq!(t["functions"][0]["name"], "main");
    assert_eq!(t["functions"][0]["total"], f.total());
    assert_eq!(t["functions"][0]["kind"], "native");
    let t = json(&f, "/api/top?frame_type=kernel&n=50").await;
    assert_eq!(t["total"], 40);
    assert!(t["functions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "vfs_write" && r["kind"] == "kernel"));
}

#[tokio::test]
async fn diff_compares_normalized_shares() {
    let f = fixture();
    let (af, at) = Fixture::range_ms(&f.a);
    let (bf, bt) = Fixture::range_ms(&f.b);
    let d = json(
        &f,
        &format!("/api/diff?a_from={af}&a_to={at}&from={bf}&to={bt}"),
    )
    .await;
    assert_eq!(d["a_total"], f.a.total_samples());
    assert_eq!(d["b_total"], f.b.total_samples());
    let c = child(
        child(child(child(&d["root"], "main"), "chain_a"), "chain_b"),
        "chain_c",
    );
    assert_eq!((c["a"].as_u64(), c["v"].as_u64()), (Some(100), Some(200)));
    let top = &d["functions"][0];
    assert_eq!(top["name"], "chain_c");
    let want = 206.0 / 300.0 - 106.0 / 200.0;
    assert!((top["total_delta"].as_f64().unwrap() - want).abs() < 1e-9);
    // Default baseline: the period of equal length just before `from`.
    let d = json(&f, &format!("/api/diff?from={bf}&to={bt}")).await;
    assert_eq!(
        (d["a"]["from"].as_u64(), d["a"]["to"].as_u64()),
        (Some(2 * bf - bt), Some(bf))
    );
    assert_eq!(d["a_total"], 0);
}

#[tokio::test]
async fn filters_list_known_values_and_bounds() {
    let f = fixture();
    let k = json(&f, "/api/filters").await;
    assert_eq!(k["hosts"], serde_json::json!(["web-1", "web-2"]));
    assert_eq!(k["containers"], serde_json::json!(["c0ffee"]));
    assert_eq!(k["processes"], serde_json::json!(["app", "db"]));
    assert_eq!(k["pids"][1], serde_json::json!({"pid": 200, "name": "db"}));
    assert_eq!(
        k["threads"],
        serde_json::json!(["app", "db-writer", "worker"])
    );
    assert!(k["frame_types"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "kernel"));
    assert_eq!(
        k["bounds"]["from"].as_u64().unwrap(),
        f.a.start_unix_ns / common::MS
    );
    assert!(k["now"].as_u64().unwrap() >= k["bounds"]["to"].as_u64().unwrap() - 10_000);
    // A range with no data lists nothing, but bounds still tell where data is.
    let k = json(&f, "/api/filters?from=1000&to=2000").await;
    assert_eq!(k["hosts"], serde_json::json!([]));
    assert!(k["bounds"].is_object());
}

#[tokio::test]
async fn pprof_download_is_the_filtered_merged_profile() {
    let f = fixture();
    let (status, headers, body) = get(&f, "/api/pprof?process=app").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
    let disp = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disp.starts_with("attachment; filename=\"profile-") && disp.ends_with(".pb.gz\""),
        "{disp}"
    );
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzipped");
    let p = profile::pprof::decode(&body).unwrap();
    profile::pprof::validate(&p).unwrap();
    let samples: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(
        samples as u64,
        f.total() - 60,
        "everything but the db process"
    );
    let names: Vec<&str> = p.function.iter().map(|fun| p.string(fun.name)).collect();
    assert!(names.contains(&"chain_b") && names.contains(&"vfs_write"));
    assert!(!names.contains(&"dumps"));
}
