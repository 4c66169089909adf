//! Writes the realistic test profile in every format into a directory:
//! `cargo run -p profile --example write_all -- OUT_DIR`.

use profile::{testdata, Format};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    std::fs::create_dir_all(&dir).expect("create output dir");
    let p = testdata::realistic();
    let title = profile::flamegraph::default_title(&p);
    for f in Format::ALL {
        let path = format!("{dir}/profile.{}", f.extension());
        std::fs::write(&path, f.render(&p, &title).expect("render")).expect("write");
        println!("{path}");
    }
    print!("{}", profile::format_top(&profile::top_functions(&p, 15)));
}
