//! Shared by the fuzz targets.

/// measured-boot reads FAT with the fatfs crate and turns a panic inside it (its
/// cluster arithmetic overflows on inconsistent values) into a "malformed ESP" error
/// with `catch_unwind`. libFuzzer's panic hook would abort on those contained panics
/// too; this hook lets a panic whose location is inside fatfs unwind to that
/// `catch_unwind`, and aborts on any other, so a panic in Veil's own code, or one that
/// escapes `read_file`, is still a crash.
pub fn contain_fatfs_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_fatfs = info
                .location()
                .is_some_and(|l| l.file().contains("/fatfs-"));
            if !in_fatfs {
                default_hook(info);
                std::process::abort();
            }
        }));
    });
}
