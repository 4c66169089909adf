//! The collector on 127.0.0.1 (ephemeral ports) against real clients:
//! tonic's generated gRPC client and a raw HTTP/1.1 client (raw, to control
//! exactly what goes on the wire and to watch how far a refused upload
//! gets). Valid requests become pprof files; hostile ones get a clear
//! refusal and the collector keeps serving.

#[path = "../../otlp/tests/common/mod.rs"]
mod common;

use collector::{Collector, Config};
use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use otlp::{encode, ExportProfilesServiceRequest, ResourceInfo};
use prost::Message;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codec::CompressionEncoding;
use tonic::Code;

const PATH: &str = "/v1development/profiles";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("collector-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn start(name: &str) -> (Collector, PathBuf) {
    let dir = temp_dir(name);
    let c = Collector::start(Config {
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        output_dir: dir.clone(),
        // Tests flush explicitly.
        flush_interval: Duration::from_secs(3600),
        ..Config::default()
    })
    .await
    .unwrap();
    (c, dir)
}

fn request(n: usize, host: &str) -> ExportProfilesServiceRequest {
    encode(
        &[common::realistic(n, 20)],
        &ResourceInfo {
            host_name: Some(host.into()),
            host_id: None,
        },
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct HttpResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
async fn http_post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may refuse before reading the body: ignore write errors.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> HttpResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// `google.rpc.Status` as the collector sends it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn status_of(r: &HttpResponse) -> RpcStatus {
    match r.headers.get("content-type").map(String::as_str) {
        Some("application/x-protobuf") => RpcStatus::decode(r.body.as_slice()).unwrap(),
        Some("application/json") => {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            RpcStatus {
                code: v["code"].as_i64().unwrap() as i32,
                message: v["message"].as_str().unwrap().to_string(),
            }
        }
        other => RpcStatus {
            code: -1,
            message: format!("{other:?}: {}", String::from_utf8_lossy(&r.body)),
        },
    }
}

/// Total `samples` value over every pprof file under `dir`, and the files.
fn pprof_totals(dir: &Path) -> (u64, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut total = 0;
    for f in &files {
        assert!(f.to_string_lossy().ends_with(".pb.gz"), "{f:?}");
        let p = profile::pprof::decode(&std::fs::read(f).unwrap()).unwrap();
        let idx = p
            .sample_type
            .iter()
            .position(|t| p.string_table[t.r#type as usize] == "samples")
            .expect("a samples sample type");
        total += p.sample.iter().map(|s| s.value[idx] as u64).sum::<u64>();
    }
    (total, files)
}

async fn grpc_client(c: &Collector) -> ProfilesServiceClient<tonic::transport::Channel> {
    ProfilesServiceClient::connect(format!("http://{}", c.grpc_addr.unwrap()))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX)
}

#[tokio::test]
async fn grpc_valid_requests_become_pprof_files() {
    let (c, dir) = start("grpc-valid").await;
    let mut client = grpc_client(&c).await;
    let req = request(120, "node-a");
    let want = common::realistic(120, 20).total_samples();
    let resp = client.export(req.clone()).await.unwrap().into_inner();
    assert_eq!(resp.partial_success, None);
    // Compressed, with the version header: accepted too.
    let mut gz = client.clone().send_compressed(CompressionEncoding::Gzip);
    let mut r = tonic::Request::new(req);
    r.metadata_mut()
        .insert(otlp::PROFILES_VERSION_HEADER, "1".parse().unwrap());
    gz.export(r).await.unwrap();

    let files = c.flush().await.unwrap();
    // One file per process (3 pids) and interval, under the host.
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|f| f.starts_with(dir.join("node-a"))));
    let (total, on_disk) = pprof_totals(&dir);
    assert_eq!(on_disk.len(), 3);
    assert_eq!(total, 2 * want);
    let s = c.stats();
    assert_eq!((s.requests, s.requests_rejected), (2, 0));
    assert_eq!(s.profiles_accepted, 6);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_protobuf_json_and_gzip_bodies_are_accepted() {
    let (c, dir) = start("http-valid").await;
    let addr = c.http_addr.unwrap();
    let req = request(60, "node-b");
    let want = common::realistic(60, 20).total_samples();
    let pb = req.encode_to_vec();
    let json = otlp::json::to_json(&req).unwrap();

    let r = http_post(addr, &[("Content-Type", "application/x-protobuf")], &pb).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let resp = otlp::ExportProfilesServiceResponse::decode(r.body.as_slice()).unwrap();
    assert_eq!(resp.partial_success, None);

    let r = http_post(
        addr,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
            (otlp::PROFILES_VERSION_HEADER, "1"),
        ],
        &gzip(&pb),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let r = http_post(
        addr,
        &[("Content-Type", "application/json; charset=utf-8")],
        json.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(String::from_utf8_lossy(&r.body), "{}");

    let r = http_post(
        addr,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(json.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    c.flush().await.unwrap();
    let (total, files) = pprof_totals(&dir);
    assert_eq!(files.len(), 3);
    assert_eq!(total, 4 * want);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn partial_success_names_the_dropped_profiles() {
    let (c, _dir) = start("partial").await;
    let mut req = request(30, "node-c");
    let d = req.dictionary.as_mut().unwrap();
    d.string_table.push("off_cpu".into());
    let off = (d.string_table.len() - 1) as i32;
    req.resource_profiles[2].scope_profiles[0].profiles[0]
        .sample_type
        .as_mut()
        .unwrap()
        .type_strindex = off;

    let resp = grpc_client(&c)
        .await
        .export(req.clone())
        .await
        .unwrap()
        .into_inner();
    let p = resp.partial_success.expect("partial success");
    assert_eq!(p.rejected_profiles, 1);
    assert!(
        p.error_message.contains("resource_profiles[2]"),
        "{}",
        p.error_message
    );
    assert!(
        p.error_message.contains("off_cpu/count is not supported"),
        "{}",
        p.error_message
    );

    let r = http_post(
        c.http_addr.unwrap(),
        &[("Content-Type", "application/json")],
        otlp::json::to_json(&req).unwrap().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedProfiles"], "1");
    let s = c.stats();
    assert_eq!((s.profiles_accepted, s.profiles_rejected), (4, 2));
    c.shutdown().await.unwrap();
}

/// A message that is not an ExportProfilesServiceRequest: field 1 with the
/// wrong wire type, field 2 random bytes.
#[derive(Clone, PartialEq, Message)]
struct Garbage {
    #[prost(fixed32, tag = "1")]
    x: u32,
    #[prost(bytes = "vec", tag = "2")]
    junk: Vec<u8>,
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn broken_index_request() -> ExportProfilesServiceRequest {
    let mut req = request(20, "node-d");
    let d = req.dictionary.as_mut().unwrap();
    let n = d.mapping_table.len();
    let i = d
        .location_table
        .iter()
        .position(|l| l.mapping_index > 0)
        .unwrap();
    d.location_table[i].mapping_index = n as i32 + 3;
    req
}

#[tokio::test]
async fn grpc_hostile_requests_are_refused_and_serving_continues() {
    let (c, _dir) = start("grpc-hostile").await;
    let mut client = grpc_client(&c).await;

    // Out-of-range index.
    let e = client.export(broken_index_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains(".mapping_index") && e.message().contains("out of range"),
        "{}",
        e.message()
    );

    // Wrong and repeated version metadata.
    for values in [&["2"][..], &["1", "1"], &["01"]] {
        let mut r = tonic::Request::new(request(2, "x"));
        for v in values {
            r.metadata_mut()
                .append(otlp::PROFILES_VERSION_HEADER, v.parse().unwrap());
        }
        let e = client.export(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{values:?}");
        assert!(
            e.message().contains(otlp::PROFILES_VERSION_HEADER),
            "{}",
            e.message()
        );
    }

    // Bytes that are not the message.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", c.grpc_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    for seed in 1..4u64 {
        let mut g = tonic::client::Grpc::new(channel.clone());
        g.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        );
        let codec =
            tonic_prost::ProstCodec::<Garbage, otlp::ExportProfilesServiceResponse>::default();
        let e = g
            .unary(
                tonic::Request::new(Garbage {
                    x: 7,
                    junk: random_bytes(4096, seed),
                }),
                path,
                codec,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }

    // Over the size limit: 40 MiB of strings.
    let mut big = request(2, "x");
    big.dictionary
        .as_mut()
        .unwrap()
        .string_table
        .push("a".repeat(40 << 20));
    let e = client.export(big.clone()).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );

    // A gzip bomb: 40 MiB of one letter compress to ~40 KiB, under the limit
    // on the wire but not decompressed.
    let mut gz = client.clone().send_compressed(CompressionEncoding::Gzip);
    let e = gz.export(big).await.unwrap_err();
    eprintln!("gzip bomb over gRPC: {e:?}");
    assert!(
        matches!(
            e.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::Internal
        ),
        "{e:?}"
    );
    assert!(
        e.message().contains("limit")
            || e.message().contains("large")
            || e.message().contains("decompress"),
        "{e:?}"
    );

    // Still serving.
    let resp = client
        .export(request(10, "node-d"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success, None);
    let s = c.stats();
    assert!(s.requests_rejected >= 4, "{s:?}");
    assert_eq!(s.profiles_accepted, 3);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_hostile_requests_are_refused_and_serving_continues() {
    let (c, dir) = start("http-hostile").await;
    let addr = c.http_addr.unwrap();
    let pbh = [("Content-Type", "application/x-protobuf")];

    // Random bytes, as protobuf and as JSON.
    for seed in 1..6u64 {
        let r = http_post(addr, &pbh, &random_bytes(10_000, seed)).await;
        assert_eq!(r.status, 400);
        let st = status_of(&r);
        assert_eq!(st.code, 3);
        assert!(
            st.message.contains("malformed protobuf")
                || st.message.contains("invalid profiles request"),
            "{}",
            st.message
        );
        let r = http_post(
            addr,
            &[("Content-Type", "application/json")],
            &random_bytes(1000, seed),
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(
            status_of(&r).message.contains("invalid OTLP/JSON"),
            "{}",
            status_of(&r).message
        );
    }

    // Out-of-range index.
    let r = http_post(addr, &pbh, &broken_index_request().encode_to_vec()).await;
    assert_eq!(r.status, 400);
    let st = status_of(&r);
    assert!(
        st.message.contains(".mapping_index") && st.message.contains("out of range"),
        "{}",
        st.message
    );

    // Version header: refused before the body is even looked at.
    for v in ["2", "1,1", ""] {
        let r = http_post(
            addr,
            &[pbh[0], (otlp::PROFILES_VERSION_HEADER, v)],
            b"not protobuf",
        )
        .await;
        assert_eq!(r.status, 400, "{v:?}");
        assert!(status_of(&r)
            .message
            .contains(otlp::PROFILES_VERSION_HEADER));
    }
    let r = http_post(
        addr,
        &[
            pbh[0],
            (otlp::PROFILES_VERSION_HEADER, "1"),
            (otlp::PROFILES_VERSION_HEADER, "1"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(status_of(&r).message.contains("exactly one value"));

    // Content type and encoding we do not speak.
    let r = http_post(addr, &[("Content-Type", "text/plain")], b"hello").await;
    assert_eq!(r.status, 415);
    let r = http_post(addr, &[pbh[0], ("Content-Encoding", "br")], b"x").await;
    assert_eq!(r.status, 415);

    // Bad gzip: garbage, and a valid stream cut short.
    let r = http_post(
        addr,
        &[pbh[0], ("Content-Encoding", "gzip")],
        b"\x1f\x8b\x08\x00garbage",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        status_of(&r).message.contains("bad gzip"),
        "{}",
        status_of(&r).message
    );
    let full = gzip(&request(10, "x").encode_to_vec());
    let r = http_post(
        addr,
        &[pbh[0], ("Content-Encoding", "gzip")],
        &full[..full.len() / 2],
    )
    .await;
    assert_eq!(r.status, 400);

    // A gzip bomb: 100 members of 1 MiB of zeros, ~100 KiB on the wire.
    let member = gzip(&vec![0u8; 1 << 20]);
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 100)
        .collect();
    assert!(bomb.len() < 1 << 20);
    let r = http_post(addr, &[pbh[0], ("Content-Encoding", "gzip")], &bomb).await;
    assert_eq!(r.status, 413);
    assert!(
        status_of(&r).message.contains("decompressed body exceeds"),
        "{}",
        status_of(&r).message
    );
    assert_eq!(status_of(&r).code, 8);

    // Chunked body with no Content-Length, over the limit: the stream cap.
    let r = chunked_upload(addr, 40 << 20).await;
    assert_eq!(r.status, 413);

    // Still serving.
    let r = http_post(addr, &pbh, &request(10, "node-e").encode_to_vec()).await;
    assert_eq!(r.status, 200);
    c.flush().await.unwrap();
    assert_eq!(pprof_totals(&dir).1.len(), 3);
    let s = c.stats();
    assert!(s.requests_rejected >= 20, "{s:?}");
    c.shutdown().await.unwrap();
}

/// Sends `total` bytes with chunked transfer encoding (no Content-Length).
async fn chunked_upload(addr: SocketAddr, total: usize) -> HttpResponse {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'z'; 1 << 20];
        let mut sent = 0;
        while sent < total {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if wr.write_all(&frame).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
        sent
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut buf)).await;
    writer.abort();
    parse_response(&buf)
}

#[tokio::test]
async fn a_100_mib_upload_is_refused_before_it_is_sent() {
    let (c, _dir) = start("huge").await;
    let addr = c.http_addr.unwrap();
    let total: usize = 100 << 20;
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {total}\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 256 << 10];
        let mut sent = 0;
        while sent < total {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
            let _ = tx.send(sent);
        }
        sent
    });
    // Read the response head as soon as it comes.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut tmp))
            .await
            .expect("a response before the upload finished")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let sent_when_answered = *rx.borrow_and_update();
    let r = parse_response(&buf);
    eprintln!("413 after {sent_when_answered} of {total} bytes sent");
    assert_eq!(r.status, 413);
    // The answer came while at most a few socket buffers' worth had gone
    // out: the collector never buffered (or even read) the 100 MiB.
    assert!(
        sent_when_answered < 16 << 20,
        "answered only after {sent_when_answered} bytes were sent"
    );
    writer.abort();
    // Still serving.
    let ok = http_post(
        addr,
        &[("Content-Type", "application/x-protobuf")],
        &request(5, "n").encode_to_vec(),
    )
    .await;
    assert_eq!(ok.status, 200);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn periodic_flush_writes_files_without_being_asked() {
    let dir = temp_dir("periodic");
    let c = Collector::start(Config {
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: None,
        output_dir: dir.clone(),
        flush_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .unwrap();
    assert!(c.http_addr.is_none());
    grpc_client(&c)
        .await
        .export(request(10, "node-p"))
        .await
        .unwrap();
    let mut files = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = pprof_totals(&dir).1;
        if files.len() == 3 {
            break;
        }
    }
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(c.stats().files_written, 3);
    // Nothing buffered: shutdown writes nothing more.
    assert!(c.shutdown().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_full_buffer_drops_profiles_as_partial_success() {
    let dir = temp_dir("full");
    let req = request(30, "node-f");
    // Room for exactly the first profile's samples (after OTLP merging).
    let first = otlp::decode(&req).unwrap()[0].1.samples.len();
    let c = Collector::start(Config {
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: None,
        output_dir: dir.clone(),
        flush_interval: Duration::from_secs(3600),
        max_buffered_samples: first,
        ..Config::default()
    })
    .await
    .unwrap();
    let mut client = grpc_client(&c).await;
    let resp = client.export(req.clone()).await.unwrap().into_inner();
    let p = resp.partial_success.expect("partial success");
    assert_eq!(p.rejected_profiles, 2, "{first}: {}", p.error_message);
    assert!(
        p.error_message.contains("collector buffer full"),
        "{}",
        p.error_message
    );
    // After a flush there is room again, for the first profile.
    assert_eq!(c.flush().await.unwrap().len(), 1);
    let resp = client.export(req).await.unwrap().into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_profiles, 2);
    assert_eq!(c.stats().profiles_accepted, 2);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_beyond_the_limit_wait() {
    let dir = temp_dir("concurrency");
    let c = Collector::start(Config {
        grpc_listen: None,
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        output_dir: dir,
        flush_interval: Duration::from_secs(3600),
        max_concurrent_requests: 1,
        ..Config::default()
    })
    .await
    .unwrap();
    let addr = c.http_addr.unwrap();
    let body = request(5, "node-g").encode_to_vec();
    // A slow client holds the only slot: headers and half its body.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A second request waits for the slot...
    let body2 = body.clone();
    let second = tokio::spawn(async move {
        http_post(addr, &[("Content-Type", "application/x-protobuf")], &body2).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "second request ran while the slot was taken"
    );
    // ...and proceeds once the first completes.
    slow.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut buf = Vec::new();
    slow.read_to_end(&mut buf).await.unwrap();
    assert_eq!(parse_response(&buf).status, 200);
    let r = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stalled_upload_times_out_and_frees_its_slot() {
    let dir = temp_dir("stalled");
    let c = Collector::start(Config {
        grpc_listen: None,
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        output_dir: dir,
        flush_interval: Duration::from_secs(3600),
        max_concurrent_requests: 1,
        request_timeout: Duration::from_millis(400),
        ..Config::default()
    })
    .await
    .unwrap();
    let addr = c.http_addr.unwrap();
    let body = request(5, "node-h").encode_to_vec();
    // Headers and half the body, then nothing.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut buf))
        .await
        .expect("the collector answers a stalled upload")
        .unwrap();
    let r = parse_response(&buf);
    assert_eq!(r.status, 408);
    assert_eq!(status_of(&r).code, 4);
    // The only slot is free again.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        http_post(addr, &[("Content-Type", "application/x-protobuf")], &body),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn run_reports_setup_errors_instead_of_serving() {
    // Output directory that cannot be created.
    let file = temp_dir("run-errors");
    std::fs::write(&file, b"a file").unwrap();
    let e = collector::run(Config {
        output_dir: file.join("sub"),
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: None,
        ..Config::default()
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("creating output directory"), "{e}");
    // A port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = collector::run(Config {
        output_dir: temp_dir("run-errors-2"),
        grpc_listen: None,
        http_listen: Some(taken.local_addr().unwrap()),
        ..Config::default()
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("binding HTTP"), "{e}");
    std::fs::remove_file(&file).unwrap();
}
