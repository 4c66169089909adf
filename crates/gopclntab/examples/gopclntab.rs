//! `cargo run -p gopclntab --example gopclntab -- FILE [ADDR...]`: the
//! table's version and function count, then the frames at each address (or,
//! without addresses, every function with its pcsp ranges).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: gopclntab FILE [ADDR...]");
        return ExitCode::from(2);
    };
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tab = match gopclntab::Pclntab::parse(&data) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{}: {} functions, inline info {:?}",
        tab.version(),
        tab.len(),
        tab.inline()
    );
    let run = || -> Result<(), gopclntab::Error> {
        if args.len() > 1 {
            for a in &args[1..] {
                let pc = u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap_or(0);
                for f in tab.frames(pc)? {
                    println!(
                        "{pc:#x} {}{} {}:{}",
                        if f.inlined { "(inlined) " } else { "" },
                        f.function,
                        f.file.as_deref().unwrap_or("?"),
                        f.line.unwrap_or(0)
                    );
                }
            }
            return Ok(());
        }
        for f in tab.functions() {
            let f = f?;
            let sp: Vec<String> = tab
                .pcsp(&f)
                .map(|r| r.map(|r| format!("{:#x}:{}", r.start, r.value)))
                .collect::<Result<_, _>>()?;
            println!(
                "{:#x}..{:#x} id={} flag={} {} sp=[{}]",
                f.entry,
                f.end,
                f.func_id,
                f.flag,
                tab.name(&f)?,
                sp.join(" ")
            );
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
