//! `luks2_tamper FILE OFFSET ATTACK`: rewrites the LUKS2 header at OFFSET in FILE as a
//! malicious host would (valid checksums; see tests/support/luks2_rewrite.rs). For
//! the end-to-end tests (ci/e2e-cluster.sh); never in the image.

#[path = "../tests/support/luks2_rewrite.rs"]
mod luks2_rewrite;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, offset, attack] = args.as_slice() else {
        return Err("usage: luks2_tamper FILE OFFSET ATTACK".into());
    };
    let change =
        luks2_rewrite::attack(attack).ok_or_else(|| format!("unknown attack '{attack}'"))?;
    luks2_rewrite::rewrite(std::path::Path::new(file), offset.parse()?, change)?;
    Ok(())
}
