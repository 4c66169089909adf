//! Ingest throughput over loopback, pinned to one CPU (clients, receivers,
//! validation, decoding and the pprof sink all share it), for a realistic
//! request: one process, 500 samples of distinct 50-frame stacks with
//! timestamps. Prints a table; runs about 2 s per row. The sink flushes
//! every second, so pprof encoding and file writes are part of the cost.
//! "CPU ms/req" (process CPU time, clients included) stays meaningful when
//! other work shares the CPU; the per-second rates do not.
//!
//! `cargo bench -p collector --bench ingest` (`-- --secs N` to change the
//! time per row).

#[path = "../../otlp/tests/common/mod.rs"]
mod common;

use collector::{Collector, Config};
use flate2::write::GzEncoder;
use flate2::Compression;
use libpf::{Frame, FrameType};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use otlp::{encode, ExportProfilesServiceRequest, ResourceInfo};
use profile::{Profile, Sample};
use prost::Message;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codec::CompressionEncoding;

fn bench_request() -> ExportProfilesServiceRequest {
    let mut samples = Vec::new();
    for i in 0..500u64 {
        let mut frames = common::app_stack(50, i % 7);
        // Distinct stacks: vary one mid-stack frame per sample.
        frames[20] = Frame::new(FrameType::NATIVE, Some(common::app_id()), 0x5_0000 + i * 16)
            .with_function(format!("handler_{i}"))
            .with_source("handlers.c", Some(i as u32 + 1));
        let mut labels = common::labels(
            4242,
            4242 + (i % 8) as u32,
            "app",
            "worker",
            (i % 16) as u32,
        );
        labels.container_id = None;
        samples.push(Sample {
            frames: frames.into(),
            labels,
            count: 1,
            timestamps_unix_ns: vec![common::START + i * 10_000_000],
        });
    }
    let p = Profile {
        start_unix_ns: common::START,
        duration_ns: 5 * common::SECOND,
        frequency_hz: 20,
        host_name: "bench-host".into(),
        samples,
        executables: common::executables(),
    };
    encode(&[p], &ResourceInfo::default())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Pins the process (and every thread created afterwards) to CPU 0.
fn pin_to_one_cpu() -> bool {
    // SAFETY: plain syscall on a zeroed, then initialized, cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPU time (user + system) of the whole process so far: with other load
/// on the machine, wall-clock rates drop but CPU per request stays honest.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A keep-alive HTTP/1.1 POST loop on one connection.
async fn http_loop(addr: SocketAddr, headers: &str, body: &[u8], secs: f64) -> (u64, Duration) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let head = format!(
        "POST /v1development/profiles HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let msg = [head.as_bytes(), body].concat();
    let mut buf = vec![0u8; 1 << 16];
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&msg).await.unwrap();
        // Read the head, then Content-Length bytes of body.
        let mut got = Vec::new();
        let (head_end, len) = loop {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "connection closed");
            got.extend_from_slice(&buf[..k]);
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..p]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                break (p + 4, len);
            }
        };
        while got.len() < head_end + len {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "connection closed");
            got.extend_from_slice(&buf[..k]);
        }
        n += 1;
    }
    (n, start.elapsed())
}

async fn grpc_loop(
    addr: SocketAddr,
    req: &ExportProfilesServiceRequest,
    gzip: bool,
    secs: f64,
) -> (u64, Duration) {
    let mut c = ProfilesServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    if gzip {
        c = c.send_compressed(CompressionEncoding::Gzip);
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_secs_f64() < secs {
        let r = c.export(req.clone()).await.unwrap().into_inner();
        assert!(r.partial_success.is_none());
        n += 1;
    }
    (n, start.elapsed())
}

fn main() {
    let secs: f64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let pinned = pin_to_one_cpu();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("collector-bench-{}", std::process::id()));
        let c = Collector::start(Config {
            grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
            http_listen: Some("127.0.0.1:0".parse().unwrap()),
            output_dir: dir.clone(),
            flush_interval: Duration::from_secs(1),
            ..Config::default()
        })
        .await
        .unwrap();
        let req = bench_request();
        let pb = req.encode_to_vec();
        let pb_gz = gzip(&pb);
        let json = otlp::json::to_json(&req).unwrap().into_bytes();
        let json_gz = gzip(&json);
        let samples: usize = req.resource_profiles.iter().flat_map(|r| &r.scope_profiles).flat_map(|s| &s.profiles).map(|p| p.samples.len()).sum();
        println!(
            "request: 1 profile, {samples} samples, 50-frame stacks; protobuf {} B, gzip {} B, JSON {} B, JSON gzip {} B; one CPU: {}",
            pb.len(),
            pb_gz.len(),
            json.len(),
            json_gz.len(),
            if pinned { "pinned to CPU 0" } else { "NOT pinned (sched_setaffinity failed)" }
        );
        println!(
            "{:<20} {:>8} {:>11} {:>11} {:>10} {:>11} {:>12} {:>14}",
            "transport", "requests", "profiles/s", "samples/s", "wire MB/s", "proto MB/s", "CPU ms/req", "profiles/CPU-s"
        );
        let rows: Vec<(&str, usize)> = vec![
            ("gRPC protobuf", pb.len()),
            ("gRPC protobuf+gzip", pb_gz.len()),
            ("HTTP protobuf", pb.len()),
            ("HTTP protobuf+gzip", pb_gz.len()),
            ("HTTP JSON", json.len()),
            ("HTTP JSON+gzip", json_gz.len()),
        ];
        for (name, wire) in rows {
            let grpc = c.grpc_addr.unwrap();
            let http = c.http_addr.unwrap();
            let cpu0 = cpu_time();
            let (n, t) = match name {
                "gRPC protobuf" => grpc_loop(grpc, &req, false, secs).await,
                "gRPC protobuf+gzip" => grpc_loop(grpc, &req, true, secs).await,
                "HTTP protobuf" => http_loop(http, "Content-Type: application/x-protobuf\r\n", &pb, secs).await,
                "HTTP protobuf+gzip" => http_loop(http, "Content-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\n", &pb_gz, secs).await,
                "HTTP JSON" => http_loop(http, "Content-Type: application/json\r\n", &json, secs).await,
                _ => http_loop(http, "Content-Type: application/json\r\nContent-Encoding: gzip\r\n", &json_gz, secs).await,
            };
            let cpu = (cpu_time() - cpu0).as_secs_f64();
            let s = t.as_secs_f64();
            println!(
                "{:<20} {:>8} {:>11.0} {:>11.0} {:>10.1} {:>11.1} {:>12.2} {:>14.0}",
                name,
                n,
                n as f64 / s,
                (n as f64 * samples as f64) / s,
                n as f64 * wire as f64 / s / 1e6,
                n as f64 * pb.len() as f64 / s / 1e6,
                cpu * 1e3 / n as f64,
                n as f64 / cpu,
            );
        }
        let st = c.stats();
        c.shutdown().await.unwrap();
        // Where the CPU goes, stage by stage, in-process (no network).
        let stage = |name: &str, f: &mut dyn FnMut()| {
            let iters = 40;
            let t0 = cpu_time();
            for _ in 0..iters {
                f();
            }
            let ms = (cpu_time() - t0).as_secs_f64() * 1e3 / iters as f64;
            println!("  {name:<44} {ms:>7.2} ms/request");
        };
        println!("in-process stages:");
        stage("protobuf decode (prost)", &mut || {
            std::hint::black_box(ExportProfilesServiceRequest::decode(pb.as_slice()).unwrap());
        });
        stage("gunzip", &mut || {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(pb_gz.as_slice()), &mut out).unwrap();
            std::hint::black_box(out);
        });
        stage("OTLP/JSON parse (prost-reflect)", &mut || {
            std::hint::black_box(otlp::json::from_json(&json).unwrap());
        });
        stage("otlp::validate", &mut || otlp::validate(&req).unwrap());
        stage("otlp::decode_lenient (validate + model)", &mut || {
            std::hint::black_box(otlp::decode_lenient(&req).unwrap());
        });
        let model = otlp::decode(&req).unwrap().remove(0).1;
        stage("profile::pprof::encode (sink, gzipped)", &mut || {
            std::hint::black_box(profile::pprof::encode(&model));
        });
        stage("otlp::encode (agent side)", &mut || {
            std::hint::black_box(encode(std::slice::from_ref(&model), &ResourceInfo::default()));
        });
        println!(
            "collector: {} requests, {} rejected, {} profiles, {} pprof files written",
            st.requests, st.requests_rejected, st.profiles_accepted, st.files_written
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
