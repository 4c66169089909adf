//! The transports against scripted servers (no eBPF, no root): how HTTP
//! statuses and gRPC codes become retry / refuse / deliver, the headers
//! every request carries, `Retry-After` honored by the export loop, and TLS
//! (CA, client certificate, skip-verify) through a rustls TLS-terminating
//! proxy in front of both protocols.

use agent_export::config::{AgentArgs, FileConfig, Protocol, Settings};
use agent_export::export::{run_exporter, SendResult, Transport};
use agent_export::metrics::Metrics;
use agent_export::queue::Queue;
use agent_export::retry::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus, RETRY_INFO_TYPE};
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use otlp::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small but real request body.
fn body() -> Vec<u8> {
    let req = ExportProfilesServiceRequest {
        resource_profiles: vec![Default::default()],
        dictionary: Some(Default::default()),
    };
    req.encode_to_vec()
}

fn settings(protocol: Protocol, endpoint: String, extra: impl FnOnce(&mut AgentArgs)) -> Settings {
    let mut a = AgentArgs {
        otlp_endpoint: Some(endpoint),
        otlp_protocol: Some(protocol),
        headers: vec!["X-Api=k1".into()],
        export_timeout: Some(Duration::from_secs(5)),
        ..AgentArgs::default()
    };
    extra(&mut a);
    Settings::resolve(&a, &FileConfig::default()).unwrap()
}

fn partial(rejected: i64, msg: &str) -> ExportProfilesServiceResponse {
    ExportProfilesServiceResponse {
        partial_success: Some(ExportProfilesPartialSuccess {
            rejected_profiles: rejected,
            error_message: msg.into(),
        }),
    }
}

// ---------------------------------------------------------------- HTTP fake

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);
/// A request as received: headers, body.
type Received = (HeaderMap, Vec<u8>);

#[derive(Clone, Default)]
struct HttpFake {
    /// (status, headers, body) answered in order; then 200 with no partial success.
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Received>>>,
}

async fn http_fake(fake: HttpFake) -> SocketAddr {
    use axum::routing::post;
    let f = fake.clone();
    let app = axum::Router::new().route(
        "/v1development/profiles",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let f = f.clone();
            async move {
                f.seen.lock().unwrap().push((headers, body.to_vec()));
                let (status, hdrs, body) = f.script.lock().unwrap().pop_front().unwrap_or((
                    200,
                    vec![],
                    ExportProfilesServiceResponse::default().encode_to_vec(),
                ));
                let mut resp = axum::response::Response::new(axum::body::Body::from(body));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                for (k, v) in hdrs {
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                resp
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn http_statuses_become_retry_refuse_or_delivery() {
    let fake = HttpFake::default();
    let status_body = RpcStatus {
        code: 3,
        message: "bad dictionary".into(),
        details: vec![],
    }
    .encode_to_vec();
    fake.script.lock().unwrap().extend([
        (429, vec![("retry-after", "3".to_string())], vec![]),
        (503, vec![], vec![]),
        (
            400,
            vec![("content-type", "application/x-protobuf".to_string())],
            status_body,
        ),
        (200, vec![], partial(2, "two bad").encode_to_vec()),
    ]);
    let addr = http_fake(fake.clone()).await;
    let mut t =
        Transport::new(&settings(Protocol::Http, format!("http://{addr}"), |_| {})).unwrap();
    let b = body();
    assert_eq!(
        t.send(&b).await,
        SendResult::Retry {
            after: Some(Duration::from_secs(3)),
            reason: "HTTP 429: ".into()
        }
    );
    assert!(matches!(
        t.send(&b).await,
        SendResult::Retry { after: None, .. }
    ));
    match t.send(&b).await {
        SendResult::Refused(r) => assert!(r.contains("400") && r.contains("bad dictionary"), "{r}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        t.send(&b).await,
        SendResult::Delivered {
            rejected: 2,
            message: "two bad".into()
        }
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    for (h, body) in seen.iter() {
        assert_eq!(h["otlp-profiles-development-version"], "1");
        assert_eq!(h["x-api"], "k1");
        assert_eq!(h["content-type"], "application/x-protobuf");
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(gunzip(body), b, "the body is the gzipped request");
    }
}

#[tokio::test]
async fn export_loop_waits_as_long_as_retry_after_says() {
    let fake = HttpFake::default();
    fake.script.lock().unwrap().extend([
        (503, vec![("retry-after", "1".to_string())], vec![]),
        (429, vec![("retry-after", "1".to_string())], vec![]),
    ]);
    let addr = http_fake(fake.clone()).await;
    let t = Transport::new(&settings(Protocol::Http, format!("http://{addr}"), |_| {})).unwrap();
    let q = Arc::new(Queue::new(1 << 20));
    let m = Arc::new(Metrics::default());
    let started = Instant::now();
    // Own backoff tiny: only the server's delay can explain the wait.
    let exporter = tokio::spawn(run_exporter(
        t,
        q.clone(),
        m.clone(),
        Duration::from_millis(10),
        None,
    ));
    q.push(body().into(), 5);
    while q.stats.sent.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = started.elapsed();
    q.close();
    exporter.await.unwrap();
    assert!(waited >= Duration::from_millis(1900), "waited {waited:?}");
    assert_eq!(q.stats.sent.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        m.export_failures.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(fake.seen.lock().unwrap().len(), 3);
}

/// Shutdown begins while the exporter waits out a long server delay: it
/// tries again at once instead of sleeping through the flush deadline.
#[tokio::test]
async fn shutdown_cuts_a_long_retry_wait_short() {
    let fake = HttpFake::default();
    fake.script
        .lock()
        .unwrap()
        .push_back((503, vec![("retry-after", "30".to_string())], vec![]));
    let addr = http_fake(fake.clone()).await;
    let t = Transport::new(&settings(Protocol::Http, format!("http://{addr}"), |_| {})).unwrap();
    let q = Arc::new(Queue::new(1 << 20));
    let m = Arc::new(Metrics::default());
    q.push(body().into(), 5);
    let started = Instant::now();
    let exporter = tokio::spawn(run_exporter(t, q.clone(), m, Duration::from_secs(60), None));
    while fake.seen.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.close();
    tokio::time::timeout(Duration::from_secs(5), exporter)
        .await
        .expect("the exporter ends soon after close")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(q.stats.sent.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(fake.seen.lock().unwrap().len(), 2);
}

/// A partial success is a delivery (not retried), with the rejected
/// profiles counted; a refusal drops the batch for good, counted apart
/// from queue overflow.
#[tokio::test]
async fn partial_success_and_refusal_are_counted() {
    let fake = HttpFake::default();
    fake.script.lock().unwrap().extend([
        (200, vec![], partial(3, "three bad").encode_to_vec()),
        (400, vec![], b"malformed".to_vec()),
    ]);
    let addr = http_fake(fake.clone()).await;
    let t = Transport::new(&settings(Protocol::Http, format!("http://{addr}"), |_| {})).unwrap();
    let q = Arc::new(Queue::new(1 << 20));
    let m = Arc::new(Metrics::default());
    q.push(body().into(), 4);
    q.push(body().into(), 6);
    q.close();
    run_exporter(t, q.clone(), m.clone(), Duration::from_millis(10), None).await;
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&q.stats.sent), 1);
    assert_eq!(l(&q.stats.samples_sent), 4);
    assert_eq!(l(&q.stats.rejected), 1);
    assert_eq!(l(&q.stats.dropped), 0);
    assert_eq!(l(&m.profiles_rejected), 3);
    assert_eq!(l(&m.export_failures), 1);
    assert_eq!(fake.seen.lock().unwrap().len(), 2, "nothing was retried");
}

#[tokio::test]
async fn refused_connections_are_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for p in [Protocol::Http, Protocol::Grpc] {
        let mut t =
            Transport::new(&settings(p, format!("http://127.0.0.1:{port}"), |_| {})).unwrap();
        match t.send(&body()).await {
            SendResult::Retry { after: None, .. } => {}
            other => panic!("{p:?}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- gRPC fake

#[derive(Clone, Default)]
struct GrpcFake {
    script: Arc<Mutex<VecDeque<Result<ExportProfilesServiceResponse, tonic::Status>>>>,
    seen: Arc<Mutex<Vec<(tonic::metadata::MetadataMap, ExportProfilesServiceRequest)>>>,
}

#[tonic::async_trait]
impl ProfilesService for GrpcFake {
    async fn export(
        &self,
        request: tonic::Request<ExportProfilesServiceRequest>,
    ) -> Result<tonic::Response<ExportProfilesServiceResponse>, tonic::Status> {
        let md = request.metadata().clone();
        self.seen.lock().unwrap().push((md, request.into_inner()));
        let next = self.script.lock().unwrap().pop_front();
        next.unwrap_or(Ok(ExportProfilesServiceResponse::default()))
            .map(tonic::Response::new)
    }
}

async fn grpc_fake(fake: GrpcFake) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let svc = ProfilesServiceServer::new(fake)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream_from(l))
            .await
    });
    addr
}

/// A TcpListener as the stream of connections tonic wants.
fn tokio_stream_from(
    l: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(l)
}

fn retry_info_status(code: tonic::Code, delay: Option<Duration>) -> tonic::Status {
    let details = match delay {
        Some(d) => RpcStatus {
            code: code as i32,
            message: "busy".into(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE.into(),
                value: RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: d.as_secs() as i64,
                        nanos: d.subsec_nanos() as i32,
                    }),
                }
                .encode_to_vec(),
            }],
        }
        .encode_to_vec(),
        None => Vec::new(),
    };
    tonic::Status::with_details(code, "busy", details.into())
}

#[tokio::test]
async fn grpc_codes_become_retry_refuse_or_delivery() {
    let fake = GrpcFake::default();
    fake.script.lock().unwrap().extend([
        Err(retry_info_status(
            tonic::Code::ResourceExhausted,
            Some(Duration::from_millis(2500)),
        )),
        Err(retry_info_status(tonic::Code::ResourceExhausted, None)),
        Err(retry_info_status(tonic::Code::Unavailable, None)),
        Err(tonic::Status::invalid_argument("bad dictionary")),
        Ok(partial(1, "one bad")),
    ]);
    let addr = grpc_fake(fake.clone()).await;
    let mut t =
        Transport::new(&settings(Protocol::Grpc, format!("http://{addr}"), |_| {})).unwrap();
    let b = body();
    assert!(matches!(
        t.send(&b).await,
        SendResult::Retry { after: Some(d), .. } if d == Duration::from_millis(2500)
    ));
    assert!(matches!(t.send(&b).await, SendResult::Refused(r) if r.contains("ResourceExhausted")));
    assert!(matches!(
        t.send(&b).await,
        SendResult::Retry { after: None, .. }
    ));
    assert!(matches!(t.send(&b).await, SendResult::Refused(r) if r.contains("bad dictionary")));
    assert_eq!(
        t.send(&b).await,
        SendResult::Delivered {
            rejected: 1,
            message: "one bad".into()
        }
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    for (md, req) in seen.iter() {
        assert_eq!(md.get("otlp-profiles-development-version").unwrap(), "1");
        assert_eq!(md.get("x-api").unwrap(), "k1");
        assert_eq!(md.get("grpc-encoding").unwrap(), "gzip");
        assert_eq!(req.encode_to_vec(), b);
    }
}

// ---------------------------------------------------------------- TLS

struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server: rustls::ServerConfig,
}

fn pki(name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("agent-export-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "agent-export test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["agent".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let p = Pki {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("agent.pem"),
        client_key: dir.join("agent.key"),
        server: {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
            let mut c = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![server_cert.der().clone()], key)
                .unwrap();
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            c
        },
        dir,
    };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    std::fs::write(&p.client_cert, client_cert.pem()).unwrap();
    std::fs::write(&p.client_key, client_key.serialize_pem()).unwrap();
    p
}

/// TLS (client certificate required) on a new port, plain TCP to `backend`.
async fn tls_proxy(config: rustls::ServerConfig, backend: SocketAddr) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    addr
}

fn tls_settings(p: Protocol, port: u16, pki: &Pki, f: impl FnOnce(&mut AgentArgs)) -> Settings {
    settings(p, format!("https://localhost:{port}"), |a| {
        a.tls_ca = Some(pki.ca.clone());
        a.tls_cert = Some(pki.client_cert.clone());
        a.tls_key = Some(pki.client_key.clone());
        f(a)
    })
}

async fn tls_cases(protocol: Protocol, backend: SocketAddr, pki: &Pki, seen: impl Fn() -> usize) {
    let port = tls_proxy(pki.server.clone(), backend).await.port();
    let b = body();
    // CA and client certificate: delivered.
    let mut t = Transport::new(&tls_settings(protocol, port, pki, |_| {})).unwrap();
    assert!(
        matches!(t.send(&b).await, SendResult::Delivered { .. }),
        "{protocol:?} mTLS"
    );
    assert_eq!(seen(), 1);
    // No client certificate: the server refuses the handshake; retried.
    let mut t = Transport::new(&tls_settings(protocol, port, pki, |a| {
        a.tls_cert = None;
        a.tls_key = None;
    }))
    .unwrap();
    let r = t.send(&b).await;
    assert!(
        matches!(r, SendResult::Retry { .. }),
        "{protocol:?} without client cert: {r:?}"
    );
    // Not our CA (the system roots): the server is not trusted.
    let mut t = Transport::new(&tls_settings(protocol, port, pki, |a| a.tls_ca = None)).unwrap();
    assert!(
        matches!(t.send(&b).await, SendResult::Retry { .. }),
        "{protocol:?} unknown CA"
    );
    // Skip-verify trusts it anyway.
    let mut t = Transport::new(&tls_settings(protocol, port, pki, |a| {
        a.tls_ca = None;
        a.insecure_skip_verify = Some(true);
    }))
    .unwrap();
    assert!(
        matches!(t.send(&b).await, SendResult::Delivered { .. }),
        "{protocol:?} skip-verify"
    );
    assert_eq!(
        seen(),
        2,
        "only the two trusted, authenticated requests got through"
    );
}

#[tokio::test]
async fn tls_with_ca_client_certificate_and_skip_verify_over_grpc() {
    let pki = pki("grpc");
    let fake = GrpcFake::default();
    let backend = grpc_fake(fake.clone()).await;
    tls_cases(Protocol::Grpc, backend, &pki, || {
        fake.seen.lock().unwrap().len()
    })
    .await;
    std::fs::remove_dir_all(&pki.dir).ok();
}

#[tokio::test]
async fn tls_with_ca_client_certificate_and_skip_verify_over_http() {
    let pki = pki("http");
    let fake = HttpFake::default();
    let backend = http_fake(fake.clone()).await;
    tls_cases(Protocol::Http, backend, &pki, || {
        fake.seen.lock().unwrap().len()
    })
    .await;
    std::fs::remove_dir_all(&pki.dir).ok();
}
