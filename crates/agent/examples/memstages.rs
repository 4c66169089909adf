//! Prints the agent's resident memory after each start-up stage (for the
//! memory budget: where do the megabytes go?).
fn rss() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .filter(|l| {
            l.starts_with("VmRSS")
                || l.starts_with("VmHWM")
                || l.starts_with("RssAnon")
                || l.starts_with("RssFile")
                || l.starts_with("RssShmem")
        })
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}
fn main() {
    println!("start: {}", rss());
    let btf = aya::Btf::from_sys_fs().unwrap();
    println!("btf parsed: {}", rss());
    drop(btf);
    let (s, m, o) = agent::loader::Sampler::load(&agent::loader::LoadOptions::default()).unwrap();
    println!("object loaded: {}", rss());
    drop((s, m, o));
    let mut session = agent::session::Session::new(agent::session::SessionOptions {
        table_cache: None,
        target: agent::session::Target::System,
        frequency: 99,
        load: Default::default(),
    })
    .unwrap();
    println!("session (all processes scanned): {}", rss());
    session.start().unwrap();
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(3) {
        session.wait(std::time::Duration::from_millis(100));
        session.drain(|_, _| {});
    }
    println!("after 3 s of sampling: {}", rss());
    println!("footprint: {:?}", session.tracker.footprint());
}
