//! Writes small valid seed inputs into corpus/<target>/, so the fuzzer starts past the
//! CRCs and signatures: `cargo +nightly run --bin seeds`.

use measured_boot::gpt::Guid;
use measured_boot::testing::{
    build_uki, fat_image_sized, firmware_log_for, gpt_disk, sample_kernel, userspace_log_for,
};

fn main() -> std::io::Result<()> {
    let small_uki = build_uki(
        &sample_kernel(),
        &[
            (".osrel", b"ID=x\n".to_vec()),
            (".cmdline", b"roothash=00".to_vec()),
            (".initrd", vec![1; 64]),
        ],
    );
    let fat = fat_image_sized(&[("EFI/BOOT/BOOTX64.EFI", &small_uki)], 96 * 1024);
    let disk = gpt_disk(&[(&Guid::ESP.to_string(), "esp", &fat)]);
    let uki = measured_boot::Uki::parse(small_uki.clone()).map_err(std::io::Error::other)?;
    let expected = measured_boot::expected_pcrs(&uki).map_err(std::io::Error::other)?;
    for (target, name, data) in [
        ("uki", "uki.efi", small_uki.clone()),
        ("esp", "esp.fat", fat),
        ("image", "disk.raw", disk),
        ("image", "uki.efi", small_uki),
        ("eventlog", "bios.log", firmware_log_for(&expected)),
        ("eventlog", "tpm2-measure.log", userspace_log_for(&expected)),
    ] {
        let dir = format!("corpus/{target}");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(format!("{dir}/{name}"), data)?;
    }
    Ok(())
}
