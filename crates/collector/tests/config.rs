//! The configuration file: the samples under `config/` parse into what they
//! say, and mistakes are reported with the file and the key.

use collector::config::{load, parse, DEFAULT_WEB_LISTEN};
use collector::{ExporterKind, OnFull};
use std::path::{Path, PathBuf};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

#[test]
fn embedded_sample_is_the_store_with_the_page_on_loopback() {
    let c = load(&sample("embedded.toml")).unwrap();
    assert_eq!(c.exporters.len(), 1);
    match &c.exporters[0].kind {
        ExporterKind::Store { config, queue, .. } => {
            assert_eq!(config.retention.as_secs(), 7 * 86_400);
            assert_eq!(queue.spool_max_bytes, 512 << 20);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.web_listen, DEFAULT_WEB_LISTEN.parse().ok());
    assert_eq!(c.grpc_listen, "127.0.0.1:4317".parse().ok());
    assert_eq!(c.data_dir, Path::new("/var/lib/ebpf-profiler"));
}

#[test]
fn elasticsearch_sample_has_es_then_a_best_effort_store() {
    let c = load(&sample("elasticsearch.toml")).unwrap();
    let names: Vec<_> = c.exporters.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["elasticsearch", "store"]);
    match &c.exporters[0].kind {
        ExporterKind::Elasticsearch(es) => {
            assert_eq!(es.bulk.url, "http://127.0.0.1:9200");
            assert_eq!(es.spool_max_bytes, 512 << 20);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.exporters[0].on_full, OnFull::Refuse);
    assert_eq!(c.exporters[1].on_full, OnFull::Drop);
}

#[test]
fn forward_sample_forwards_over_grpc_and_writes_pprof() {
    let c = load(&sample("forward.toml")).unwrap();
    assert_eq!(c.http_listen, None);
    assert_eq!(c.web_listen, None);
    match &c.exporters[0].kind {
        ExporterKind::Otlp { config, queue } => {
            assert_eq!(config.endpoint, "http://collector.internal:4317");
            assert_eq!(config.protocol, exporter_otlp::Protocol::Grpc);
            assert_eq!(queue.spool_max_bytes, 1 << 30);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.exporters[0].name, "central");
    assert!(matches!(c.exporters[1].kind, ExporterKind::Pprof));
    assert_eq!(c.output_dir, Path::new("/var/lib/ebpf-profiler/pprof"));
    assert_eq!(c.flush_interval.as_secs(), 60);
}

fn err(text: &str) -> String {
    parse(text).unwrap_err()
}

#[test]
fn mistakes_name_the_key() {
    let e = err("[[exporters]]\ntype = \"kafka\"\n");
    assert!(
        e.contains("exporters[0].type") && e.contains("unknown exporter type \"kafka\""),
        "{e}"
    );
    assert!(e.contains("store, elasticsearch, otlp, pprof"), "{e}");
    let e = err("[[exporters]]\ntype = \"store\"\n[[exporters]]\ntype = \"elasticsearch\"\n");
    assert!(
        e.contains("exporters[1] (type = \"elasticsearch\")") && e.contains("`url`"),
        "{e}"
    );
    let e =
        err("[[exporters]]\ntype = \"otlp\"\nendpoint = \"http://x:4317\"\nretention = \"1d\"\n");
    assert!(
        e.contains("exporters[0] (type = \"otlp\")") && e.contains("retention"),
        "{e}"
    );
    let e = err("[[exporters]]\ntype = \"otlp\"\nendpoint = \"https://x:4317\"\n");
    assert!(e.contains("endpoint") && e.contains("http://"), "{e}");
    let e = err("[[exporters]]\nname = \"x\"\n");
    assert!(e.contains("missing key `type`"), "{e}");
    let e = err("[[exporters]]\ntype = \"store\"\non_full = \"maybe\"\n");
    assert!(e.contains("on_full"), "{e}");
    let e = err("[[exporters]]\ntype = \"store\"\n[[exporters]]\ntype = \"store\"\n");
    assert!(e.contains("already named \"store\""), "{e}");
    let e = err("[receivers]\ngrpc_listen = \"localhost\"\n");
    assert!(e.contains("receivers.grpc_listen"), "{e}");
    let e = err("[receivers]\nrequest_timeout = \"30 parsecs\"\n");
    assert!(e.contains("receivers.request_timeout"), "{e}");
    let e = err("[reciever]\n");
    assert!(e.contains("reciever"), "{e}");
    let e = err("[[exporters]]\ntype = \"elasticsearch\"\nurl = \"http://x\"\nusername = \"u\"\n");
    assert!(e.contains("password"), "{e}");
    let e = err("data_dir = [\n");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn an_unreadable_file_is_named() {
    let e = load(Path::new("/nonexistent/collector.toml")).unwrap_err();
    assert!(
        e.starts_with("/nonexistent/collector.toml: cannot read"),
        "{e}"
    );
    // And a parse error carries the file name too.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[[exporters]]\ntype = \"nope\"\n").unwrap();
    let e = load(&f).unwrap_err();
    assert!(
        e.starts_with(&format!("{}: exporters[0].type", f.display())),
        "{e}"
    );
}
