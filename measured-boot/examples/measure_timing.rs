//! Times measuring an image: `cargo run --release -p measured-boot --example
//! measure_timing -- IMAGE`. Prints the time to open the image and find the UKI, to
//! compute the PCRs, the total, and the peak RSS (VmHWM from /proc/self/status), as
//! `key=value` lines that ci/ can parse.

use std::time::Instant;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: measure_timing IMAGE|UKI")?;
    let start = Instant::now();
    let image = measured_boot::Image::open(&path)?;
    let opened = start.elapsed();
    let expected = measured_boot::expected_pcrs(&image.uki)?;
    let total = start.elapsed();
    println!("image={}", std::path::Path::new(&path).display());
    println!("uki_bytes={}", image.uki.bytes().len());
    println!("open_ms={:.1}", opened.as_secs_f64() * 1e3);
    println!("pcrs_ms={:.1}", (total - opened).as_secs_f64() * 1e3);
    println!("total_ms={:.1}", total.as_secs_f64() * 1e3);
    println!(
        "peak_rss_kib={}",
        peak_rss_kib().map_or_else(|| "unknown".into(), |k| k.to_string())
    );
    println!("pcr11={}", expected.pcr11);
    Ok(())
}
